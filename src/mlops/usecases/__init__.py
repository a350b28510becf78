"""What a caller asks the platform to do, written once for the API, the console and the CLI.

A use case takes the settings, the caller's name and a request model (Pydantic, shared by
the API's JSON body, the console's form and the CLI's options), checks the request
completely, records it under the caller's name and starts the work. It returns a typed
record, or for long work a `Started` handle that a front end waits on or follows. Front
ends only turn their input into the request models and present what comes back; the
caller's rights and the audit trail belong here, never in a front end.

- `deployments`: deploy a version, roll back a model or what a deployment put in place.
- `evaluations`: run benchmark suites on model versions.
- `demo`: seed the demo (ingest, train every configuration, deploy the best).

Where a use case is one domain call already, the front ends make that call: building a
dataset (`features.datasets.create_dataset`), previewing or rendering a prompt
(`prompts.store.PromptStore.preview` / `render`), a feature's detail
(`features.catalog.feature_detail`), and the reads (lists, details, histories).
"""
