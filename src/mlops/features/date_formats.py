"""One date format per column: inferred from every value of the column, or given by the user.

Reading each value on its own (``pd.to_datetime(format="mixed")``) silently turns
``13/01/2026`` into 13 January and ``03/02/2026`` into 2 March in the same file. Here a
column is read with exactly one format:

- With a user's format (strftime syntax, e.g. ``%d/%m/%Y``) every value must match it.
- Without one, each candidate of ``CANDIDATE_FORMATS`` is tried on all distinct values. The
  column is read with the one that fits every value. If several fit and give different dates
  (every day is <= 12, so D/M/Y and M/D/Y both fit), the column is ambiguous and the error
  asks for the format. If none fits every value, the error names the rows that do not match
  the format most rows have.

Missing values stay missing (NaT); the not-null check of the ingest gate reports them.
Work is done on the distinct values, so a column of millions of rows costs little more than
its few thousand dates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops.errors import DataValidationError, InvalidInputError

__all__ = ["CANDIDATE_FORMATS", "ISO_8601", "DateFormat", "check_date_format", "parse_dates"]

MAX_EXAMPLES = 5
_SAMPLE_SIZE = 256
_ISO_SHAPE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:[T ].*)?")
_LABELS = {"%Y": "YYYY", "%y": "YY", "%m": "MM", "%d": "DD", "%H": "hh", "%M": "mm", "%S": "ss"}


@dataclass(frozen=True)
class DateFormat:
    """A way of writing dates: a strftime pattern, or ISO 8601 (``pattern == "ISO8601"``)."""

    pattern: str

    @property
    def label(self) -> str:
        """How a person writes it: ``DD/MM/YYYY``, ``ISO 8601 (YYYY-MM-DD[Thh:mm:ss][zone])``."""
        if self.pattern == "ISO8601":
            return "ISO 8601 (YYYY-MM-DD[Thh:mm:ss][zone])"
        label = self.pattern
        for directive, text in _LABELS.items():
            label = label.replace(directive, text)
        return label

    def parse(self, values: pd.Series) -> pd.Series:
        """Aware UTC datetimes; NaT where a value does not match the format exactly."""
        text = values.astype(str)
        if self.pattern == "ISO8601":
            text = text.where(text.str.fullmatch(_ISO_SHAPE.pattern), "")
        return pd.to_datetime(text, format=self.pattern, errors="coerce", utc=True)


ISO_8601 = DateFormat("ISO8601")


def _candidates() -> tuple[DateFormat, ...]:
    dates = ["%Y%m%d", "%Y/%m/%d", "%Y.%m.%d"]
    for sep in "/.-":
        dates += [
            f"%d{sep}%m{sep}%Y",
            f"%m{sep}%d{sep}%Y",
            f"%d{sep}%m{sep}%y",
            f"%m{sep}%d{sep}%y",
        ]
    times = ["", " %H:%M", " %H:%M:%S"]
    return (ISO_8601, *(DateFormat(d + t) for d in dates for t in times))


CANDIDATE_FORMATS: tuple[DateFormat, ...] = _candidates()
"""Tried in this order; ISO 8601 first. Day-first and month-first with '/', '.' or '-'."""


def _row_label(position: int) -> str:
    return f"row {position + 1}"


@dataclass(frozen=True)
class _Column:
    """A column as its distinct non-missing values and, per row, the index of its value."""

    name: str
    codes: np.ndarray
    values: pd.Series
    counts: np.ndarray
    describe_row: Callable[[int], str]

    @classmethod
    def of(cls, series: pd.Series, describe_row: Callable[[int], str]) -> _Column:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
        values = pd.Series(np.asarray(uniques, dtype=object), dtype=object)
        return cls(str(series.name or "date"), codes, values, counts, describe_row)

    def sample(self) -> np.ndarray:
        """Positions of up to ``_SAMPLE_SIZE`` distinct values spread over the column: formats
        that fail on one of them are not tried on every value."""
        size = min(len(self.values), _SAMPLE_SIZE)
        return np.unique(np.linspace(0, len(self.values) - 1, size).astype(int))

    def rows_with(self, value_mask: np.ndarray) -> list[int]:
        """Positions of the first rows whose value is selected by ``value_mask``."""
        hits = np.flatnonzero(value_mask[self.codes] & (self.codes >= 0))
        return [int(i) for i in hits[:MAX_EXAMPLES]]

    def example(self, position: int) -> str:
        return f"{self.describe_row(position)} {self.values[self.codes[position]]!r}"

    def expand(self, parsed: pd.Series) -> pd.Series:
        """Per-row naive UTC datetimes from the parsed distinct values (missing -> NaT)."""
        table = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        table = np.append(table, np.datetime64("NaT", "ns"))
        return pd.Series(table[self.codes], name=self.name)


def parse_dates(
    series: pd.Series,
    date_format: str | None = None,
    describe_row: Callable[[int], str] = _row_label,
) -> pd.Series:
    """Parse a text column of dates with one format for all rows; naive UTC datetimes.

    ``describe_row`` turns a row position into the words used in errors ("line 14").

    Raises:
        InvalidInputError: ``date_format`` is not a strftime pattern.
        DataValidationError: values that do not match the given or inferred format, or
            values that fit several formats with different meanings.
    """
    column = _Column.of(series, describe_row)
    if date_format is not None:
        fmt = check_date_format(date_format)
        parsed = fmt.parse(column.values)
        _require_all_match(column, fmt, parsed, given=True)
        return column.expand(parsed)
    if len(column.values) == 0:
        return column.expand(pd.Series([], dtype="datetime64[ns, UTC]"))
    sample = column.sample()
    on_sample = [(fmt, fmt.parse(column.values.iloc[sample])) for fmt in CANDIDATE_FORMATS]
    plausible = [fmt for fmt, parsed in on_sample if parsed.notna().all()]
    readings = [(fmt, fmt.parse(column.values)) for fmt in plausible]
    complete = _distinct_readings([(f, p) for f, p in readings if p.notna().all()])
    if len(complete) == 1:
        return column.expand(complete[0][1])
    if len(complete) > 1:
        raise _ambiguous(column, complete)
    weights = column.counts[sample]
    dominant, _ = max(on_sample, key=lambda item: int(weights[item[1].notna().to_numpy()].sum()))
    _require_all_match(column, dominant, dominant.parse(column.values), given=False)
    raise AssertionError("unreachable: a format matching every value is complete")


def check_date_format(date_format: str) -> DateFormat:
    """The user's strftime pattern; ``InvalidInputError`` if it is none (checked up front
    by the CLI, so a typo fails before any work starts)."""
    if "%" not in date_format:
        raise InvalidInputError(
            f"--date-format {date_format!r} has no strftime directive; e.g. '%d/%m/%Y'.",
            {"date_format": date_format},
        )
    try:
        pd.to_datetime(pd.Series(["2000-01-01"]), format=date_format, errors="coerce")
    except ValueError as exc:
        raise InvalidInputError(
            f"--date-format {date_format!r} is not a valid strftime pattern: {exc}",
            {"date_format": date_format},
        ) from exc
    return DateFormat(date_format)


def _distinct_readings(
    readings: list[tuple[DateFormat, pd.Series]],
) -> list[tuple[DateFormat, pd.Series]]:
    """Drop formats that read every value as the same date as an earlier format does."""
    distinct: list[tuple[DateFormat, pd.Series]] = []
    for fmt, parsed in readings:
        if not any(parsed.equals(other) for _, other in distinct):
            distinct.append((fmt, parsed))
    return distinct


def _require_all_match(column: _Column, fmt: DateFormat, parsed: pd.Series, *, given: bool) -> None:
    unmatched = parsed.isna().to_numpy()
    if not unmatched.any():
        return
    rows = column.rows_with(unmatched)
    count = int(column.counts[unmatched].sum())
    matched = int(column.counts.sum()) - count
    examples = ", ".join(column.example(r) for r in rows)
    noun = "row does" if count == 1 else "rows do"
    if given:
        why = f"the given --date-format {fmt.pattern!r}"
        hint = "Fix these rows or give the format they use."
    elif matched:
        why = f"{fmt.label}, the date format of the other {matched} rows"
        hint = "Write every date the same way, or pass the format with --date-format."
    else:
        why = f"any known date format ({', '.join(_short_labels())})"
        hint = "Pass the format with --date-format, e.g. --date-format '%d/%m/%Y'."
    raise DataValidationError(
        f"column '{column.name}': {count} {noun} not match {why}: {examples}. {hint}",
        {
            "column": column.name,
            "date_format": fmt.pattern if matched or given else None,
            "rows": rows,
            "unmatched_count": count,
        },
    )


def _ambiguous(
    column: _Column, readings: list[tuple[DateFormat, pd.Series]]
) -> DataValidationError:
    first, second = readings[0][1], readings[1][1]
    differs = (first != second).to_numpy()
    rows = column.rows_with(differs)
    names = " or ".join(f"{fmt.label} ({fmt.pattern!r})" for fmt, _ in readings)
    examples = ", ".join(
        f"{column.example(r)} = "
        + " or ".join(f"{p[column.codes[r]]:%Y-%m-%d}" for _, p in readings)
        for r in rows
    )
    return DataValidationError(
        f"column '{column.name}': the dates are ambiguous, every value fits {names}, "
        f"e.g. {examples}. Pass the format with --date-format, e.g. "
        f"--date-format {readings[0][0].pattern!r}.",
        {
            "column": column.name,
            "candidates": [fmt.pattern for fmt, _ in readings],
            "rows": rows,
        },
    )


def _short_labels() -> list[str]:
    seen: list[str] = []
    for fmt in CANDIDATE_FORMATS:
        label = fmt.label.split(" ")[0] if fmt.pattern != "ISO8601" else "YYYY-MM-DD"
        if label not in seen:
            seen.append(label)
    return seen
