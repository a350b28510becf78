"""Bounded field types shared by request models and API parameters.

Numbers and times that reach SQL, MLflow or pandas are bounded here, once, so an absurd
value (an offset beyond 64 bits, the year 1) is a 422 at the edge rather than an overflow
deep inside a store. Timestamps leave the platform in UTC with their offset: the stores
keep naive UTC values, and a client must not have to guess.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from annotated_types import Interval
from pydantic import AfterValidator, PlainSerializer, WithJsonSchema

MAX_COUNT = 2**31 - 1
"""Largest page, offset, version or record number accepted: fits every integer column we use."""

PageNumber = Annotated[int, Interval(ge=1, le=MAX_COUNT)]
Offset = Annotated[int, Interval(ge=0, le=MAX_COUNT)]
VersionNumber = Annotated[int, Interval(ge=1, le=MAX_COUNT)]
RecordNumber = Annotated[int, Interval(ge=1, le=MAX_COUNT)]
"""The id of a numbered record (an ingest run)."""

EARLIEST = date(1900, 1, 1)
LATEST = date(2262, 4, 11)
"""Dates the stores can hold: pandas' nanosecond timestamps end on 2262-04-11."""


def _date_in_range(value: date) -> date:
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"must be between {EARLIEST} and {LATEST}")
    return value


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


DateInRange = Annotated[date, AfterValidator(_date_in_range)]
"""A date input between EARLIEST and LATEST."""

TimeInRange = Annotated[datetime, AfterValidator(_date_in_range)]
"""A datetime input between EARLIEST and LATEST (naive values mean UTC)."""

UtcDatetime = Annotated[
    datetime,
    PlainSerializer(lambda value: as_utc(value).isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""A timestamp of a response: serialized in UTC with its offset (`+00:00`)."""
