"""Suite files: the shipped suites are valid; an invalid file names its file, line and
field; listing keeps going past a bad file; lookups of unknown suites are 404s."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.settings import make_settings

from mlops.errors import NotFoundError
from mlops.evaluation.suites import (
    SuiteError,
    list_suite_files,
    load_suite,
    parse_suite,
    suites_dir,
)
from mlops.settings import Settings

ROOT = Path(__file__).resolve().parents[3]

VALID = """\
name: quick
description: two tests
data:
  last_days: 30
tests:
  - name: auc
    kind: metric
    metric: roc_auc
    op: ">="
    threshold: 0.5
  - name: per_ticker
    kind: slice
    by: ticker
    metric: accuracy
    op: ">="
    threshold: 0.4
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config"
    (config / "suites").mkdir(parents=True)
    return make_settings(tmp_path / "home", config_dir=config)


def _write(settings: Settings, name: str, text: str) -> Path:
    path = suites_dir(settings) / name
    path.write_text(text)
    return path


def test_shipped_suites_are_valid_and_cover_every_test_kind() -> None:
    suites = {p.stem: parse_suite(p) for p in sorted((ROOT / "config" / "suites").glob("*.yaml"))}
    assert {"smoke", "standard", "stress"} <= set(suites)
    kinds = {test.kind for suite in suites.values() for test in suite.tests}
    assert kinds == {
        "metric", "slice", "baseline", "robustness", "calibration", "drift", "latency"
    }  # fmt: skip
    assert all(suite.description for suite in suites.values())


def test_valid_suite_parses_with_defaults(settings: Settings) -> None:
    _write(settings, "quick.yaml", VALID)
    suite = load_suite(settings, "quick")
    assert [t.name for t in suite.tests] == ["auc", "per_ticker"]
    assert suite.data.last_days == 30 and suite.data.exclude_training is True
    assert suite.tests[1].min_rows == 30  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("old", "new", "line", "field"),
    [
        ('op: ">="\n    threshold: 0.5', 'op: "=>"\n    threshold: 0.5', 9, "tests.0.metric.op"),
        ("threshold: 0.5", "threshold: high", 10, "tests.0.metric.threshold"),
        ("metric: roc_auc", "metric: sharpe", 8, "tests.0.metric.metric"),
        ("kind: slice", "kind: vibes", 11, "tests.1"),
        ("last_days: 30", "last_days: -3", 4, "data.last_days"),
        ("threshold: 0.5", "threshold: .nan", 10, "tests.0.metric.threshold"),
        ("threshold: 0.5", "threshold: 1.5", 10, "tests.0.metric.threshold"),
        ("threshold: 0.4", "threshold: -.inf", 16, "tests.1.slice.threshold"),
        ("    by: ticker\n", "    by: ticker\n    colour: red\n", 14, "tests.1.slice.colour"),
    ],
)
def test_invalid_suite_names_file_line_and_field(
    settings: Settings, old: str, new: str, line: int, field: str
) -> None:
    assert old in VALID
    path = _write(settings, "quick.yaml", VALID.replace(old, new, 1))
    with pytest.raises(SuiteError) as caught:
        load_suite(settings, "quick")
    details = caught.value.details
    assert (details["file"], details["line"], details["field"]) == (str(path), line, field)
    assert caught.value.message.startswith(f"quick.yaml:{line}: {field}")
    assert caught.value.http_status == 422


def test_yaml_syntax_error_and_non_mapping_are_suite_errors(settings: Settings) -> None:
    _write(settings, "broken.yaml", "name: broken\ntests: [\n")
    _write(settings, "list.yaml", "- just\n- a list\n")
    for name in ("broken", "list"):
        with pytest.raises(SuiteError, match=rf"{name}.yaml:\d+: "):
            load_suite(settings, name)


def test_duplicate_test_names_and_inverted_range_are_refused(settings: Settings) -> None:
    _write(settings, "dup.yaml", VALID.replace("name: per_ticker", "name: auc"))
    with pytest.raises(SuiteError, match="repeated: auc"):
        load_suite(settings, "dup")
    _write(
        settings,
        "range.yaml",
        VALID.replace("last_days: 30", "start: 2025-02-01\n  end: 2025-01-01"),
    )
    with pytest.raises(SuiteError, match="after end"):
        load_suite(settings, "range")


def test_listing_reports_bad_files_beside_good_ones(settings: Settings) -> None:
    _write(settings, "quick.yaml", VALID)
    _write(settings, "bad.yaml", VALID.replace("name: quick", "name: bad").replace("0.5", "x"))
    _write(settings, "twin.yaml", VALID)  # same suite name as quick.yaml
    listed = {item.name: item for item in list_suite_files(settings)}
    assert listed["quick"].suite is not None and listed["quick"].error is None
    assert listed["bad"].suite is None and listed["bad"].error["details"]["line"] == 10
    twin = listed["quick (twin.yaml)"]
    assert twin.suite is None and "also used by" in twin.error["message"]


def test_edited_file_is_read_again(settings: Settings) -> None:
    path = _write(settings, "quick.yaml", VALID)
    assert load_suite(settings, "quick").description == "two tests"
    path.write_text(VALID.replace("two tests", "edited, longer description"))
    assert load_suite(settings, "quick").description == "edited, longer description"


def test_unknown_suite_is_404_naming_the_known_ones(settings: Settings) -> None:
    _write(settings, "quick.yaml", VALID)
    with pytest.raises(NotFoundError, match=r"No benchmark suite 'nope'.*known: quick"):
        load_suite(settings, "nope")


def test_threshold_outside_the_metric_range_says_so(settings: Settings) -> None:
    _write(settings, "quick.yaml", VALID.replace("threshold: 0.5", "threshold: 5"))
    with pytest.raises(SuiteError, match=r"threshold 5.0 is outside the range of roc_auc"):
        load_suite(settings, "quick")
    loss = VALID.replace("metric: roc_auc", "metric: log_loss").replace('">="', '"<="', 1)
    _write(settings, "quick.yaml", loss.replace("threshold: 0.5", "threshold: 1.5"))
    assert load_suite(settings, "quick").tests[0].threshold == 1.5  # type: ignore[union-attr]
