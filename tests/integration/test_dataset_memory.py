"""A dataset is written as it is joined: building a large one leaves the process that
built it (the API's) at the memory it had before."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

from tests.support.settings import make_settings

from mlops.features import ingest, offline_changes
from mlops.features.demo_data import generate_ohlcv
from mlops.features.offline import exclusive_write

CHILD = Path(__file__).resolve().parents[1] / "support" / "dataset_memory_child.py"
TICKERS, START, END = 200, date(2021, 1, 4), date(2024, 12, 31)
"""~200k entity rows: held as a pandas frame by Feast's `to_df` (the former way), the
process kept ~60 MB more than before; streamed, a few MB."""
ALLOWED_GROWTH_MB = 25


def test_a_large_dataset_leaves_the_process_memory_near_where_it_was(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", demo_tickers=TICKERS)
    with exclusive_write(settings):
        offline_changes.full_rebuild(settings, generate_ohlcv(TICKERS, START, END, seed=5))
    ingest.apply_definitions(settings, "tester", "views")
    child = subprocess.run(
        [sys.executable, str(CHILD), str(settings.home)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    small, large = report["rows"]
    assert large >= 200_000 and small < large / 100
    assert report["after_mb"] - report["idle_mb"] < ALLOWED_GROWTH_MB, report
