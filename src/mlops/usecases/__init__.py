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
- `datasets`: build a point-in-time training dataset.
- `prompts`: preview an unsaved prompt template in the render sandbox.

Reads (lists, details, histories) are single domain calls that the front ends make
directly (`features.catalog.feature_detail`, `lifecycle.deployments.get_deployment`, ...).
"""
