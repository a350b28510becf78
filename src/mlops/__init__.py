"""MLOps platform for quantitative research."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

__version__ = "0.1.0"


def _typechecked(target: Any = None, **_options: Any) -> Any:
    """typeguard's ``@typechecked`` as Python's ``-O`` mode makes it: a no-op."""
    return (lambda decorated: decorated) if target is None else target


class _TypeguardWithoutImportChecks(importlib.abc.MetaPathFinder):
    """When typeguard is first imported, its ``@typechecked`` becomes a no-op.

    Feast decorates its classes with it, and at import the decorator re-parses and
    recompiles the source of every decorated class: importing Feast took 12.3 s with it
    and 4.3 s without on the loaded 2-core test machine (3x), in every process that opens
    the feature store (each `mlops` command, the API, each flow run). The checks it adds
    only validate argument types of Feast's own calls at run time; Feast is the only
    library here that uses typeguard. ``MLOPS_FEAST_TYPECHECKS=1`` keeps them.

    The patch waits for the import (typeguard itself takes ~0.25 s to import, which
    `mlops --help` and every command that never opens Feast would pay otherwise).
    """

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "typeguard":
            return None
        sys.meta_path.remove(self)  # once: the next finders locate the real module
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            run_module(module)
            module.typechecked = _typechecked  # type: ignore[attr-defined]

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _skip_feast_import_typechecks() -> None:
    if os.environ.get("MLOPS_FEAST_TYPECHECKS") == "1":
        return
    if "typeguard" in sys.modules:
        sys.modules["typeguard"].typechecked = _typechecked  # type: ignore[attr-defined]
    else:
        sys.meta_path.insert(0, _TypeguardWithoutImportChecks())


_skip_feast_import_typechecks()
