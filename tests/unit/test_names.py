"""User-given names: whitespace at the ends and control characters are refused everywhere."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from mlops.errors import InvalidInputError
from mlops.names import DATASET_NAME, EXPERIMENT_NAME, TICKER, SafeName, Ticker, check_name

BAD = ["ZZNX\n", "ZZNX ", " ZZNX", "ZZ\tNX", "ZZNX\r", "ZZ\x00NX", "ZZ\u200bNX", ""]


@pytest.mark.parametrize("value", BAD)
def test_check_name_refuses_invisible_and_surrounding_characters(value: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_name(value, "ticker")
    assert repr(value) in caught.value.message
    assert caught.value.http_status == 422 and caught.value.exit_code == 2


@pytest.mark.parametrize("rule", [TICKER, DATASET_NAME, EXPERIMENT_NAME])
@pytest.mark.parametrize("value", BAD)
def test_every_rule_refuses_them(rule, value: str) -> None:  # type: ignore[no-untyped-def]
    assert rule.problem(value) is not None
    with pytest.raises(InvalidInputError):
        rule.check(value)


@pytest.mark.parametrize(
    ("rule", "valid"),
    [
        (TICKER, ["AAPL", "BRK.B", "BF-B", "A", "ABCDEFGHIJ"]),
        (DATASET_NAME, ["train", "api-ds", "v1.2_final", "x" * 100]),
        (EXPERIMENT_NAME, ["lifecycle-tests", "my experiment", "team/q1 run.2"]),
    ],
)
def test_names_valid_before_stay_valid(rule, valid: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert [rule.problem(v) for v in valid] == [None] * len(valid)


def test_the_regex_for_searching_tools_matches_the_whole_value() -> None:
    import re

    assert re.search(TICKER.regex, "ZZNX")
    assert not re.search(TICKER.regex, "ZZNX\n")
    assert not re.search(TICKER.regex, "xZZNX")


class _Request(BaseModel):
    name: SafeName
    tickers: list[Ticker] = []


@pytest.mark.parametrize(
    "body", [{"name": "x\n"}, {"name": "x "}, {"name": "ok", "tickers": ["AAPL\t"]}]
)
def test_request_models_refuse_them(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="invalid"):
        _Request.model_validate(body)
