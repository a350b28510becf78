"""Ingest gate for daily OHLCV bars: load a file, validate it with Great Expectations, report.

The flow is ``load_bars`` (read a CSV/Parquet file defensively) -> ``validate_bars`` (run an
expectation suite a quant would want on the frame) -> ``save_report`` / ``ensure_valid``
(persist a JSON report and raise ``DataValidationError`` when the batch fails).

A CSV is read by ``bars_csv`` (pyarrow, typed columns); dates are read with one format
per file (``date_formats``).

Great Expectations is imported lazily (it takes seconds to import) and one ephemeral context
is built per process and reused. Expectations whose columns are missing or of the wrong type
are not sent to GX: they are listed in ``ValidationReport.skipped`` with the reason, and a
report with skipped expectations is never successful. Expectations that raise inside GX are
reported as failures carrying the exception message.

The close-to-close move check also compares a batch with the stored bars adjacent to it
(``neighbours``, see ``close_moves``), so a one-day batch is checked against the previous
close. On a large frame GX runs on parts of it (see ``_run_suite``): the expectations and
the report are the same as on one batch, without GX copying and hashing the whole frame for
every check.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from mlops.deferred_imports import deferred
from mlops.errors import DataValidationError, InvalidInputError, NotFoundError
from mlops.features.bars_csv import (
    DATE_ALIAS,
    NUMERIC_COLUMNS,
    read_bars_csv,
    unique_names,
)
from mlops.features.close_moves import CloseMoves, close_moves
from mlops.features.date_formats import parse_dates
from mlops.features.ingest_names import REQUIRED_COLUMNS
from mlops.features.source_files import CSV_SUFFIXES, PARQUET_SUFFIXES
from mlops.fields import UtcDatetime
from mlops.names import TICKER

__all__ = [
    "REQUIRED_COLUMNS",
    "FailedExpectation",
    "ValidationReport",
    "ensure_valid",
    "failure_message",
    "load_bars",
    "normalize_bars",
    "save_report",
    "validate_bars",
]

MIN_DATE = date(1970, 1, 1)
MAX_DAILY_MOVE_FACTOR = 2.0  # close may not double or halve from one bar to the next
MAX_EXAMPLES = 5
_ONE_BATCH_ROWS = 50_000
"""Frames up to this many rows are one GX batch: its fixed cost per batch outweighs copies."""
_PASS_OR_FAIL = {"result_format": "BOOLEAN_ONLY"}
_SUMMARY = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}

_GX_NUMERIC_TYPES = [
    "int",
    "float",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
]
_RETURN_COLUMN = "__mlops_close_move_factor"
_HELPER_COLUMNS = (_RETURN_COLUMN,)


class FailedExpectation(BaseModel):
    """One expectation that did not hold, with enough context to fix the data."""

    expectation: str
    column: str | None = None
    description: str
    unexpected_count: int = 0
    unexpected_percent: float | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list)
    observed: Any = None
    error: str | None = None


class ValidationReport(BaseModel):
    """Outcome of validating one batch of bars."""

    source: str
    row_count: int
    success: bool
    evaluated: int
    failures: list[FailedExpectation] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    validated_at: UtcDatetime


# --------------------------------------------------------------------------- loading


def load_bars(path: Path, max_bytes: int, date_format: str | None = None) -> pd.DataFrame:
    """Read daily bars from ``.csv``/``.csv.gz``/``.parquet``/``.pq`` and normalize them.

    Values are kept as read: a text value in a numeric column stays text so that validation
    reports it as a type failure. The ``timestamp`` column is renamed to ``date``; text dates
    are parsed with ``date_format`` (strftime syntax) or the one format that fits all of them
    (see ``date_formats``), and made naive UTC; missing dates become NaT; tickers become
    strings. Dates already stored as timestamps (parquet) are kept; ``date_format`` is
    then not needed.

    Raises:
        NotFoundError: the file does not exist.
        InvalidInputError: unsupported suffix, not a regular file, larger than ``max_bytes``,
            or ``date_format`` is no strftime pattern.
        DataValidationError: empty, malformed, truncated or unreadable content; dates that do
            not match one format, or fit several (the error names the lines).
    """
    path = Path(path)
    kind = _file_kind(path)
    size = _checked_size(path, max_bytes)
    if size == 0:
        raise DataValidationError(f"{path.name} is empty (0 bytes)", details={"path": str(path)})
    if kind == "csv":
        frame, lines = read_bars_csv(path)
        describe_row = _csv_line(lines)
    else:
        frame, describe_row = _read_parquet(path), _parquet_row
    if frame.empty:
        raise DataValidationError(
            f"{path.name} has no data rows (header only or empty)", details={"path": str(path)}
        )
    return normalize_bars(frame, path.name, str(path), describe_row, date_format)


def normalize_bars(
    frame: pd.DataFrame,
    label: str,
    path: str,
    describe_row: Callable[[int], str],
    date_format: str | None = None,
) -> pd.DataFrame:
    """Normalize bars read from ``path`` as ``load_bars`` does; errors start with ``label``.

    ``describe_row`` names a row position in messages (``line 7``, ``AAPL.csv line 7``).
    """
    try:
        return _normalize(frame, date_format, describe_row)
    except DataValidationError as exc:
        exc.message = f"{label}: {exc.message}"
        exc.details["path"] = path
        raise


def _csv_line(lines: array[int]) -> Callable[[int], str]:
    return lambda position: f"line {lines[position]}"


def _parquet_row(position: int) -> str:
    return f"row {position + 1}"


def _file_kind(path: Path) -> str:
    if not path.exists():
        raise NotFoundError(f"bars file not found: {path}", details={"path": str(path)})
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a regular file", details={"path": str(path)})
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    supported = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
    raise InvalidInputError(
        f"unsupported file type for {path.name}: expected one of {supported}",
        details={"path": str(path)},
    )


def _checked_size(path: Path, max_bytes: int) -> int:
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidInputError(
            f"{path.name} is {size} bytes, over the limit of {max_bytes} bytes",
            details={"path": str(path), "size": size, "max_bytes": max_bytes},
        )
    return size


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataValidationError(
            f"unreadable parquet file {path.name}: {exc}", details={"path": str(path)}
        ) from exc


# --------------------------------------------------------------------------- normalizing


def _normalize(
    frame: pd.DataFrame,
    date_format: str | None = None,
    describe_row: Callable[[int], str] = _parquet_row,
) -> pd.DataFrame:
    """A new frame (sharing unchanged columns) with unique string column names, a default
    index, ``date`` parsed and ``ticker`` as text; ``frame`` itself is not modified."""
    names = unique_names([str(name) for name in frame.columns])
    if DATE_ALIAS in names and "date" not in names:
        names[names.index(DATE_ALIAS)] = "date"
    index = pd.RangeIndex(len(frame))
    columns = {name: frame.iloc[:, i].set_axis(index, copy=False) for i, name in enumerate(names)}
    if "ticker" in columns:
        columns["ticker"] = _as_text(columns["ticker"])
    if "date" in columns:
        columns["date"] = _parse_dates(columns["date"], date_format, describe_row)
    for column in NUMERIC_COLUMNS:
        if column in columns:
            columns[column] = _plain_numeric(columns[column])
    # Built once from its columns: assigning them one by one would let pandas copy the
    # numeric columns into one block, a second copy of most of the file.
    return pd.DataFrame(columns, copy=False)


def _as_text(series: pd.Series) -> pd.Series:
    """Text with None for missing values, converted column-wise (no Python call per row)."""
    missing = series.isna()
    if _all_text(series):
        return series.where(~missing, None) if missing.any() else series
    # Numbers or mixed values (rare): str() of each, the builtin rather than a Python lambda.
    return series.astype(object).map(str, na_action="ignore").where(~missing, None)


def _parse_dates(
    series: pd.Series, date_format: str | None, describe_row: Callable[[int], str]
) -> pd.Series:
    """Naive UTC datetimes: timestamps converted, text read with one format, numbers NaT."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None)
    if isinstance(series.dtype, pd.CategoricalDtype):
        return parse_dates(series, date_format, describe_row).set_axis(series.index)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return series
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series):
        return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
    text = series if _all_text(series) else series.where(series.map(_is_text_date), None)
    return parse_dates(text, date_format, describe_row).set_axis(series.index)


def _all_text(series: pd.Series) -> bool:
    """Only strings apart from missing values (checked in C, not in a Python loop)."""
    return series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) in (
        "string",
        "empty",
    )


def _plain_numeric(series: pd.Series) -> pd.Series:
    """Nullable extension dtypes (Int64, Float64) become float64, which GX type checks know."""
    dtype = series.dtype
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and _is_number_dtype(dtype):
        return series.astype("float64")
    return series


def _is_number_dtype(dtype: Any) -> bool:
    return bool(pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))


def _is_text_date(value: Any) -> bool:
    """Values worth parsing as dates; anything else (numbers, booleans) counts as missing."""
    return isinstance(value, str | date | pd.Timestamp | np.datetime64)


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _is_numeric_column(series: pd.Series) -> bool:
    """Mirror GX's type check: numeric dtype, or object values that are all numbers."""
    if series.dtype != object:
        return _is_number_dtype(series.dtype)
    values = series.dropna()
    return all(isinstance(v, int | float | np.integer | np.floating) for v in values)


# --------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class _Check:
    """One expectation of the suite plus what it needs to be meaningful."""

    key: str
    description: str
    column: str | None
    build: Callable[[Any], Any]
    requires: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    reads: tuple[str, ...] | None = None
    """The columns GX reads, when not ``requires`` (checks reading the same run together)."""


def _build_checks(today: date, columns: list[str]) -> list[_Check]:
    checks = [*_table_checks(columns), *_identity_checks(today)]
    for column in NUMERIC_COLUMNS:
        checks.extend(_numeric_checks(column))
    checks.extend(_ohlc_checks())
    checks.append(_move_check())
    return checks


def _table_checks(columns: list[str]) -> list[_Check]:
    expected = [*REQUIRED_COLUMNS, *(c for c in _HELPER_COLUMNS if c in columns)]
    return [
        _Check(
            "columns",
            f"columns are exactly {', '.join(REQUIRED_COLUMNS)}",
            None,
            lambda x: x.ExpectTableColumnsToMatchSet(column_set=expected, exact_match=True),
        ),
        _Check(
            "row_count",
            "at least one row",
            None,
            lambda x: x.ExpectTableRowCountToBeBetween(min_value=1),
        ),
    ]


def _identity_checks(today: date) -> list[_Check]:
    upper = datetime.combine(today + timedelta(days=1), time())
    lower = datetime.combine(MIN_DATE, time())
    return [
        _not_null("ticker"),
        _not_null("date"),
        _Check(
            "ticker_format",
            f"ticker is {TICKER.allowed}",
            "ticker",
            lambda x: x.ExpectColumnValuesToMatchRegex(column="ticker", regex=TICKER.regex),
            requires=("ticker",),
        ),
        _Check(
            "ticker_date_unique",
            "(ticker, date) unique",
            "ticker, date",
            lambda x: x.ExpectCompoundColumnsToBeUnique(column_list=["ticker", "date"]),
            requires=("ticker", "date"),
        ),
        _Check(
            "date_not_future",
            f"date not after {today.isoformat()}",
            "date",
            lambda x: x.ExpectColumnValuesToBeBetween(
                column="date", max_value=upper, strict_max=True
            ),
            requires=("date",),
        ),
        _Check(
            "date_not_before_1970",
            f"date on or after {MIN_DATE.isoformat()}",
            "date",
            lambda x: x.ExpectColumnValuesToBeBetween(column="date", min_value=lower),
            requires=("date",),
        ),
    ]


def _not_null(column: str) -> _Check:
    return _Check(
        f"{column}_not_null",
        f"{column} not null",
        column,
        lambda x: x.ExpectColumnValuesToNotBeNull(column=column),
        requires=(column,),
    )


def _numeric_checks(column: str) -> list[_Check]:
    strict = column != "volume"
    sign = ">" if strict else ">="
    return [
        _Check(
            f"{column}_numeric",
            f"{column} is int or float",
            column,
            lambda x: x.ExpectColumnValuesToBeInTypeList(
                column=column, type_list=_GX_NUMERIC_TYPES
            ),
            requires=(column,),
        ),
        _not_null(column),
        _Check(
            f"{column}_range",
            f"{column} {sign} 0",
            column,
            lambda x: x.ExpectColumnValuesToBeBetween(
                column=column, min_value=0, strict_min=strict
            ),
            requires=(column,),
            numeric=(column,),
        ),
    ]


def _ohlc_checks() -> list[_Check]:
    pairs = [
        ("high", "low"),
        ("high", "open"),
        ("high", "close"),
        ("open", "low"),
        ("close", "low"),
    ]
    return [_pair_check(a, b) for a, b in pairs]


def _pair_check(a: str, b: str) -> _Check:
    return _Check(
        f"{a}_ge_{b}",
        f"{a} >= {b}",
        f"{a}, {b}",
        lambda x: x.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing"
        ),
        requires=(a, b),
        numeric=(a, b),
    )


def _move_check() -> _Check:
    return _Check(
        "close_move",
        f"close-to-close move per ticker < {MAX_DAILY_MOVE_FACTOR:g}x up or down",
        "close",
        lambda x: x.ExpectColumnValuesToBeBetween(
            column=_RETURN_COLUMN, max_value=MAX_DAILY_MOVE_FACTOR, strict_max=True
        ),
        requires=("ticker", "date", "close", _RETURN_COLUMN),
        numeric=("close",),
        reads=(_RETURN_COLUMN,),
    )


def _with_helpers(
    frame: pd.DataFrame, neighbours: pd.DataFrame | None
) -> tuple[pd.DataFrame, CloseMoves | None]:
    """Add the per-ticker close-to-close move factor of every row when computable, with the
    stored ``neighbours`` as context (see ``close_moves``).

    The result shares ``frame``'s columns; text tickers become categorical, which GX hashes,
    sorts and compares per distinct ticker instead of per row.
    """
    columns = {name: frame[name] for name in frame.columns}
    if "ticker" in columns and _all_text(columns["ticker"]):
        columns["ticker"] = columns["ticker"].astype("category")
    needed = ("ticker", "date", "close")
    moves = None
    if all(c in columns for c in needed) and _is_numeric_column(columns["close"]):
        moves = close_moves(columns["ticker"], columns["date"], columns["close"], neighbours)
        columns[_RETURN_COLUMN] = pd.Series(moves.factor, index=frame.index)
    return pd.DataFrame(columns, copy=False), moves


def _skip_reason(check: _Check, frame: pd.DataFrame) -> str | None:
    inputs = [c for c in check.requires if c not in _HELPER_COLUMNS]
    missing = [c for c in inputs if c not in frame.columns]
    if missing:
        return f"column '{missing[0]}' is missing"
    for column in check.numeric:
        if not _is_numeric_column(frame[column]):
            return f"column '{column}' is not numeric"
    if any(c not in frame.columns for c in check.requires):
        return "derived values could not be computed"
    return None


# --------------------------------------------------------------------------- running GX


@dataclass
class _GxRuntime:
    gx: Any
    gxe: Any
    batch_definition: Any


GX_DEFERRED = ("scipy.stats", "altair")
"""Imported by GX only for its KL-divergence expectation (not in the suite): imported when
first used (`mlops.deferred_imports`)."""
_GX_LOCK = threading.Lock()
_GX_RUNTIME: list[_GxRuntime] = []


def _gx_runtime() -> _GxRuntime:
    """Build the ephemeral GX context once per process (call with ``_GX_LOCK`` held)."""
    if not _GX_RUNTIME:
        with deferred(*GX_DEFERRED):
            import great_expectations as gx
            import great_expectations.expectations as gxe
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints each pandas batch below this size (a hash of every row, then md5)
        # only to put the digest among the result's batch markers, which the report does not
        # use; above it GX skips it. It was half of validating 2M rows.
        pandas_execution_engine.HASH_THRESHOLD = 0
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        asset = context.data_sources.add_pandas("bars").add_dataframe_asset("batch")
        definition = asset.add_batch_definition_whole_dataframe("whole")
        _GX_RUNTIME.append(_GxRuntime(gx=gx, gxe=gxe, batch_definition=definition))
    return _GX_RUNTIME[0]


def _run_suite(frame: pd.DataFrame, checks: list[_Check]) -> dict[str, Any]:
    """Validate ``frame`` against ``checks``; return GX results keyed by check key.

    A small frame is one GX batch. On a large one, checks reading the same columns run
    together on a frame of just those columns: GX hashes every batch it is given and copies
    it for every column check (to drop that column's nulls), so a batch of the whole frame
    would cost that many copies of the file.
    """
    groups: dict[tuple[str, ...], list[_Check]] = {(): checks}
    if len(frame) > _ONE_BATCH_ROWS:
        groups = {}
        for check in checks:
            groups.setdefault(_gx_columns(check, frame), []).append(check)
    results: dict[str, Any] = {}
    with _GX_LOCK:
        runtime = _gx_runtime()
        for columns, group in groups.items():
            results.update(_validate_columns(runtime, _part(frame, columns), group))
    return results


def _part(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The frame of ``columns`` (all for ()). Several columns are copied into one block: on
    columns kept apart, every row filter GX makes merges them again, a copy each time."""
    if not columns:
        return frame
    if len(columns) == 1:
        return frame[list(columns)]
    return frame[list(columns)].copy()


def _gx_columns(check: _Check, frame: pd.DataFrame) -> tuple[str, ...]:
    """The columns GX reads for ``check``; () for table checks, which see the whole frame."""
    if check.column is None:
        return ()
    return tuple(c for c in check.reads or check.requires if c in frame.columns)


def _validate_columns(
    runtime: _GxRuntime, part: pd.DataFrame, checks: list[_Check]
) -> dict[str, Any]:
    """Checks of one ticker or date column run first on its distinct values (a few thousand
    instead of millions of rows). Each of them looks at one value at a time, so when all
    hold there they hold on every row; otherwise they run again on the whole column, for a
    report that counts and shows rows."""
    if list(part.columns) in (["ticker"], ["date"]) and len(part) > _ONE_BATCH_ROWS:
        distinct = part.drop_duplicates(ignore_index=True)
        if len(distinct) * 2 <= len(part):
            results = _validate_part(runtime, distinct, checks, _PASS_OR_FAIL)
            if len(results) == len(checks) and all(map(_passed, results.values())):
                return results
    return _validate_checks(runtime, part, checks)


def _validate_checks(
    runtime: _GxRuntime, part: pd.DataFrame, checks: list[_Check]
) -> dict[str, Any]:
    """GX's results of ``checks`` on ``part``: pass or fail first, which spares GX the
    metrics of unexpected values, then the full summary of the checks that did not pass."""
    results = _validate_part(runtime, part, checks, _PASS_OR_FAIL)
    failed = [c for c in checks if c.key not in results or not _passed(results[c.key])]
    if failed:
        results.update(_validate_part(runtime, part, failed, _SUMMARY))
    return results


def _passed(gx_result: Any) -> bool:
    return bool(gx_result.success) and _exception_message(gx_result.exception_info) is None


def _validate_part(
    runtime: _GxRuntime, frame: pd.DataFrame, checks: list[_Check], result_format: dict[str, Any]
) -> dict[str, Any]:
    suite = runtime.gx.ExpectationSuite(name="ohlcv_bars")
    for check in checks:
        expectation = check.build(runtime.gxe)
        expectation.meta = {"check": check.key}
        suite.add_expectation(expectation)
    result = _validator(runtime, frame, result_format).validate_expectation_suite(suite)
    return {str((r.expectation_config.meta or {}).get("check")): r for r in result.results}


def _validator(runtime: _GxRuntime, frame: pd.DataFrame, result_format: dict[str, Any]) -> Any:
    """A GX validator of one batch of ``frame``. ``Batch.validate`` would build the batch a
    second time, and GX hashes all the data of each batch it builds."""
    from great_expectations.validator.v1_validator import Validator

    return Validator(
        batch_definition=runtime.batch_definition,
        batch_parameters={"dataframe": frame},
        result_format=result_format,
    )


def _exception_message(info: Any) -> str | None:
    """GX reports errors flat or nested per metric; return the first message, if any."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "expectation raised an exception")
    for value in info.values():
        message = _exception_message(value)
        if message:
            return message
    return None


# --------------------------------------------------------------------------- reporting


def _json_safe(value: Any) -> Any:
    """Convert pandas/numpy values to JSON-friendly Python (ISO timestamps, NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if _is_missing(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(frozen=True)
class _Batch:
    """What failures are reported from: the caller's rows and the close moves, if computed."""

    original: pd.DataFrame
    moves: CloseMoves | None


def _examples(check: _Check, batch: _Batch, result: dict[str, Any]) -> list[dict[str, Any]]:
    positions = result.get("partial_unexpected_index_list") or []
    rows = []
    for position in positions[:MAX_EXAMPLES]:
        if isinstance(position, int | np.integer) and 0 <= position < len(batch.original):
            row = _json_safe(batch.original.iloc[int(position)].to_dict())
            if _RETURN_COLUMN in check.requires and batch.moves is not None:
                row.update(_compared_bar(batch.moves, int(position)))
            rows.append({"row": int(position), **row})
    return rows


def _compared_bar(moves: CloseMoves, position: int) -> dict[str, Any]:
    """The bar at the other end of a row's move: ``previous_date``/``previous_close``, or
    ``next_date``/``next_close`` when it is the stored bar after the batch."""
    side = "next" if moves.other_is_next[position] else "previous"
    return {
        f"{side}_date": _json_safe(pd.Timestamp(moves.other_date[position])),
        f"{side}_close": _json_safe(moves.other_close[position]),
    }


def _observed(check: _Check, result: dict[str, Any]) -> Any:
    if check.key == "columns":
        observed = [c for c in result.get("observed_value") or [] if c not in _HELPER_COLUMNS]
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        return _json_safe(
            {
                "columns": observed,
                "missing": mismatched.get("missing", []),
                "extra": [c for c in mismatched.get("unexpected", []) if c not in _HELPER_COLUMNS],
            }
        )
    if "observed_value" in result:
        return _json_safe(result["observed_value"])
    return _json_safe(result.get("partial_unexpected_list"))


def _failure(check: _Check, gx_result: Any, batch: _Batch) -> FailedExpectation | None:
    error = _exception_message(gx_result.exception_info)
    if gx_result.success and error is None:
        return None
    result = dict(gx_result.result or {})
    percent = result.get("unexpected_percent")
    return FailedExpectation(
        expectation=str(gx_result.expectation_config.type),
        column=check.column,
        description=check.description,
        unexpected_count=int(result.get("unexpected_count") or 0),
        unexpected_percent=float(percent) if percent is not None else None,
        examples=_examples(check, batch, result),
        observed=_observed(check, result),
        error=error,
    )


def _errored(check: _Check, message: str) -> FailedExpectation:
    return FailedExpectation(
        expectation=check.key, column=check.column, description=check.description, error=message
    )


def _collect_failures(
    checks: list[_Check], results: dict[str, Any], batch: _Batch
) -> list[FailedExpectation]:
    failures = []
    for check in checks:
        gx_result = results.get(check.key)
        if gx_result is None:
            failures.append(_errored(check, "Great Expectations returned no result"))
            continue
        failure = _failure(check, gx_result, batch)
        if failure is not None:
            failures.append(failure)
    return failures


def _partition(checks: list[_Check], frame: pd.DataFrame) -> tuple[list[_Check], list[str]]:
    """Split checks into those GX can run and descriptions of those it cannot, with why."""
    runnable: list[_Check] = []
    skipped: list[str] = []
    for check in checks:
        reason = _skip_reason(check, frame)
        if reason is None:
            runnable.append(check)
        else:
            skipped.append(f"{check.description} ({reason})")
    return runnable, skipped


def _evaluate(checks: list[_Check], frame: pd.DataFrame, batch: _Batch) -> list[FailedExpectation]:
    try:
        return _collect_failures(checks, _run_suite(frame, checks), batch)
    except Exception as exc:  # GX failed as a whole: every expectation counts as failed
        return [_errored(c, f"validation crashed: {exc}") for c in checks]


# --------------------------------------------------------------------------- public API


def validate_bars(
    bars: pd.DataFrame,
    source: str,
    neighbours: pd.DataFrame | None = None,
    *,
    today: date | None = None,
) -> ValidationReport:
    """Validate a frame of daily bars and return a report of the expectations that failed.

    ``neighbours`` are the stored bars adjacent to the batch, per ticker: the last one before
    its first batch date and the first one after its last (columns ticker, date, close at
    least; empty or None on a first ingest). The close-to-close move check compares the
    batch's first and last bars of each ticker with them; they are never counted or
    reported as batch rows.

    ``today`` bounds the dates (default: today's UTC date). Example rows in failures are
    taken from ``bars`` itself, by position. Frames from ``load_bars`` hold parsed dates; a
    frame with text dates has them read as ``load_bars`` does, so dates without one format
    raise ``DataValidationError`` (there is no single reading of them to validate).
    """
    today = today or datetime.now(UTC).date()
    frame, moves = _with_helpers(_normalize(bars), neighbours)
    checks = _build_checks(today, list(frame.columns))
    runnable, skipped = _partition(checks, frame)
    failures = _evaluate(runnable, frame, _Batch(original=bars, moves=moves))
    return ValidationReport(
        source=source,
        row_count=len(bars),
        success=not failures and not skipped,
        evaluated=len(runnable),
        failures=failures,
        skipped=skipped,
        validated_at=datetime.now(UTC),
    )


def save_report(report: ValidationReport, reports_dir: Path) -> Path:
    """Write the report as ``validation-<UTC timestamp>-<random>.json`` in ``reports_dir``."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = reports_dir / f"validation-{stamp}-{secrets.token_hex(4)}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    os.replace(temporary, path)
    return path


def failure_message(report: ValidationReport) -> str:
    """One-line summary: ``2 of 29 expectations failed for bars.csv: close > 0 (2 rows, e.g.
    row 7 close=-1.0), ...``."""
    parts = [_summarize(f) for f in report.failures]
    message = (
        f"{len(report.failures)} of {report.evaluated} expectations failed for {report.source}"
    )
    if parts:
        message += ": " + ", ".join(parts)
    if report.skipped:
        message += "; not checked: " + ", ".join(report.skipped)
    return message


def _summarize(failure: FailedExpectation) -> str:
    if failure.error:
        return f"{failure.description} (error: {failure.error})"
    if failure.unexpected_count:
        noun = "row" if failure.unexpected_count == 1 else "rows"
        return f"{failure.description} ({failure.unexpected_count} {noun}{_first_example(failure)})"
    observed = failure.observed
    if isinstance(observed, dict) and ("missing" in observed or "extra" in observed):
        missing = ", ".join(observed.get("missing") or []) or "none"
        extra = ", ".join(observed.get("extra") or []) or "none"
        return f"{failure.description} (missing: {missing}; extra: {extra})"
    return f"{failure.description} (observed: {observed})"


def _first_example(failure: FailedExpectation) -> str:
    """``, e.g. row 3 ticker='ZZNX\\n'``: the failing values of the first example row, quoted
    so that whitespace and control characters show."""
    if not failure.examples or not failure.column:
        return ""
    example = failure.examples[0]
    if "previous_close" in example or "next_close" in example:
        return _move_example(example)
    values = [f"{c}={example[c]!r}" for c in failure.column.split(", ") if c in example]
    return f", e.g. row {example['row']} {' '.join(values)}" if values else ""


def _move_example(example: dict[str, Any]) -> str:
    """``, e.g. row 0 ticker='AAPL' date='2024-02-12T00:00:00' close=315.0 after close=105.0
    on 2024-02-09T00:00:00 (x3.00): looks like an unadjusted split``."""
    side, relation = ("previous", "after") if "previous_close" in example else ("next", "before")
    close, other = example.get("close"), example[f"{side}_close"]
    move = ""
    if isinstance(close, int | float) and isinstance(other, int | float) and close and other:
        later, earlier = (close, other) if side == "previous" else (other, close)
        move = f" (x{later / earlier:.2f})" if later >= earlier else f" (/{earlier / later:.2f})"
    return (
        f", e.g. row {example['row']} ticker={example.get('ticker')!r} "
        f"date={example.get('date')!r} close={close!r} {relation} close={other!r} on "
        f"{example[f'{side}_date']}{move}: looks like an unadjusted split"
    )


def ensure_valid(
    bars: pd.DataFrame,
    source: str,
    reports_dir: Path,
    neighbours: pd.DataFrame | None = None,
    *,
    today: date | None = None,
) -> ValidationReport:
    """Validate (``neighbours`` as in ``validate_bars``), always save the report, and raise
    ``DataValidationError`` if the batch fails."""
    report = validate_bars(bars, source, neighbours, today=today)
    path = save_report(report, reports_dir)
    if not report.success:
        raise DataValidationError(
            failure_message(report),
            details={
                "report_path": str(path),
                "failures": [f.model_dump(mode="json") for f in report.failures],
                "skipped": list(report.skipped),
            },
        )
    return report


def run_expectations(frame: pd.DataFrame, suite_name: str, expectations: list[Any]) -> list[Any]:
    """Validate `frame` against GX expectations (built from `great_expectations.expectations`)
    on the shared ephemeral context; returns GX's result per expectation, in order."""
    with _GX_LOCK:
        runtime = _gx_runtime()
        suite = runtime.gx.ExpectationSuite(name=suite_name)
        for expectation in expectations:
            suite.add_expectation(expectation)
        validator = _validator(runtime, frame, {"result_format": "SUMMARY"})
        result = validator.validate_expectation_suite(suite)
    return list(result.results)


def prepare_validation() -> None:
    """Build the GX context now (importing GX takes seconds), e.g. while an API starts."""
    with _GX_LOCK:
        _gx_runtime()
