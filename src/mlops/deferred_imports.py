"""Import a library without the modules it imports only for code it may never run.

Great Expectations imports ``scipy.stats`` and ``altair`` when it is imported, for one
expectation the gate does not use (the KL divergence and its chart); they are about a third
of its import time (1.5 of 5.9 s on the 2-core test machine), paid by every process that
validates a batch. Inside ``deferred("scipy.stats", "altair")``, importing such a module
gives a stand-in; the stand-in imports the real module the first time one of its
attributes is read, so code that does use it works unchanged, and only pays then.

Once the block ends the stand-ins are out of ``sys.modules``: any later import gets the
real module. Modules already imported are left as they are.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Deferred(types.ModuleType):
    """Stands for a module until one of its attributes is read, then imports it."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:  # read inside the block: import it now
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


@contextmanager
def deferred(*names: str) -> Iterator[None]:
    """While the block runs, ``import name`` (and ``from parent import child``) of each of
    ``names`` not yet imported gives a ``Deferred`` stand-in."""
    stand_ins = {name: Deferred(name) for name in names if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
