"""Benchmark suites: YAML files in `config/suites/`, validated with Pydantic.

A suite names the data it runs on (the offline store or a stored dataset, a time range,
tickers) and a list of tests. Each test kind is a Pydantic model; `kind` selects it:

- `metric`: a metric compared with a threshold;
- `slice`: the same on every slice (ticker, volatility regime); all slices must pass;
- `baseline`: no worse than the production version (or a named one) by more than a margin;
- `robustness`: the metric drop under feature noise or a missing feature stays within a bound;
- `calibration`: expected calibration error under a bound;
- `drift`: population stability index between training and evaluation features under a bound;
- `latency`: p95 prediction latency of a batch under a bound.

An invalid file is reported with its path, the line and the field.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlops.errors import InvalidInputError, NotFoundError
from mlops.lifecycle.gates import Operator
from mlops.settings import Settings

SUITES_DIR = "suites"
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
REGRESSION_METRICS = ("mae", "rmse", "r2")
EVAL_METRICS = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
Metric = Literal[
    "accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "mae", "rmse", "r2"
]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class SuiteError(InvalidInputError):
    """A suite file is invalid (its path, line and field are in the details)."""

    code = "invalid_suite"


METRIC_RANGES: dict[str, tuple[float, float]] = {
    **{m: (0.0, 1.0) for m in ("accuracy", "precision", "recall", "f1", "roc_auc", "brier")},
    "log_loss": (0.0, math.inf),
    "mae": (0.0, math.inf),
    "rmse": (0.0, math.inf),
    "r2": (-math.inf, 1.0),
}
"""The values a metric can take: a threshold outside them could never or always pass."""


class _Test(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""


class _Threshold(_Test):
    metric: Metric
    op: Operator
    threshold: float

    @field_validator("threshold")
    @classmethod
    def _in_range(cls, value: float, info: ValidationInfo) -> float:
        metric = info.data.get("metric")
        low, high = METRIC_RANGES.get(metric or "", (-math.inf, math.inf))
        if not low <= value <= high:
            raise ValueError(f"threshold {value} is outside the range of {metric} [{low}, {high}]")
        return value


class MetricTest(_Threshold):
    kind: Literal["metric"]


class SliceTest(_Threshold):
    kind: Literal["slice"]
    by: Literal["ticker", "volatility_regime"] = "ticker"
    regime_feature: str = Field(
        default="vol_20d", description="Feature whose terciles define the volatility regimes."
    )
    min_rows: int = Field(default=30, ge=2, description="Smaller slices are reported, not judged.")


class BaselineTest(_Test):
    kind: Literal["baseline"]
    metric: Metric
    against: str = Field(
        default="production", description="'production', 'staging' or a version number."
    )
    margin: float = Field(default=0.0, ge=0.0, description="Allowed regression versus it.")


class RobustnessTest(_Test):
    kind: Literal["robustness"]
    metric: Metric
    perturbation: Literal["noise", "missing"]
    features: list[str] = Field(default_factory=list, description="Empty: every model input.")
    noise_scale: float = Field(
        default=0.1, gt=0.0, le=10.0, description="Noise std as a fraction of each feature's std."
    )
    max_drop: float = Field(ge=0.0, description="Allowed metric degradation.")
    seed: int = 0


class CalibrationTest(_Test):
    kind: Literal["calibration"]
    max_ece: float = Field(gt=0.0, le=1.0)
    bins: int = Field(default=10, ge=2, le=100)


class DriftTest(_Test):
    kind: Literal["drift"]
    max_psi: float = Field(gt=0.0)
    features: list[str] = Field(default_factory=list, description="Empty: every model input.")
    bins: int = Field(default=10, ge=2, le=50)


class LatencyTest(_Test):
    kind: Literal["latency"]
    batch_size: int = Field(default=100, ge=1, le=100_000)
    repeats: int = Field(default=20, ge=3, le=1000)
    max_p95_ms: float = Field(gt=0.0)


SuiteTest = Annotated[
    MetricTest
    | SliceTest
    | BaselineTest
    | RobustnessTest
    | CalibrationTest
    | DriftTest
    | LatencyTest,
    Field(discriminator="kind"),
]


class SuiteData(BaseModel):
    """The rows a suite runs on: labelled rows of the offline store, or of a stored dataset."""

    model_config = ConfigDict(extra="forbid")
    dataset: str | None = Field(default=None, description="A stored dataset; None: offline store.")
    start: date | None = None
    end: date | None = None
    last_days: int | None = Field(default=None, ge=1, le=20_000, description="Latest N dates.")
    tickers: list[str] = Field(default_factory=list, description="Empty: every ticker.")
    exclude_training: bool = Field(
        default=True,
        description="Start no earlier than the latest first test date of the evaluated "
        "versions, so no model is scored on rows it was fitted on.",
    )
    max_rows: int = Field(default=100_000, ge=10, le=5_000_000)

    @model_validator(mode="after")
    def _range(self) -> SuiteData:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    data: SuiteData = Field(default_factory=SuiteData)
    tests: list[SuiteTest] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_tests(self) -> Suite:
        names = [t.name for t in self.tests]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"test names must be unique, repeated: {', '.join(duplicates)}")
        return self

    def features_named(self) -> set[str]:
        """Features the suite names explicitly (beyond the models' own inputs)."""
        named: set[str] = set()
        for test in self.tests:
            if isinstance(test, RobustnessTest | DriftTest):
                named.update(test.features)
            if isinstance(test, SliceTest) and test.by == "volatility_regime":
                named.add(test.regime_feature)
        return named


class SuiteFile(BaseModel):
    """A suite file as listed: the suite, or the error that makes it unusable."""

    name: str
    path: str
    suite: Suite | None = None
    error: dict[str, Any] | None = None


def suites_dir(settings: Settings) -> Path:
    return settings.config_dir / SUITES_DIR


def _line_of(path: Path, text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at a Pydantic error location (as deep as it goes)."""
    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    previous: Any = None
    for part in loc:
        tag_position, previous = isinstance(previous, int), part
        if isinstance(node, yaml.MappingNode):
            values = {k.value: v for k, v in node.value}
            kind = values.get("kind")
            if tag_position and isinstance(kind, yaml.ScalarNode) and kind.value == str(part):
                continue  # the test kind's tag, right after the list index, is not a key
            if str(part) not in values:
                continue
            node = values[str(part)]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_suite(path: Path, text: str | None = None) -> Suite:
    """Read and validate one suite file; SuiteError names the file, line and field."""
    text = path.read_text() if text is None else text
    try:
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SuiteError(
            f"{path.name}:{line or '?'}: invalid YAML: {getattr(exc, 'problem', exc)}",
            {"file": str(path), "line": line, "field": None},
        ) from exc
    if not isinstance(raw, dict):
        raise SuiteError(
            f"{path.name}:1: a suite is a mapping with name, description, data and tests.",
            {"file": str(path), "line": 1, "field": None},
        )
    raw.setdefault("name", path.stem)
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = tuple(first["loc"])
        field = ".".join(str(p) for p in loc) or None
        line = _line_of(path, text, loc)
        raise SuiteError(
            f"{path.name}:{line or '?'}: {field or 'suite'}: {first['msg']}",
            {"file": str(path), "line": line, "field": field, "input": repr(first.get("input"))},
        ) from exc


_parsed: dict[Path, tuple[tuple[int, int], SuiteFile]] = {}
"""Parsed files by path, reused while the file's modification time and size are unchanged."""


def _suite_file(path: Path) -> SuiteFile:
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _parsed.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        suite = parse_suite(path)
        item = SuiteFile(name=suite.name, path=str(path), suite=suite)
    except SuiteError as exc:
        item = SuiteFile(name=path.stem, path=str(path), error=exc.to_dict())
    _parsed[path] = (stamp, item)
    return item


def list_suite_files(settings: Settings) -> list[SuiteFile]:
    """Every suite file, valid or not, sorted by suite name; a name used by two files makes
    the later file an error."""
    folder = suites_dir(settings)
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.exists() else []
    listed: dict[str, SuiteFile] = {}
    for path in files:
        item = _suite_file(path)
        if item.name in listed:
            message = (
                f"{path.name}:1: suite name '{item.name}' is also used by {listed[item.name].path}"
            )
            details = {"file": str(path), "line": 1, "field": "name"}
            item = SuiteFile(
                name=f"{item.name} ({path.name})",
                path=str(path),
                error={"code": SuiteError.code, "message": message, "details": details},
            )
        listed[item.name] = item
    return sorted(listed.values(), key=lambda item: item.name)


def load_suite(settings: Settings, name: str) -> Suite:
    """The suite called `name`: 404 if there is none, 422 if its file is invalid."""
    files = list_suite_files(settings)
    for item in files:
        if item.name == name:
            if item.suite is None:
                assert item.error is not None
                raise SuiteError(item.error["message"], item.error["details"])
            return item.suite
    known = ", ".join(f.name for f in files) or "none"
    raise NotFoundError(
        f"No benchmark suite '{name}' in {suites_dir(settings)} (known: {known}).",
        {"suite": name, "known": [f.name for f in files]},
    )
