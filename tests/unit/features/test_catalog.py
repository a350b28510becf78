"""Looking up one feature: by 'view:feature' or an unambiguous bare name, in its view's
active definition, with the statistics of the view version asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.settings import make_settings

from mlops.db import FeatureStatistics, session_scope
from mlops.errors import InvalidInputError, NotFoundError
from mlops.features import catalog
from mlops.features.versions import active_row, record_version
from mlops.settings import Settings


def _definition(view: str, features: list[str], description: str = "") -> dict[str, Any]:
    return {
        "name": view,
        "entities": ["ticker"],
        "features": [
            {"name": f, "dtype": "Float64", "description": f"{f} of {view}", "tags": {}}
            for f in features
        ],
        "source": {"name": f"{view}_source", "file": "daily_features.parquet"},
        "ttl_seconds": 86400,
        "tags": {"team": "test"},
        "description": description or f"The {view} view.",
        "owner": "tester",
        "online": True,
    }


def _record(settings: Settings, definition: dict[str, Any]) -> int:
    with session_scope(settings.metadata_url) as session:
        previous = active_row(session, definition["name"])
        row = record_version(
            session,
            definition,
            origin="repo",
            author="tester",
            message="",
            feast_version=None,
            previous=previous,
        )
        return row.version


def _statistics(settings: Settings, view: str, version: int, feature: str, mean: float) -> None:
    with session_scope(settings.metadata_url) as session:
        session.add(
            FeatureStatistics(
                view_name=view,
                version=version,
                feature_name=feature,
                stats={"mean": mean},
                samples=[{"ticker": "AAA", feature: mean}],
            )
        )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Two views sharing `shared`; `prices` dropped `old` in its second version."""
    settings = make_settings(tmp_path / "home")
    _record(settings, _definition("prices", ["shared", "old"]))
    _statistics(settings, "prices", 1, "shared", 1.0)
    _record(settings, _definition("prices", ["shared", "ret"]))
    _statistics(settings, "prices", 2, "shared", 2.0)
    _record(settings, _definition("volumes", ["shared", "volume_z"]))
    return settings


def test_a_bare_name_in_one_view_is_found_and_in_two_is_ambiguous(settings: Settings) -> None:
    assert catalog.find_feature(settings, "volume_z").feature_view == "volumes"
    with pytest.raises(InvalidInputError) as ambiguous:
        catalog.find_feature(settings, "shared")
    assert "use one of prices:shared, volumes:shared" in ambiguous.value.message
    assert catalog.feature_detail(settings, "volumes:shared").feature_view == "volumes"


def test_detail_has_the_active_definition_and_the_statistics_of_the_version_asked(
    settings: Settings,
) -> None:
    detail = catalog.feature_detail(settings, "prices:shared")
    assert (detail.latest_version, detail.statistics_version) == (2, 2)
    assert detail.statistics == {"mean": 2.0} and detail.samples[0]["shared"] == 2.0
    assert detail.data_updated is not None and detail.last_updated >= detail.definition_updated
    assert detail.tags == {"team": "test"} and detail.ttl_seconds == 86400
    older = catalog.feature_detail(settings, "prices:shared", version=1)
    assert older.statistics == {"mean": 1.0} and older.latest_version == 2
    without = catalog.feature_detail(settings, "volumes:volume_z")
    assert without.statistics is None and without.samples == [] and without.data_updated is None


def test_versions_say_which_held_the_feature(settings: Settings) -> None:
    detail = catalog.feature_detail(settings, "ret")
    assert [(v.version, v.has_feature) for v in detail.versions] == [(1, False), (2, True)]


def test_a_new_version_and_a_return_to_an_old_definition_are_seen_at_once(
    settings: Settings,
) -> None:
    """Decoded definitions are kept by content between lookups; what a lookup shows is
    still the view's rows as they are now."""
    assert catalog.feature_detail(settings, "prices:shared").view_description == "The prices view."
    _record(settings, _definition("prices", ["shared"], description="Edited."))
    edited = catalog.feature_detail(settings, "prices:shared")
    assert (edited.latest_version, edited.view_description) == (3, "Edited.")
    assert edited.statistics is None  # none were stored for v3 yet
    with pytest.raises(NotFoundError):
        catalog.feature_detail(settings, "prices:ret")  # v3 dropped it
    _record(settings, _definition("prices", ["shared", "ret"]))  # v2's definition again
    back = catalog.feature_detail(settings, "prices:ret")
    assert back.latest_version == 4 and back.view_description == "The prices view."
    assert [v.has_feature for v in back.versions] == [False, True, False, True]


@pytest.mark.parametrize("name", ["nope", "prices:old", "nope:shared", "prices:nope"])
def test_unknown_features_are_not_found_by_the_name_asked(settings: Settings, name: str) -> None:
    """A feature only an older version had is unknown too (the catalog is the active one)."""
    for lookup in (catalog.find_feature, catalog.feature_detail):
        with pytest.raises(NotFoundError) as missing:
            lookup(settings, name)
        assert missing.value.message == f"Unknown feature '{name}'."
        assert missing.value.details == {"feature": name}


def test_a_view_version_that_does_not_exist_is_not_found(settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="Feature view 'prices' has no version 3"):
        catalog.feature_detail(settings, "prices:ret", version=3)
