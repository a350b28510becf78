"""MLOps platform for quantitative research."""

import os

__version__ = "0.1.0"


def _skip_feast_import_typechecks() -> None:
    """Make typeguard's ``@typechecked`` a no-op, as Python's ``-O`` mode does.

    Feast decorates its classes with it, and at import the decorator re-parses and
    recompiles the source of every decorated class: importing Feast took 12.3 s with it
    and 4.3 s without on the loaded 2-core test machine (3x), in every process that opens
    the feature store (each `mlops` command, the API, each flow run). The checks it adds
    only validate argument types of Feast's own calls at run time; Feast is the only
    library here that uses typeguard. ``MLOPS_FEAST_TYPECHECKS=1`` keeps them.
    """
    if os.environ.get("MLOPS_FEAST_TYPECHECKS") == "1":
        return
    try:
        import typeguard
    except ImportError:
        return

    def typechecked(target=None, **_options):  # type: ignore[no-untyped-def]
        return (lambda decorated: decorated) if target is None else target

    typeguard.typechecked = typechecked


_skip_feast_import_typechecks()
