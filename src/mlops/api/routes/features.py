"""Feature store endpoints: catalog, versions, diff, rollback, online lookup."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from mlops.api.deps import Approver, SettingsDep, read_access
from mlops.api.errors import READ_ERRORS, WRITE_ERRORS
from mlops.features import catalog, versions
from mlops.features.rollback import rollback_view
from mlops.features.serving import answers_inline, online_features
from mlops.fields import PageNumber, TimeInRange, VersionNumber

router = APIRouter(tags=["features"], dependencies=[Depends(read_access)], responses=READ_ERRORS)


class RollbackRequest(BaseModel):
    version: VersionNumber = Field(description="The version whose definition becomes active again.")
    message: str = Field(default="", max_length=2000)


@router.get("/features", response_model=catalog.Page[catalog.FeatureSummary])
def list_features(
    settings: SettingsDep,
    type: Annotated[str | None, Query(description="Feast dtype, e.g. Float64")] = None,
    view: str | None = None,
    q: Annotated[str | None, Query(description="Substring of name, view or description")] = None,
    updated_after: TimeInRange | None = None,
    updated_before: TimeInRange | None = None,
    page: PageNumber = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> catalog.Page[catalog.FeatureSummary]:
    """The feature catalog: filter by type, view and update time; search by substring."""
    filters = catalog.FeatureFilter(
        dtype=type,
        view=view,
        q=q,
        updated_after=updated_after,
        updated_before=updated_before,
        page=page,
        page_size=page_size,
    )
    return catalog.list_features(settings, filters)


@router.get("/features/{name}", response_model=catalog.FeatureDetail)
def get_feature(
    name: str,
    settings: SettingsDep,
    version: Annotated[
        VersionNumber | None, Query(description="Statistics of this view version")
    ] = None,
) -> catalog.FeatureDetail:
    """Metadata, statistics (computed at ingest) and sample rows of one feature."""
    return catalog.feature_detail(settings, name, version)


@router.get("/features/{name}/versions", response_model=list[versions.VersionInfo])
def feature_versions(name: str, settings: SettingsDep) -> list[versions.VersionInfo]:
    """Version history of the feature's view."""
    return versions.history(settings, catalog.find_feature(settings, name).feature_view)


@router.get("/feature-views", response_model=list[versions.ViewSummary])
def list_views(settings: SettingsDep) -> list[versions.ViewSummary]:
    """Every feature view with its active version."""
    return versions.view_summaries(settings)


@router.get("/feature-views/{view}/versions", response_model=list[versions.VersionInfo])
def view_versions(view: str, settings: SettingsDep) -> list[versions.VersionInfo]:
    """Every version of a feature view, oldest first (author, message, time, definition)."""
    return versions.history(settings, view)


@router.get("/feature-views/{view}/diff", response_model=versions.VersionDiff)
def view_diff(
    view: str,
    settings: SettingsDep,
    from_version: Annotated[VersionNumber, Query(alias="from")],
    to_version: Annotated[VersionNumber, Query(alias="to")],
) -> versions.VersionDiff:
    """What changed between two versions: features added/removed/retyped, other fields."""
    return versions.diff(settings, view, from_version, to_version)


@router.post(
    "/feature-views/{view}/rollback", responses=WRITE_ERRORS, response_model=versions.VersionInfo
)
async def view_rollback(
    view: str, body: RollbackRequest, settings: SettingsDep, caller: Approver
) -> versions.VersionInfo:
    """Make an older definition active again (recorded as a new version), re-materialized."""
    return await run_in_threadpool(
        rollback_view, settings, view, body.version, caller.name, body.message
    )


@router.get("/online-features")
async def get_online_features(
    settings: SettingsDep,
    tickers: Annotated[str, Query(description="Comma-separated tickers")],
    features: Annotated[str | None, Query(description="Comma-separated feature refs")] = None,
    feature_service: str | None = None,
) -> dict[str, list[Any]]:
    """Latest serving values of features for the given tickers, from the online store."""
    names = [t.strip() for t in tickers.split(",") if t.strip()]
    refs = [f.strip() for f in (features or "").split(",") if f.strip()]
    if answers_inline(settings, len(names)):
        return online_features(settings, names, refs, feature_service)
    return await run_in_threadpool(online_features, settings, names, refs, feature_service)
