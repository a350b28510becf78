"""Loading a ``BarsSource``: find its files, check their headers against the column map,
read them all at once, give each row its ticker, and normalize like one file.

Every check that needs no data rows runs first, on the headers: a missing column, a map
naming a column the files lack, different headers in one batch, a ticker that no file
name gives. The error names the files and, for a missing column, what the files have and
the ``--map`` that would fix it. Nothing is written by loading, so a refused batch leaves
the stores as they were.

Many CSV files are read by ``bars_csv.read_csv_batch`` (one pyarrow parse of all bodies),
many parquet files by one pyarrow read each, concatenated as Arrow tables. Columns the map
does not name and the platform does not use (``Adj Close``) are not read; they are listed
in ``LoadedBars.ignored_columns``.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlops.errors import DataValidationError, InvalidInputError
from mlops.features.bars_csv import (
    DATE_ALIAS,
    csv_row_lines,
    first_csv_header,
    parse_csv_batch,
    read_bars_csv,
    read_csv_batch,
)
from mlops.features.ingest_names import REQUIRED_COLUMNS
from mlops.features.source_files import SUFFIXES, file_kind, listed, resolve_files
from mlops.features.sources import BarsSource, SourceLayout
from mlops.features.validation import normalize_bars
from mlops.names import TICKER

__all__ = ["ColumnPlan", "LoadedBars", "load_source", "plan_columns", "resolve_files"]

_ALIASES = {
    "ticker": ("ticker", "symbol", "sym", "code", "instrument"),
    "date": ("date", "timestamp", "datetime", "time", "day"),
    "volume": ("volume", "vol"),
}


@dataclass
class LoadedBars:
    """A batch read and normalized, with what the run reports about it."""

    frame: pd.DataFrame
    files: int
    ignored_columns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ColumnPlan:
    """How a header becomes the platform's columns: ``rename`` (file name -> platform
    name), ``keep`` (platform names to read, in file order), ``ignored`` (file names)."""

    rename: dict[str, str]
    keep: list[str]
    ignored: list[str]


# --------------------------------------------------------------------------- files


def _check_sizes(files: list[Path], max_bytes: int) -> None:
    """``ingest_max_bytes`` bounds the batch as a whole; an empty file is refused."""
    sizes = [path.stat().st_size for path in files]
    for path, size in zip(files, sizes, strict=True):
        if size == 0:
            raise DataValidationError(f"{path.name} is empty (0 bytes)", {"path": str(path)})
    total = sum(sizes)
    if total <= max_bytes:
        return
    what = files[0].name if len(files) == 1 else f"the {len(files)} files"
    raise InvalidInputError(
        f"{what} {'is' if len(files) == 1 else 'are'} {total} bytes"
        f"{'' if len(files) == 1 else ' in all'}, over the limit of {max_bytes} bytes",
        {"size": total, "max_bytes": max_bytes, "files": len(files)},
    )


# --------------------------------------------------------------------------- columns


def plan_columns(
    header: list[str],
    source: BarsSource,
    file: str,
    layouts: Mapping[str, SourceLayout] | None = None,
) -> ColumnPlan:
    """Check a header against the source's map; ``file`` names it in errors.

    Raises:
        InvalidInputError: the map names a column the header lacks; two columns would
            become one; the file has a ticker column while the ticker comes from elsewhere.
        DataValidationError: a required column is missing (the message lists the header
            and the ``--map`` that would fix it).
    """
    absent = [column for column in source.columns if column not in header]
    if absent:
        raise InvalidInputError(
            f"The column map names {_quoted(absent)}, which {file} does not have "
            f"(it has {', '.join(header)}).",
            {"file": file, "columns": header, "absent": absent},
        )
    rename = dict(source.columns)
    targets = set(rename.values())
    if "date" not in targets and "date" not in header and DATE_ALIAS in header:
        rename[DATE_ALIAS] = "date"
    names = [rename.get(column, column) for column in header]
    needed = _needed(source)
    _refuse_doubles(header, names, file)
    if "ticker" in names and "ticker" not in needed:
        raise InvalidInputError(
            f"{file} has a ticker column, and the ticker was to come from "
            f"{'--ticker' if source.ticker else 'the file name'}: drop one of the two.",
            {"file": file},
        )
    missing = [column for column in needed if column not in names]
    if missing:
        raise DataValidationError(
            _missing_message(header, names, missing, file, layouts or {}),
            {"file": file, "columns": header, "missing": missing},
        )
    keep = [name for name in names if name in needed]
    ignored = [column for column, name in zip(header, names, strict=True) if name not in needed]
    return ColumnPlan(rename=rename, keep=keep, ignored=ignored)


def _needed(source: BarsSource) -> list[str]:
    from_column = source.ticker is None and source.ticker_from == "column"
    return [c for c in REQUIRED_COLUMNS if c != "ticker" or from_column]


def _refuse_doubles(header: list[str], names: list[str], file: str) -> None:
    for name in dict.fromkeys(names):
        columns = [column for column, new in zip(header, names, strict=True) if new == name]
        if len(columns) > 1:
            raise InvalidInputError(
                f"{file}: {_quoted(columns)} would all be read as {name}; map only one "
                f"of them to {name}.",
                {"file": file, "columns": columns},
            )


def _missing_message(
    header: list[str],
    names: list[str],
    missing: list[str],
    file: str,
    layouts: Mapping[str, SourceLayout],
) -> str:
    pairs = zip(header, names, strict=True)
    free = [column for column, name in pairs if name not in REQUIRED_COLUMNS]
    fixes, ticker_hint = [], None
    for column in missing:
        candidate = next((c for c in free if _looks_like(c, column)), None)
        if candidate is not None:
            fixes.append(f"--map {_shell_word(f'{candidate}={column}')}")
        elif column == "ticker":
            ticker_hint = "give --ticker SYMBOL (one file) or --ticker-from filename"
        else:
            fixes.append(f"--map COLUMN={column}")
    hints = [f"add {' '.join(fixes)}"] if fixes else []
    hints += [ticker_hint] if ticker_hint else []
    fitting = sorted(n for n, layout in layouts.items() if set(layout.columns) <= set(header))
    if fitting:
        hints.append(f"or use --source {fitting[0]}")
    return (
        f"{file} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
        f"it has {', '.join(header)}; {'; '.join(hints)}"
    )


def _looks_like(column: str, target: str) -> bool:
    plain = re.sub(r"[^a-z0-9]", "", column.lower())
    return plain == target or plain in _ALIASES.get(target, ())


def _shell_word(text: str) -> str:
    return f'"{text}"' if re.search(r"\s", text) else text


def _quoted(columns: list[str]) -> str:
    return ", ".join(f"'{column}'" for column in columns)


# --------------------------------------------------------------------------- tickers


def file_tickers(files: list[Path], source: BarsSource) -> list[str] | None:
    """Each file's ticker, from ``--ticker`` or the file name; None if rows carry theirs.

    Raises:
        InvalidInputError: ``--ticker`` for more than one file.
        DataValidationError: a file name does not match the pattern or gives no valid
            ticker, or two files give the same ticker (each error names the files).
    """
    if source.ticker is not None and len(files) > 1:
        raise InvalidInputError(
            f"--ticker is the ticker of one file, and {listed([p.name for p in files])} are "
            f"{len(files)}: use --ticker-from filename.",
            {"files": len(files)},
        )
    if source.ticker is not None:
        return [source.ticker]
    if source.ticker_from != "filename":
        return None
    tickers = [_ticker_of(path, source.ticker_pattern) for path in files]
    seen: dict[str, Path] = {}
    for path, ticker in zip(files, tickers, strict=True):
        if ticker in seen:
            raise DataValidationError(
                f"{seen[ticker].name} and {path.name} both give the ticker {ticker}; "
                "a ticker's bars must come from one file.",
                {"files": [str(seen[ticker]), str(path)], "ticker": ticker},
            )
        seen[ticker] = path
    return tickers


def _ticker_of(path: Path, pattern: str | None) -> str:
    stem = _stem(path)
    value: str | None = stem
    if pattern is not None:
        match = re.fullmatch(pattern, stem)
        if match is None:
            value = None
        else:
            value = match.group("ticker") if "ticker" in match.re.groupindex else match.group(0)
    problem = "its name does not match the ticker pattern" if value is None else None
    problem = problem or TICKER.problem(value or "")
    if problem is not None:
        shown = "" if value is None else f" ({value!r})"
        raise DataValidationError(
            f"Cannot take a ticker from the file name {path.name}{shown}: {problem}"
            + (f" ({pattern})" if pattern and value is None else "")
            + ". Rename the file, or give --ticker-pattern.",
            {"path": str(path)},
        )
    return value or ""


def _stem(path: Path) -> str:
    name = path.name
    suffix = next(s for s in sorted(SUFFIXES, key=len, reverse=True) if name.lower().endswith(s))
    return name[: -len(suffix)]


# --------------------------------------------------------------------------- loading


def load_source(
    source: BarsSource, max_bytes: int, layouts: Mapping[str, SourceLayout] | None = None
) -> LoadedBars:
    """Read every file of ``source`` into one normalized frame of the platform's columns.

    ``layouts`` (the known ones) only serve the hint of a missing-column error.
    Raises the errors of ``resolve_files``, ``plan_columns`` and ``file_tickers``, and
    ``DataValidationError`` for unreadable files, files without data rows, and dates that
    fit no single format (the message names the file and line).
    """
    files = resolve_files(source.paths)
    _check_sizes(files, max_bytes)
    tickers = file_tickers(files, source)
    if file_kind(files[0]) == "csv":
        frame, rows, plan, describe = _read_csv(files, source, layouts)
    else:
        frame, rows, plan, describe = _read_parquet(files, source, layouts)
    empty = [path.name for path, count in zip(files, rows, strict=True) if count == 0]
    if empty:
        raise DataValidationError(
            f"{listed(empty)} {'has' if len(empty) == 1 else 'have'} no data rows (header only)",
            {"files": empty},
        )
    if tickers is not None:
        frame = _with_tickers(frame, tickers, rows)
    label = files[0].name if len(files) == 1 else f"{len(files)} files of {source.describe()}"
    path = str(files[0]) if len(files) == 1 else source.describe()
    normalized = normalize_bars(frame, label, path, describe, source.date_format)
    return LoadedBars(frame=normalized, files=len(files), ignored_columns=plan.ignored)


def _read_csv(
    files: list[Path], source: BarsSource, layouts: Mapping[str, SourceLayout] | None
) -> tuple[pd.DataFrame, list[int], ColumnPlan, _RowNames]:
    if len(files) == 1:
        plan = plan_columns(first_csv_header(files[0]), source, files[0].name, layouts)
        frame, lines = read_bars_csv(files[0], plan.rename, plan.keep)
        return frame, [len(frame)], plan, _RowNames(files, [len(frame)], lines)
    batch = read_csv_batch(files)
    _refuse_mixed_headers(files, batch.headers)
    plan = plan_columns(batch.headers[0], source, files[0].name, layouts)
    frame, rows = parse_csv_batch(batch, plan.rename, plan.keep)
    return frame, rows, plan, _RowNames(files, rows)


def _read_parquet(
    files: list[Path], source: BarsSource, layouts: Mapping[str, SourceLayout] | None
) -> tuple[pd.DataFrame, list[int], ColumnPlan, _RowNames]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    headers = [_parquet_header(path) for path in files]
    _refuse_mixed_headers(files, headers)
    plan = plan_columns(headers[0], source, files[0].name, layouts)
    columns = [c for c in headers[0] if plan.rename.get(c, c) in plan.keep]
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path, columns=columns))
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise _unreadable_parquet(path, exc) from exc
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        first = tables[0].schema
        other = next(p for p, t in zip(files, tables, strict=True) if not t.schema.equals(first))
        raise DataValidationError(
            f"{other.name} stores its columns with other types than {files[0].name}: {exc}",
            {"files": [str(files[0]), str(other)]},
        ) from exc
    table = table.rename_columns([plan.rename.get(c, c) for c in columns])
    rows = [t.num_rows for t in tables]
    return table.to_pandas(), rows, plan, _RowNames(files, rows)


def _parquet_header(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise _unreadable_parquet(path, exc) from exc


def _unreadable_parquet(path: Path, exc: Exception) -> DataValidationError:
    return DataValidationError(f"unreadable parquet file {path.name}: {exc}", {"path": str(path)})


def _refuse_mixed_headers(files: list[Path], headers: list[list[str]]) -> None:
    groups: dict[tuple[str, ...], list[str]] = {}
    for path, header in zip(files, headers, strict=True):
        groups.setdefault(tuple(header), []).append(path.name)
    if len(groups) == 1:
        return
    parts = [
        f"{listed(names)} {'has' if len(names) == 1 else 'have'} {', '.join(header) or 'none'}"
        for header, names in sorted(groups.items(), key=lambda g: -len(g[1]))
    ]
    raise DataValidationError(
        f"The files of one batch must share one header: {'; '.join(parts)}.",
        {"headers": {", ".join(h): names for h, names in groups.items()}},
    )


def _with_tickers(frame: pd.DataFrame, tickers: list[str], rows: list[int]) -> pd.DataFrame:
    """Strings, not a categorical: normalizing then keeps them as they are."""
    values = np.repeat(np.array(tickers, dtype=object), rows)
    return pd.DataFrame({"ticker": values, **{c: frame[c] for c in frame.columns}}, copy=False)


class _RowNames:
    """Names a row of the batch by file and line (``AAPL.csv line 7``) for error messages.

    A CSV's lines are found when a message needs them: the file is scanned again then, so
    a batch that loads cleanly never pays for it.
    """

    def __init__(self, files: list[Path], rows: list[int], lines: array[int] | None = None):
        self._files = files
        self._starts = np.cumsum([0, *rows])
        self._lines: dict[int, array[int]] = {} if lines is None else {0: lines}

    def __call__(self, position: int) -> str:
        index = int(np.searchsorted(self._starts, position, side="right")) - 1
        offset = position - int(self._starts[index])
        path = self._files[index]
        if file_kind(path) == "parquet":
            where = f"row {offset + 1}"
        else:
            if index not in self._lines:
                self._lines[index] = csv_row_lines(path)
            where = f"line {self._lines[index][offset]}"
        return where if len(self._files) == 1 else f"{path.name} {where}"
