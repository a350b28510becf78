"""Modules deferred while a library is imported load only when first used, and work then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.deferred_imports import Deferred, deferred


@pytest.fixture
def slow_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module that counts its imports in `sys.imports_of_slow_module`."""
    (tmp_path / "slow_module.py").write_text(
        "import sys\n"
        "sys.imports_of_slow_module = getattr(sys, 'imports_of_slow_module', 0) + 1\n"
        "ANSWER = 42\n"
        "def double(x):\n    return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_module", raising=False)
    yield "slow_module"
    sys.modules.pop("slow_module", None)
    if hasattr(sys, "imports_of_slow_module"):
        del sys.imports_of_slow_module


def test_a_deferred_module_is_imported_when_an_attribute_is_first_read(slow_module: str) -> None:
    with deferred(slow_module):
        import slow_module as stand_in  # what the library under import holds

    assert isinstance(stand_in, Deferred)
    assert not hasattr(sys, "imports_of_slow_module")
    assert slow_module not in sys.modules  # later imports get the real module

    assert stand_in.double(stand_in.ANSWER) == 84
    assert sys.imports_of_slow_module == 1  # type: ignore[attr-defined]
    import slow_module as real

    assert not isinstance(real, Deferred)
    assert real.ANSWER == 42
    assert sys.imports_of_slow_module == 1  # type: ignore[attr-defined]


def test_a_module_read_inside_the_block_is_imported_there(slow_module: str) -> None:
    with deferred(slow_module):
        import slow_module as stand_in

        assert stand_in.ANSWER == 42
        assert not isinstance(sys.modules[slow_module], Deferred)
    assert sys.imports_of_slow_module == 1  # type: ignore[attr-defined]


def test_a_module_imported_before_is_left_as_it_is(slow_module: str) -> None:
    import slow_module as real

    with deferred(slow_module):
        import slow_module as again
    assert again is real
    assert sys.modules[slow_module] is real


def test_the_ingest_gate_validates_without_importing_scipy_stats_or_altair() -> None:
    """Great Expectations imports both for an expectation the gate does not use; a process
    that validates a batch never loads them (they are a third of GX's import time)."""
    code = (
        "import sys\n"
        "from datetime import date\n"
        "from mlops.features.demo_data import generate_ohlcv\n"
        "from mlops.features.validation import GX_DEFERRED, validate_bars\n"
        "bars = generate_ohlcv(n_tickers=3, start=date(2024, 1, 2), end=date(2024, 2, 1))\n"
        "report = validate_bars(bars, 'demo', today=date(2024, 3, 1))\n"
        "assert report.success, report\n"
        "print(sorted(name for name in GX_DEFERRED if name in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("keep_checks", [False, True])
def test_typeguard_loads_only_when_imported_and_feasts_checks_are_off_unless_kept(
    keep_checks: bool, tmp_path: Path
) -> None:
    """`import mlops` does not import typeguard (~0.25 s); importing it later (Feast does)
    gives a no-op `@typechecked`, unless MLOPS_FEAST_TYPECHECKS=1 keeps the real one."""
    script = tmp_path / "check.py"
    script.write_text(
        "import sys\n"
        "import mlops\n"
        "assert 'typeguard' not in sys.modules\n"
        "import typeguard\n"
        "def f(x: int) -> int:\n    return x\n"
        "print(typeguard.typechecked(f) is f, typeguard.typechecked()(f) is f)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_FEAST_TYPECHECKS"}
    if keep_checks:
        env["MLOPS_FEAST_TYPECHECKS"] = "1"
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    unchanged = "False" if keep_checks else "True"  # the real decorator wraps f
    assert out.stdout.split() == [unchanged, unchanged]
