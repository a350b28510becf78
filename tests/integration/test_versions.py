"""Feature view versions: metadata and schema changes, diff, rollback, bad requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.support.ingest import run_ingest_flow
from tests.support.statistics_reference import assert_stored_statistics_match

from mlops.db import session_scope
from mlops.errors import ConflictError, InvalidInputError, NotFoundError
from mlops.features.catalog import feature_detail
from mlops.features.rollback import rollback_view
from mlops.features.serving import online_features
from mlops.features.store import open_store
from mlops.features.versions import diff_versions, list_versions, record_version, version_rows
from mlops.settings import PROJECT_ROOT, Settings


def _edited_repo(settings: Settings, tmp_path: Path, old: str, new: str) -> Settings:
    """Settings whose feature repository is a copy of ours with one edit."""
    repo = tmp_path / "repo"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, dirs_exist_ok=True)
    text = (repo / "features.py").read_text()
    assert old in text
    (repo / "features.py").write_text(text.replace(old, new, 1))
    return settings.model_copy(update={"feature_repo_dir": repo})


def _history(settings: Settings, view: str) -> list:  # type: ignore[type-arg]
    with session_scope(settings.metadata_url) as session:
        return list_versions(session, view)


REMOVE_RET_20D = (
    '        Field(name="ret_20d", dtype=Float64, description="Close-to-close return over 20 days."),\n',
    "",
)


def test_metadata_only_change_is_a_version(fresh: Settings, tmp_path: Path) -> None:
    edited = _edited_repo(
        fresh,
        tmp_path,
        "Simple returns of the daily close over several windows.",
        "Simple close-to-close returns.",
    )
    result = run_ingest_flow(edited, message="reword description")
    assert result.new_versions == ["price_returns@v2"]
    v1, v2 = _history(fresh, "price_returns")
    assert (v2.change_kind, v2.message, v2.active, v1.active) == (
        "metadata",
        "reword description",
        True,
        False,
    )
    diff = _diff(fresh, "price_returns", 1, 2)
    assert diff.features == []
    assert diff.fields["description"]["after"] == "Simple close-to-close returns."


def test_an_unchanged_repository_leaves_the_registry_untouched_and_a_changed_service_applies(
    fresh: Settings, tmp_path: Path
) -> None:
    from mlops.features.ingest import apply_definitions

    registry = fresh.feast_dir / "registry.db"
    before = registry.read_bytes()
    assert apply_definitions(fresh, "tester", "again") == []
    assert registry.read_bytes() == before  # nothing rewritten
    edited = _edited_repo(
        fresh,
        tmp_path,
        "The serving features of the direction model (no label).",
        "The serving features (no label).",
    )
    assert apply_definitions(edited, "tester", "reword service") == []  # not a view
    assert open_store(fresh).get_feature_service("model_features").description == (
        "The serving features (no label)."
    )


def _diff(settings: Settings, view: str, a: int, b: int):  # type: ignore[no-untyped-def]
    with session_scope(settings.metadata_url) as session:
        return diff_versions(session, view, a, b)


def test_schema_change_diff_and_rollback(fresh: Settings, tmp_path: Path) -> None:
    edited = _edited_repo(fresh, tmp_path, *REMOVE_RET_20D)
    run_ingest_flow(edited, message="drop ret_20d")
    store = open_store(fresh)
    assert [f.name for f in store.get_feature_view("price_returns").features] == [
        "ret_1d",
        "ret_5d",
    ]
    history = _history(fresh, "price_returns")
    assert history[-1].change_kind == "schema"
    assert history[-1].feast_version == "v1"
    diff = _diff(fresh, "price_returns", 1, 2)
    assert [(c.name, c.change) for c in diff.features] == [("ret_20d", "removed")]
    assert "-  name: ret_20d" in diff.unified

    info = rollback_view(fresh, "price_returns", 1, "tester", "bring ret_20d back")
    assert (info.version, info.origin, info.active) == (3, "rollback", True)
    assert info.definition == history[0].definition
    names = [f.name for f in store.get_feature_view("price_returns").features]
    assert names == ["ret_1d", "ret_5d", "ret_20d"]
    served = online_features(fresh, ["BUCI"], ["price_returns:ret_20d"], None)
    assert served["ret_20d"][0] is not None
    assert feature_detail(fresh, "ret_20d").statistics_version == 3
    assert_stored_statistics_match(fresh, "ret_20d")
    assert [v.version for v in _history(fresh, "price_returns")] == [1, 2, 3]

    again = run_ingest_flow(edited, message="daily run")
    assert again.new_versions == [], "an unchanged repository must not undo a rollback"


def test_rollback_refusals_change_nothing(fresh: Settings) -> None:
    store = open_store(fresh)
    before = store.get_feature_view("price_returns").to_proto().spec
    with pytest.raises(ConflictError, match="same definition"):
        rollback_view(fresh, "price_returns", 1, "tester")
    with pytest.raises(NotFoundError, match="no version 7"):
        rollback_view(fresh, "price_returns", 7, "tester")
    with pytest.raises(NotFoundError, match="Unknown feature view"):
        rollback_view(fresh, "no_such_view", 1, "tester")
    with session_scope(fresh.metadata_url) as session:
        active = version_rows(session, "price_returns")[-1]
        ghost = {
            **active.definition,
            "features": [
                *active.definition["features"],
                {"name": "ret_60d", "dtype": "Float64", "description": "never computed"},
            ],
        }
        ghost_row = record_version(
            session,
            ghost,
            origin="repo",
            author="x",
            message="ghost",
            feast_version=None,
            previous=active,
        )
        record_version(
            session,
            active.definition,
            origin="repo",
            author="x",
            message="restore",
            feast_version=None,
            previous=ghost_row,
        )
    with pytest.raises(InvalidInputError, match="ret_60d"):
        rollback_view(fresh, "price_returns", 2, "tester")
    assert store.get_feature_view("price_returns").to_proto().spec == before
    assert len(_history(fresh, "price_returns")) == 3
