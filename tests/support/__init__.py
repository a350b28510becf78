"""What tests share besides fixtures (those stay in `tests/conftest.py`): settings on temp
folders, the ingest flow, registered models, PostgreSQL databases, the browser, the
console's sign-in, waiting for a condition, reference data, and the child scripts that
tests run as processes (`crash_child.py`, `dataset_memory_child.py`)."""
