"""Which files a source names: files as given, a directory's CSV/parquet files, a glob's
matches. Light on purpose (no pandas): `mlops ingest` resolves the files it uploads to the
API with it before anything heavy is imported."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from mlops.errors import InvalidInputError, NotFoundError

__all__ = ["CSV_SUFFIXES", "PARQUET_SUFFIXES", "SUFFIXES", "file_kind", "listed", "resolve_files"]

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES
_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_MAX_NAMED = 5


def resolve_files(paths: Sequence[str]) -> list[Path]:
    """The files of ``paths``: files as given, the CSV/parquet files of a directory (not
    its subdirectories), the files a glob matches (``**`` descends), in name order.

    Raises:
        NotFoundError: a path does not exist, a glob matches nothing, a directory has no
            CSV or parquet file.
        InvalidInputError: a file is not CSV/parquet, or CSV and parquet are mixed.
    """
    files: dict[Path, None] = {}
    for entry in paths:
        files.update(dict.fromkeys(_files_of(entry)))
    found = list(files)
    kinds = [file_kind(path) for path in found]
    if len(set(kinds)) > 1:
        csv = [p.name for p, kind in zip(found, kinds, strict=True) if kind == "csv"]
        parquet = [p.name for p, kind in zip(found, kinds, strict=True) if kind == "parquet"]
        raise InvalidInputError(
            "One batch is either CSV or parquet files, not both: "
            f"CSV {listed(csv)}; parquet {listed(parquet)}."
        )
    return found


def _files_of(entry: str) -> list[Path]:
    path = Path(entry).expanduser()
    if path.is_dir():
        with os.scandir(path) as entries:  # file types come with the listing: no stat each
            names = sorted(e.name for e in entries if e.is_file() and _supported(e.name))
        if not names:
            raise NotFoundError(
                f"{entry} holds no CSV or parquet file ({', '.join(SUFFIXES)}).",
                {"path": entry},
            )
        return [path / name for name in names]
    if path.exists() or not _GLOB_CHARACTERS.search(entry):
        _check_file(path)
        return [path]
    found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
    if not found:
        raise NotFoundError(f"{entry} matches no file.", {"path": entry})
    for match in found:
        file_kind(match)
    return found


def _supported(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise NotFoundError(f"bars file not found: {path}", details={"path": str(path)})
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a regular file", details={"path": str(path)})
    file_kind(path)


def file_kind(path: Path) -> str:
    """``csv`` or ``parquet``, from the file's suffix."""
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InvalidInputError(
        f"unsupported file type for {path.name}: expected one of {', '.join(SUFFIXES)}",
        details={"path": str(path)},
    )


def listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMED])
    return shown + (f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else "")
