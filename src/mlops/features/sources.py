"""What a batch of vendor bars is: which files, how their columns are named, where each
row's ticker comes from.

A ``BarsSource`` is built by the CLI from its arguments, or from a named layout of
``config/sources.yaml`` (``mlops ingest data/ --source yahoo``) with the arguments on top.
It is a plain Pydantic model, so the ingest flow takes it as a JSON parameter; the files
are only read by the flow's load step (``vendor_files.load_source``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlops.errors import ConfigError, InvalidInputError, NotFoundError, problems
from mlops.features.ingest_names import REQUIRED_COLUMNS
from mlops.names import Ticker
from mlops.settings import Settings

__all__ = [
    "SOURCES_FILE",
    "BarsSource",
    "SourceLayout",
    "bars_source",
    "load_layouts",
    "merge_columns",
    "parse_column_map",
]

SOURCES_FILE = "sources.yaml"
TickerFrom = Literal["column", "filename"]


class SourceLayout(BaseModel):
    """How a vendor writes its files; one entry of ``config/sources.yaml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="The file's column name -> the platform's (ticker, date, open, ...).",
    )
    ticker_from: TickerFrom = "column"
    ticker_pattern: str | None = Field(
        default=None,
        description="Regular expression matched against the whole file name without its "
        "suffix; its group 'ticker' (or the whole match) is the ticker.",
    )
    date_format: str | None = None

    @field_validator("columns")
    @classmethod
    def _known_targets(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted({t for t in columns.values() if t not in REQUIRED_COLUMNS})
        if unknown:
            raise ValueError(
                f"columns can only be mapped to {', '.join(REQUIRED_COLUMNS)}, "
                f"not {', '.join(unknown)}"
            )
        targets = list(columns.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            sources = [f"{v}={t}" for v, t in columns.items() if t in twice]
            raise ValueError(f"several columns are mapped to {', '.join(twice)}: {sources}")
        return columns

    @field_validator("ticker_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is no regular expression: {exc}") from exc
        return pattern


class BarsSource(SourceLayout):
    """A batch to ingest: files, directories or globs, read with a layout.

    ``ticker`` is the ticker of a single file without a ticker column; ``layout`` names the
    ``sources.yaml`` entry the layout came from (for the run's record).
    """

    paths: list[str] = Field(min_length=1)
    ticker: Ticker | None = None
    layout: str | None = None

    def describe(self) -> str:
        """How the ingest run records the source: ``data/yahoo (layout yahoo)``."""
        where = ", ".join(self.paths[:3])
        if len(self.paths) > 3:
            where += f" and {len(self.paths) - 3} more"
        return f"{where} (layout {self.layout})" if self.layout else where


def load_layouts(settings: Settings) -> dict[str, SourceLayout]:
    """The named layouts of ``config/sources.yaml`` (none when the file does not exist)."""
    path = settings.config_dir / SOURCES_FILE
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}", {"file": str(path)}) from exc
    entries = raw.get("sources") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: expected a mapping under 'sources'.", {"file": str(path)})
    layouts = {}
    for name, entry in entries.items():
        try:
            layouts[str(name)] = SourceLayout.model_validate(entry or {})
        except ValidationError as exc:
            raise ConfigError(
                f"{path}: {problems(exc, ('sources', str(name)), first=True)}",
                {"file": str(path)},
            ) from exc
    return layouts


def parse_column_map(items: list[str] | None) -> dict[str, str]:
    """``--map`` items, ``"Adj Close=close"``, as {file column: platform column}.

    Split at the last ``=``: the platform's names never hold one, a vendor's might.
    """
    columns: dict[str, str] = {}
    for item in items or []:
        column, sep, target = item.rpartition("=")
        if not sep or not column or not target:
            raise InvalidInputError(
                f"--map '{item}' must be FILE_COLUMN=COLUMN, e.g. --map Date=date.",
                {"map": item},
            )
        columns[column] = target.strip()
    return columns


def merge_columns(base: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The layout's map with the command line's on top: an override replaces the layout's
    entry for the same file column and the one for the same platform column, so
    ``--map "Adj Close=close"`` reads adjusted closes instead of ``Close``."""
    targets = set(overrides.values())
    kept = {c: t for c, t in base.items() if c not in overrides and t not in targets}
    return {**kept, **overrides}


def bars_source(
    settings: Settings,
    paths: list[str],
    *,
    layout: str | None = None,
    columns: Mapping[str, str] | None = None,
    ticker: str | None = None,
    ticker_from: TickerFrom | None = None,
    ticker_pattern: str | None = None,
    date_format: str | None = None,
) -> BarsSource:
    """The source the command line describes: the named layout, then each given option.

    Raises:
        NotFoundError: ``layout`` is not in ``config/sources.yaml`` (the known ones listed).
        InvalidInputError: the options contradict each other or the map is invalid.
    """
    base = _named_layout(settings, layout) if layout else SourceLayout()
    if ticker is not None and ticker_from == "filename":
        raise InvalidInputError("Give either --ticker or --ticker-from filename, not both.")
    values = base.model_dump()
    values["columns"] = merge_columns(base.columns, columns or {})
    if ticker_pattern is not None:
        values["ticker_pattern"], values["ticker_from"] = ticker_pattern, "filename"
    if ticker_from is not None:
        values["ticker_from"] = ticker_from
    if date_format is not None:
        values["date_format"] = date_format
    try:
        return BarsSource(paths=paths, ticker=ticker, layout=layout, **values)
    except ValidationError as exc:
        raise InvalidInputError(f"Invalid source: {problems(exc)}.") from exc


def _named_layout(settings: Settings, name: str) -> SourceLayout:
    layouts = load_layouts(settings)
    if name not in layouts:
        known = ", ".join(sorted(layouts)) or "none"
        raise NotFoundError(
            f"Unknown source '{name}' (known in {SOURCES_FILE}: {known}).",
            {"source": name, "known": sorted(layouts)},
        )
    return layouts[name]
