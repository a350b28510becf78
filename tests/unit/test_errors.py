"""Validation errors read the same wherever they are reported."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError, field_validator

from mlops.errors import (
    DataValidationError,
    MlopsError,
    NotFoundError,
    error_from,
    field_of,
    problems,
)


class Inner(BaseModel):
    days: int = Field(ge=1)


class Config(BaseModel):
    name: str
    inner: Inner

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        if value != value.lower():
            raise ValueError("must be lower case")
        return value


def _error(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Config.model_validate(data)
    return caught.value


def test_each_problem_names_its_field_without_pydantics_prefixes() -> None:
    exc = _error({"name": "Ridge", "inner": {"days": 0}})
    assert problems(exc) == (
        "name: must be lower case; inner.days: Input should be greater than or equal to 1"
    )
    assert problems(exc, first=True) == "name: must be lower case"


def test_fields_are_placed_where_the_model_sits_in_its_file() -> None:
    exc = _error({"name": "ridge", "inner": {"days": 0}})
    assert problems(exc, ("models", "ridge")) == (
        "models.ridge.inner.days: Input should be greater than or equal to 1"
    )
    assert field_of(exc.errors()[0], ("models", "ridge")) == "models.ridge.inner.days"


def test_a_problem_of_the_whole_input_is_its_message_alone() -> None:
    exc = _error("not a mapping")
    assert problems(exc) == "Input should be a valid dictionary or instance of Config"


def test_an_api_error_code_becomes_the_error_with_its_exit_code() -> None:
    rejected = error_from("data_validation_failed", "close > 0", {"report_path": "r.json"})
    assert isinstance(rejected, DataValidationError) and rejected.exit_code == 3
    assert rejected.message == "close > 0" and rejected.details == {"report_path": "r.json"}
    assert type(error_from("not_found", "no such run")) is NotFoundError
    unknown = error_from("a_code_of_a_newer_server", "something")
    assert type(unknown) is MlopsError and unknown.exit_code == 1
