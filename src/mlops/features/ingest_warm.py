"""Imported once by the fork server of the API's ingests (`ingest_jobs`): importing this
module does what every ingest needs and takes seconds, before the children are forked.

Only imports and GX's in-memory context: no database connection, no thread, no open
file, so that a forked child shares nothing it could corrupt. The list is what a child
still imported when this module held only the flow (measured with `sys.modules`).
"""

from __future__ import annotations

import feast.repo_operations  # noqa: F401  (the apply step)
import filelock  # noqa: F401  (the store's write lock)
import flows.ingest  # noqa: F401  (Prefect, pandas, pyarrow and the ingest's steps)
import prefect.task_engine  # noqa: F401  (each step is a Prefect task)

import mlops.features.offline_store  # noqa: F401  (Feast's offline store: DuckDB, ibis)
from mlops.features.validation import prepare_validation

prepare_validation()  # GX: the largest import, and its ephemeral context
