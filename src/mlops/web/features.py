"""The feature store section: the catalog with filters and search, a feature's metadata,
stored statistics, histogram and sample rows, a view's version timeline with a side-by-side
diff and a confirmed rollback, and training datasets (list, create, download).

Every page reads the stored catalog (statistics come from ingest, never computed here);
mutations are POST forms checked by `checked_form` (signed in, CSRF)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlops.errors import InvalidInputError, MlopsError, NotFoundError, checked
from mlops.roles import Role
from mlops.settings import Settings
from mlops.web import charts
from mlops.web.common import (
    REFUSED,
    caller_of,
    checked_form,
    error_page,
    needs_reading,
    page,
    quiet,
    settings_of,
)

if TYPE_CHECKING:
    from mlops.features.versions import VersionInfo

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
DATASETS_PAGE_SIZE = 20
DASH = "\u2013"


def _param(request: Request, name: str) -> str:
    return request.query_params.get(name, "").strip()


def _page_number(raw: str) -> int:
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInputError(f"page must be a whole number of at least 1, not '{raw}'.")
    return int(raw)


def _version_number(raw: Any, field: str = "version") -> int:
    text = str(raw or "").strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"{field} must be a version number (1, 2, ...), not '{text}'.")
    return int(text)


def _day(raw: str, field: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{field} must be a date (YYYY-MM-DD), not '{raw}'.") from exc


def _views(settings: Settings) -> dict[str, dict[str, Any]]:
    from mlops.features.catalog import active_definitions

    return active_definitions(settings)


# --- catalog ---------------------------------------------------------------------------


@router.get("/features", response_class=HTMLResponse, response_model=None)
def features_index(request: Request) -> Response:
    """The catalog: type, view and update-date filters, search, pages of 25."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _catalog_page(request)


def _catalog_page(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    """The catalog page; `error` (from another page: unknown feature or view) is shown
    above the whole catalog. Bad filters are shown the same way, with the form as sent."""
    from mlops.features import catalog

    settings = settings_of(request)
    views = _views(settings)
    keys = ("type", "view", "q", "after", "before", "page")
    values = {key: "" if error else _param(request, key) for key in keys}
    try:
        filters = _filters(values, views)
    except MlopsError as exc:
        status, error = exc.http_status, exc.message
        filters = catalog.FeatureFilter(page_size=PAGE_SIZE)
    result = catalog.list_features(settings, filters)
    pages = max(1, (result.total + PAGE_SIZE - 1) // PAGE_SIZE)
    kept = {k: v for k, v in values.items() if v and k != "page"}
    links: dict[str, str] = {}
    if result.page > 1:
        links["prev"] = "/features?" + urlencode({**kept, "page": min(result.page - 1, pages)})
    if result.page < pages:
        links["next"] = "/features?" + urlencode({**kept, "page": result.page + 1})
    return page(
        request,
        "features/index.html",
        status=status,
        views=views,
        dtypes=catalog.DTYPES,
        values=values,
        result=result,
        pages=pages,
        links=links,
        total_features=sum(len(v["features"]) for v in views.values()),
        filtered=any(values[k] for k in ("type", "view", "q", "after", "before")),
        form_error=error,
        error_status=status,
    )


def _filters(values: dict[str, str], views: dict[str, Any]) -> Any:
    from mlops.features import catalog

    if values["view"] and values["view"] not in views:
        raise NotFoundError(f"Unknown feature view '{values['view']}'.")
    after = _day(values["after"], "updated after")
    before = _day(values["before"], "updated before")
    if after and before and after > before:
        raise InvalidInputError("'Updated after' must not be later than 'updated before'.")
    return checked(
        catalog.FeatureFilter,
        {
            "dtype": values["type"] or None,
            "view": values["view"] or None,
            "q": values["q"] or None,
            "updated_after": datetime.combine(after, time.min) if after else None,
            "updated_before": datetime.combine(before, time.max) if before else None,
            "page": _page_number(values["page"]),
            "page_size": PAGE_SIZE,
        },
    )


@router.get("/features/views/{view}", response_class=HTMLResponse, response_model=None)
def view_timeline(request: Request, view: str) -> Response:
    """A view's versions, newest first: who, when, why, what kind; diff and rollback forms."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _timeline_page(request, view)


def _timeline_page(
    request: Request,
    view: str,
    status: int = 200,
    error: str | None = None,
    **extra: Any,
) -> HTMLResponse:
    from mlops.features import versions

    settings = settings_of(request)
    try:
        history = versions.history(settings, view)
    except MlopsError as exc:
        return _catalog_page(request, status=exc.http_status, error=exc.message)
    rolled = _param(request, "rolled")
    return page(
        request,
        "features/view.html",
        status=status,
        view=view,
        history=list(reversed(history)),
        active=history[-1],
        rolled=int(rolled) if rolled.isdigit() else None,
        form_error=error,
        error_status=status,
        **extra,
    )


def _view_error(request: Request, view: str, exc: MlopsError) -> HTMLResponse:
    """An unknown view goes back to the catalog; any other error shows on the timeline."""
    if isinstance(exc, NotFoundError) and "view" in exc.details and "version" not in exc.details:
        return _catalog_page(request, status=exc.http_status, error=exc.message)
    return _timeline_page(request, view, status=exc.http_status, error=exc.message)


@router.get("/features/views/{view}/diff", response_class=HTMLResponse, response_model=None)
def view_diff(request: Request, view: str) -> Response:
    """Two versions of a view side by side, with what changed between them."""
    from mlops.features import versions

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    try:
        a = _version_number(_param(request, "from"), "from")
        b = _version_number(_param(request, "to"), "to")
        compared = versions.compare(settings, view, a, b)
        diff, left, right = compared.diff, _info(compared.before), _info(compared.after)
    except MlopsError as exc:
        return _view_error(request, view, exc)
    return page(
        request,
        "features/diff.html",
        view=view,
        diff=diff,
        left=left,
        right=right,
        rows=_side_by_side(left["definition"], right["definition"], diff),
    )


def _info(version: VersionInfo) -> dict[str, Any]:
    return version.model_dump(
        include={
            "version",
            "author",
            "message",
            "origin",
            "change_kind",
            "created_at",
            "definition",
        }
    )


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or DASH
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or DASH
    return DASH if value in (None, "") else str(value)


def _side_by_side(before: dict[str, Any], after: dict[str, Any], diff: Any) -> list[dict[str, Any]]:
    """One row per field and per feature: left value, right value, and how it changed."""
    rows: list[dict[str, Any]] = []
    for key in ("description", "owner", "entities", "source", "ttl_seconds", "tags", "online"):
        rows.append(
            {
                "label": key.replace("_", " "),
                "left": _text(before.get(key)),
                "right": _text(after.get(key)),
                "change": "changed" if key in diff.fields else "",
            }
        )
    changes = {c.name: c.change for c in diff.features}
    old = {f["name"]: f for f in before["features"]}
    new = {f["name"]: f for f in after["features"]}
    names = [f["name"] for f in before["features"]]
    names += [f["name"] for f in after["features"] if f["name"] not in old]
    for name in names:
        rows.append(
            {
                "label": f"feature {name}",
                "left": f"{old[name]['dtype']}: {old[name]['description']}" if name in old else "",
                "right": f"{new[name]['dtype']}: {new[name]['description']}" if name in new else "",
                "change": changes.get(name, ""),
            }
        )
    return rows


@router.post("/features/views/{view}/rollback", response_model=None)
async def view_rollback(request: Request, view: str) -> Response:
    """Roll a view back to an older version: first a confirmation page, then (with
    `confirm=yes`) the rollback, recorded as a new version and re-materialized."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.features import versions

    try:
        form = await checked_form(request, Role.APPROVER, "Rolling back a feature view")
    except REFUSED as exc:
        return error_page(request, exc)
    settings = settings_of(request)
    message = str((form.get("message") or [""])[0]).strip()[:2000]
    try:
        target = _version_number((form.get("version") or [""])[0])
        compared = versions.compare(settings, view, None, target)
        diff, left, right = compared.diff, _info(compared.before), _info(compared.after)
        if target == compared.before.version:
            raise InvalidInputError(f"Version {target} of '{view}' is already the active one.")
        if (form.get("confirm") or [""])[0] != "yes":
            return page(
                request,
                "features/confirm.html",
                view=view,
                left=left,
                right=right,
                diff=diff,
                rows=_side_by_side(left["definition"], right["definition"], diff),
                message=message,
            )
        from mlops.features.rollback import rollback_view

        info = await run_in_threadpool(
            rollback_view, settings, view, target, caller_of(request), message
        )
    except MlopsError as exc:
        return _view_error(request, view, exc)
    return RedirectResponse(f"/features/views/{quote(view)}?rolled={info.version}", status_code=303)


@router.get("/features/{ref}", response_class=HTMLResponse, response_model=None)
def feature_page(request: Request, ref: str) -> Response:
    """Metadata, stored statistics (of a view version), a histogram and sample rows."""
    from mlops.features import catalog

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    status, error = 200, None
    raw = _param(request, "version")
    try:
        version = _version_number(raw) if raw else None
        try:
            detail = catalog.feature_detail(settings, ref, version)
        except NotFoundError as exc:
            if "version" not in exc.details:
                raise
            status, error = exc.http_status, exc.message
            detail = catalog.feature_detail(settings, ref, None)
    except MlopsError as exc:
        return _catalog_page(request, status=exc.http_status, error=exc.message)
    histogram = None
    stats = detail.statistics
    if stats and stats.get("histogram", {}).get("counts"):
        edges, counts = stats["histogram"]["edges"], stats["histogram"]["counts"]
        histogram = charts.column_chart(
            f"Distribution of {detail.name} (v{detail.statistics_version}, {len(counts)} bins)",
            [f"{edge:.3g}" for edge in edges[:-1]],
            [float(c) for c in counts],
        )
    return page(
        request,
        "features/detail.html",
        status=status,
        f=detail,
        ref=f"{detail.feature_view}:{detail.name}",
        shown_version=version or detail.latest_version,
        histogram=histogram,
        form_error=error,
        error_status=status,
    )


# --- datasets --------------------------------------------------------------------------


def _offline_range(settings: Settings) -> tuple[list[str], date | None, date | None]:
    """Tickers and the date range of the offline bars (two columns, cached per file)."""
    from mlops.features.offline_state import open_snapshot

    snapshot = open_snapshot(settings)
    if snapshot is None:
        return [], None, None
    index = snapshot.tickers()  # per ticker: first and last bar (a small file)
    if index.empty:
        return [], None, None
    tickers = sorted(str(t) for t in index["ticker"])
    return tickers, _as_day(index["first"].min()), _as_day(index["last"].max())


def _as_day(value: Any) -> date | None:
    return value.date() if isinstance(value, datetime) else value


def _datasets_page(
    request: Request, status: int = 200, error: str | None = None, chosen: Any = None
) -> HTMLResponse:
    from mlops.features.datasets import DEFAULT_SERVICE, list_datasets

    settings = settings_of(request)
    views = _views(settings)
    empty: tuple[list[str], date | None, date | None] = ([], None, None)
    tickers, first, last = quiet(lambda: _offline_range(settings), empty)
    items = list_datasets(settings)
    raw = _param(request, "page")
    number = int(raw) if raw.isdigit() and int(raw) > 0 else 1
    pages = max(1, (len(items) + DATASETS_PAGE_SIZE - 1) // DATASETS_PAGE_SIZE)
    number = min(number, pages)
    start = (number - 1) * DATASETS_PAGE_SIZE
    return page(
        request,
        "features/datasets.html",
        status=status,
        datasets=items[start : start + DATASETS_PAGE_SIZE],
        total=len(items),
        page_number=number,
        pages=pages,
        views={n: v for n, v in views.items() if n != "training_labels"},
        tickers=tickers,
        first=first,
        last=last,
        default_service=DEFAULT_SERVICE,
        chosen=chosen or {},
        form_error=error,
        error_status=status,
    )


@router.get("/datasets", response_class=HTMLResponse, response_model=None)
def datasets_index(request: Request) -> Response:
    """Training datasets with download links, and the form that builds a new one."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _datasets_page(request)


@router.post("/datasets", response_model=None)
async def datasets_create(request: Request) -> Response:
    """Build a point-in-time correct dataset from the ticked features, tickers and range."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.features.datasets import DatasetRequest, create_dataset

    try:
        form = await checked_form(request, Role.RESEARCHER, "Creating a dataset")
    except REFUSED as exc:
        return error_page(request, exc)
    chosen: dict[str, Any] = {
        "name": str((form.get("name") or [""])[0]).strip(),
        "features": [str(f) for f in form.get("feature", [])],
        "tickers": [str(t) for t in form.get("ticker", [])],
        "start": str((form.get("start") or [""])[0]).strip(),
        "end": str((form.get("end") or [""])[0]).strip(),
        "include_label": bool(form.get("include_label")),
    }
    try:
        if not chosen["name"]:
            raise InvalidInputError("Give the dataset a name.")
        if not chosen["features"]:
            raise InvalidInputError("Tick at least one feature.")
        body = checked(
            DatasetRequest,
            {
                "name": chosen["name"],
                "features": chosen["features"],
                "tickers": chosen["tickers"],
                "start": _day(chosen["start"], "start"),
                "end": _day(chosen["end"], "end"),
                "include_label": chosen["include_label"],
            },
        )
        info = await run_in_threadpool(
            create_dataset, settings_of(request), body, caller_of(request)
        )
    except MlopsError as exc:
        return _datasets_page(request, status=exc.http_status, error=exc.message, chosen=chosen)
    return RedirectResponse(f"/datasets/{quote(info.name)}?created=1", status_code=303)


@router.get("/datasets/{name}", response_class=HTMLResponse, response_model=None)
def dataset_page(request: Request, name: str) -> Response:
    """One dataset: what it holds, the feature versions it was built from, its first rows,
    and download links (parquet, CSV) to the API."""
    from mlops.features.datasets import get_dataset

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    try:
        info, path = get_dataset(settings, name)
    except MlopsError as exc:
        return _datasets_page(request, status=exc.http_status, error=exc.message)
    nothing: tuple[list[str], list[list[Any]]] = ([], [])
    columns, rows = quiet(lambda: _head(path), nothing)
    return page(
        request,
        "features/dataset.html",
        d=info,
        columns=columns,
        rows=rows,
        created=_param(request, "created") == "1",
    )


def _head(path: Any, n: int = 10) -> tuple[list[str], list[list[Any]]]:
    """The first rows of a parquet file, read one small batch only."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        columns = list(parquet.schema_arrow.names)
        for batch in parquet.iter_batches(batch_size=n):
            data = batch.to_pydict()
            return columns, [[data[c][i] for c in columns] for i in range(batch.num_rows)]
    return columns, []
