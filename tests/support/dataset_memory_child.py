"""A process that builds datasets and reports its memory, for
tests/integration/test_dataset_memory.py: a small dataset first (what every later one
shares: Feast, DuckDB, the registry, warmed), then a large one. Prints one JSON line.

    python tests/support/dataset_memory_child.py <home>
"""

from __future__ import annotations

import gc
import json
import sys
import warnings
from datetime import date
from pathlib import Path

import psutil

from mlops.features.datasets import DatasetRequest, create_dataset
from mlops.settings import Settings


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main(home: Path) -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    settings = Settings(home=home, profile="local")
    first = create_dataset(settings, DatasetRequest(name="warm-up", end=date(2021, 1, 5)), "memory")
    idle = rss_mb()
    large = create_dataset(settings, DatasetRequest(name="large"), "memory")
    print(json.dumps({"idle_mb": idle, "after_mb": rss_mb(), "rows": [first.rows, large.rows]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
