"""The sandbox's property tests (`sandbox_properties.py`) run in a Python process of their
own: tracemalloc counts the allocations of every thread, and a test process that has run
flows and API apps keeps background threads (Prefect's log and event workers, uvicorn's)
that allocate while a render is measured. Run them directly with
`.venv/bin/pytest tests/unit/prompts/sandbox_properties.py`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_every_render_stays_within_its_ledger_in_a_quiet_process() -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(HERE / "sandbox_properties.py"),
        ],
        cwd=HERE.parents[2],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert child.returncode == 0, child.stdout[-8000:] + child.stderr[-2000:]
    passed = re.search(r"(\d+) passed", child.stdout)
    assert passed and int(passed.group(1)) >= 100, child.stdout[-2000:]  # every filter ran
