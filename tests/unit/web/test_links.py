"""Page links and query numbers, shared by every console page."""

from __future__ import annotations

from mlops.web.common import bounded_int, linker


def test_a_link_changes_parameters_drops_empty_ones_and_keeps_zero() -> None:
    link = linker("/prompts", {"q": "risk", "page": 2, "archived": True})
    assert link(page=3) == "/prompts?q=risk&page=3&archived=True"
    assert link(q=None, archived=False) == "/prompts?page=2"
    assert link(q="", page=0, archived=[]) == "/prompts?page=0"
    assert link(stage=["Production", "Staging"], q=None, page=None, archived=None) == (
        "/prompts?stage=Production&stage=Staging"
    )
    assert linker("/models", {})() == "/models"


def test_a_query_number_is_bounded_and_falls_back_to_its_default() -> None:
    assert bounded_int("7", 1, 1, 5) == 5 and bounded_int("-3", 1) == 1
    assert bounded_int("x", 4) == 4 and bounded_int(None, 4) == 4
    assert bounded_int("12", 1) == 12
