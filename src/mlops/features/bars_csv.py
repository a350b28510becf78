"""Reading a CSV of daily bars: its structure checked row by row, its values parsed by
pyarrow with the column types of valid bars.

Prices are read as float64 and volume as int64 straight from the text, tickers and dates
dictionary-encoded, so the file never becomes a column of Python strings per value (what
``pandas.read_csv(dtype=str)`` made: about 8x the file in memory). A file whose numeric
columns hold text is read again with every column as text, and those columns keep their
text values for the type checks of the ingest gate to report.

Many files of one header (a vendor's file per ticker) are read by ``read_csv_batch``: their
bodies are joined into one text and parsed by pyarrow at once, since a pyarrow call per
file costs more than the parse of a small file.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from mlops.errors import DataValidationError

__all__ = [
    "DATE_ALIAS",
    "NUMERIC_COLUMNS",
    "NUMERIC_NA_TOKENS",
    "PRICE_COLUMNS",
    "CsvBatch",
    "csv_header",
    "csv_row_lines",
    "first_csv_header",
    "parse_csv_batch",
    "read_bars_csv",
    "read_csv_batch",
    "unique_names",
]

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
NUMERIC_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
DATE_ALIAS = "timestamp"
NUMERIC_NA_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "NAN", "null", "NULL", "None"})
_LINE_RE = re.compile(r"\b(?:line|row) (\d+)")


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def read_bars_csv(
    path: Path, rename: Mapping[str, str] | None = None, keep: Sequence[str] | None = None
) -> tuple[pd.DataFrame, array[int]]:
    """Check the CSV structure row by row, then let pyarrow parse it.

    ``rename`` gives columns of the header new names (a vendor's ``Date`` read as ``date``);
    ``keep`` (names after renaming) is the columns to read, by default all of them.
    Returns the frame and the file line of each of its rows (for error messages).
    """
    import pyarrow as pa

    try:
        header, lines = _check_csv_structure(path)
        if not header:
            raise DataValidationError(
                f"{path.name} is empty (no header)", details={"path": str(path)}
            )
        names = [(rename or {}).get(name, name) for name in unique_names(header)]
        frame = _arrow_frame(path, names, keep)
    except UnicodeDecodeError as exc:
        raise _malformed(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except pa.ArrowInvalid as exc:
        raise _malformed(path, _line_from(str(exc)), str(exc)) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise _malformed(path, None, f"unreadable: {exc}") from exc
    return frame, lines


def _check_csv_structure(path: Path) -> tuple[list[str], array[int]]:
    """Raise on rows whose field count differs from the header, bad quoting or NUL bytes.

    Returns the header and, per data row, the line it ends on (blank lines are skipped,
    as pyarrow skips them).
    """
    lines = array("I")
    with _open_text(path) as handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = _first_record(reader)
            for record in reader:
                if not record:
                    continue
                if len(record) != len(header):
                    detail = f"expected {len(header)} fields, saw {len(record)}"
                    raise _malformed(path, reader.line_num, detail)
                lines.append(reader.line_num)
        except csv.Error as exc:
            raise _malformed(path, reader.line_num, str(exc)) from exc
    return header, lines


def _first_record(reader: Iterator[list[str]]) -> list[str]:
    for record in reader:
        if record:
            return record
    return []


def csv_row_lines(path: Path) -> array[int]:
    """The file line of each data row of a CSV file (blank lines skipped, as pyarrow does)."""
    return _check_csv_structure(path)[1]


def first_csv_header(path: Path) -> list[str]:
    """The header of one CSV file, read without reading the rest of the file."""
    try:
        with _open_text(path) as handle:
            header = _first_record(csv.reader(handle, strict=True))
    except UnicodeDecodeError as exc:
        raise _malformed(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise _malformed(path, 1, str(exc)) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise _malformed(path, None, f"unreadable: {exc}") from exc
    if not header:
        raise DataValidationError(f"{path.name} is empty (no header)", details={"path": str(path)})
    return unique_names(header)


def csv_header(line: bytes) -> list[str]:
    """The column names of a header line (quoted names such as ``"Adj Close"`` unquoted)."""
    text = line.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    return unique_names(next(csv.reader([text]), []))


@dataclass
class CsvBatch:
    """The bodies of many CSV files joined into one text, each file's header kept apart.

    ``rows`` counts each file's data rows by its line ends, which is exact when ``plain``:
    no blank lines and no bare carriage returns (which pyarrow would skip or take as line
    ends). Quoted line breaks are refused by pyarrow, so they never miscount silently.
    """

    paths: list[Path]
    headers: list[list[str]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    plain: bool = True


def read_csv_batch(paths: Sequence[Path]) -> CsvBatch:
    """Read the files' bytes once: headers parsed, bodies appended to one text."""
    batch = CsvBatch(paths=list(paths))
    for path in batch.paths:
        data = _file_bytes(path)
        head, _, body = data.partition(b"\n")
        if body and not body.endswith(b"\n"):
            body += b"\n"
        try:
            batch.headers.append(csv_header(head))
        except UnicodeDecodeError as exc:
            raise _malformed(path, 1, f"not UTF-8 text ({exc.reason})") from exc
        batch.rows.append(body.count(b"\n"))
        batch.plain = batch.plain and _plain_lines(body)
        batch.text += body
    return batch


def _file_bytes(path: Path) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.decompress(path.read_bytes())
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise _malformed(path, None, f"unreadable: {exc}") from exc


def _plain_lines(body: bytes) -> bool:
    """No blank line and no bare carriage return (``in`` tests stop early; most bodies
    have no ``\\r`` at all)."""
    if body.startswith((b"\n", b"\r\n")) or b"\n\n" in body or b"\n\r\n" in body:
        return False
    return b"\r" not in body or body.count(b"\r") == body.count(b"\r\n")


def parse_csv_batch(
    batch: CsvBatch, rename: Mapping[str, str], keep: Sequence[str]
) -> tuple[pd.DataFrame, list[int]]:
    """Parse the joined bodies with pyarrow at once; returns the frame and rows per file.

    Files whose rows cannot be counted from their line ends, or a text pyarrow refuses, are
    read again one by one with ``read_bars_csv``: the structure check then names the file
    and line of the problem, and blank lines are counted exactly.
    """
    import pyarrow as pa

    if batch.plain:
        names = [rename.get(name, name) for name in batch.headers[0]]
        try:
            frame = _arrow_frame(batch.text, names, keep)
        except (pa.ArrowInvalid, UnicodeDecodeError):
            frame = None
        if frame is not None and len(frame) == sum(batch.rows):
            return frame, batch.rows
    frames = [read_bars_csv(path, rename, keep)[0] for path in batch.paths]
    return pd.concat(frames, ignore_index=True), [len(frame) for frame in frames]


def _arrow_frame(
    source: Path | bytearray, names: list[str], keep: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read with the column types of valid bars; if a value does not fit, read all as text.

    The typed read keeps the peak memory near the size of the result: prices as float64,
    volume as int64, tickers and dates dictionary-encoded (a file has few distinct ones).
    The text read is the fallback for bad data, whose text values validation reports.
    """
    import pyarrow as pa

    try:
        columns = _TableColumns(_arrow_csv(source, names, keep, typed=True))
    except pa.ArrowInvalid as exc:
        if "CSV conversion error" not in str(exc):
            raise
        return _text_frame(_TableColumns(_arrow_csv(source, names, keep, typed=False)))
    return _typed_frame(columns)


def _arrow_csv(
    source: Path | bytearray, names: list[str], keep: Sequence[str] | None, *, typed: bool
) -> Any:
    """Parse a file (header skipped) or the joined bodies of a ``CsvBatch`` (no header)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    types: dict[str, Any] = {name: pa.string() for name in names}
    if typed:
        text = pa.dictionary(pa.int32(), pa.string())
        types.update({"ticker": text, "date": text, DATE_ALIAS: text, "volume": pa.int64()})
        types.update({name: pa.float64() for name in PRICE_COLUMNS})
    options = pa_csv.ConvertOptions(
        column_types={name: types[name] for name in names},
        # Typed: the numeric NA tokens are missing numbers, text keeps "" (made None later).
        # Text: only "" is missing; the numeric columns drop their NA tokens afterwards.
        null_values=sorted(NUMERIC_NA_TOKENS) if typed else [""],
        strings_can_be_null=not typed,
        include_columns=list(keep) if keep is not None else None,
    )
    if isinstance(source, bytearray):
        stream, skip_rows = pa.input_stream(pa.py_buffer(source)), 0
    else:
        compression = "gzip" if source.name.lower().endswith(".gz") else None
        stream, skip_rows = pa.input_stream(str(source), compression=compression), 1
    with stream:
        return pa_csv.read_csv(
            stream,
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=skip_rows),
            convert_options=options,
            # malloc gives freed buffers back for pandas to reuse; Arrow's default pool
            # (mimalloc) would keep them for Arrow.
            memory_pool=pa.system_memory_pool(),
        )


class _TableColumns:
    """An Arrow table handed out one column at a time and forgotten column by column, so
    that the Arrow and the pandas copies of the file never both exist whole."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        while self._table.num_columns:
            name, column = self._table.column_names[0], self._table.column(0)
            self._table = self._table.remove_column(0)
            yield name, column


def _typed_frame(table: _TableColumns) -> pd.DataFrame:
    import pyarrow as pa

    columns = {}
    for name, column in table:
        if pa.types.is_dictionary(column.type):
            values = column.to_pandas()
            if "" in values.cat.categories:
                values = values.cat.remove_categories("")
            # Dates stay categorical (parsed once per distinct value); tickers become text.
            columns[name] = values if name in ("date", DATE_ALIAS) else values.astype(object)
        else:
            columns[name] = _empty_as_none(column.to_pandas())
    return pd.DataFrame(columns, copy=False)


def _empty_as_none(series: pd.Series) -> pd.Series:
    if series.dtype != object:
        return series
    return series.where(series != "", None)


def _text_frame(table: _TableColumns) -> pd.DataFrame:
    """Numeric columns as numbers when every value is one (else text); the rest as text."""
    columns = {}
    for name, column in table:
        columns[name] = _arrow_numbers(column) if name in NUMERIC_COLUMNS else column.to_pandas()
    return pd.DataFrame(columns, copy=False)


def _arrow_numbers(column: Any) -> pd.Series:
    """int64 or float64 parsed by Arrow; a column with any non-number keeps its text values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = pc.is_in(column, value_set=pa.array(sorted(NUMERIC_NA_TOKENS)))
    column = pc.if_else(missing, pa.scalar(None, pa.string()), column)
    for target in (pa.int64(), pa.float64()):
        try:
            return pd.Series(pc.cast(column, target).to_pandas())
        except pa.ArrowInvalid:
            continue
    return _numbers_or_text(pd.Series(column.to_pandas()))


def _line_from(message: str) -> int | None:
    match = _LINE_RE.search(message)
    return int(match.group(1)) if match else None


def _malformed(path: Path, line: int | None, detail: str) -> DataValidationError:
    where = f" at line {line}" if line is not None else ""
    return DataValidationError(
        f"malformed CSV {path.name}{where}: {detail}",
        details={"path": str(path), "line": line},
    )


def _numbers_or_text(raw: pd.Series) -> pd.Series:
    text = raw.where(~raw.isin(NUMERIC_NA_TOKENS), None)
    parsed = pd.to_numeric(text, errors="coerce")
    not_numbers = parsed.isna() & text.notna()
    if not not_numbers.any():
        return parsed
    mixed = parsed.astype(object).where(~not_numbers, text)
    return mixed.where(mixed.notna(), None)


def unique_names(names: list[str]) -> list[str]:
    """Repeated column names get ``.1``, ``.2``... as pandas names them."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        result.append(name if count == 0 else f"{name}.{count}")
    return result
