"""Imported once by the fork server of the API's ingests (`ingest_jobs`): importing this
module does what every ingest needs and takes seconds, before the children are forked.

Only imports and GX's in-memory context: no database connection, no thread, no open
file, so that a forked child shares nothing it could corrupt.
"""

from __future__ import annotations

import feast  # noqa: F401  (the apply and materialize steps)
import flows.ingest  # noqa: F401  (Prefect, pandas, pyarrow and the ingest's steps)

from mlops.features.validation import prepare_validation

prepare_validation()  # GX: the largest import, and its ephemeral context
