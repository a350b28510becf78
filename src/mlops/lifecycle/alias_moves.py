"""A counter per registered model that the platform bumps each time it moves one of the
model's aliases (`promotion.py`), in the platform's own database.

Serving processes read it on every request, one indexed row, and ask MLflow for an
alias's version only when it changed: far cheaper than an MLflow query per request, and a
move made by another process (the CLI, the deploy flow, a rollback) is seen by the next
request. Moves made outside the platform do not bump it; `serving.py` bounds how long
they can go unseen.
"""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from mlops.db import AliasMoves, engine_for, utcnow
from mlops.settings import Settings

_TABLE = AliasMoves.__table__
_MOVES_OF = select(_TABLE.c.moves).where(_TABLE.c.model_name == bindparam("name"))
"""Built once, on the table rather than the ORM class: read on every prediction, the ORM
statement cost four times the query itself."""


def moves(settings: Settings, name: str) -> int:
    """How often the platform has moved an alias of `name` (0 if never)."""
    with engine_for(settings.metadata_url).connect() as connection:
        return connection.scalar(_MOVES_OF, {"name": name}) or 0


def record_move(settings: Settings, name: str) -> None:
    """Count one alias move of `name`; call it after the alias has moved in MLflow.

    The increment is one UPDATE, so moves by several processes at once are all counted;
    the first move of a model inserts its row, and an insert that meets another
    process's row becomes the increment."""
    bump = (
        update(AliasMoves)
        .where(AliasMoves.model_name == name)
        .values(moves=AliasMoves.moves + 1, moved_at=utcnow())
    )
    engine = engine_for(settings.metadata_url)
    try:
        with engine.begin() as connection:
            if connection.execute(bump).rowcount == 0:
                connection.execute(
                    insert(AliasMoves).values(model_name=name, moves=1, moved_at=utcnow())
                )
    except IntegrityError:  # another process inserted the first row meanwhile
        with engine.begin() as connection:
            connection.execute(bump)
