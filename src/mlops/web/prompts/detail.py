"""A template's page: a version's highlighted source, metadata and releases, the publish
and rollback forms, and usage charts over a chosen window."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from mlops.approvals import DecisionRequest
from mlops.errors import MlopsError, checked
from mlops.prompts import publications, publishing
from mlops.roles import Role
from mlops.web import charts
from mlops.web.common import (
    REFUSED,
    bounded_int,
    caller_of,
    checked_form,
    error_page,
    linker,
    needs_reading,
    page,
    quiet,
    settings_of,
)
from mlops.web.prompts.common import (
    NOTICE,
    form_text,
    highlight_source,
    pop_notice,
    store_of,
)

if TYPE_CHECKING:
    from mlops.approvals import Decision
    from mlops.prompts.models import Bucket, UsageReport

router = APIRouter(include_in_schema=False)

WINDOWS = {"1": 1, "7": 7, "30": 30}


def _usage_charts(report: UsageReport) -> list[Markup]:
    """Calls over time, success rate over time, latency p50/p95 by version, mean latency."""
    unit = 3600.0 if report.bucket == "hour" else 86400.0
    suffix = "h" if report.bucket == "hour" else "d"

    def x(start: Any) -> float:
        return float((start - report.end).total_seconds() / unit)

    x_format, x_label = f"{{:.0f}} {suffix}", f"{report.bucket}s from now"
    series = report.series
    out = [
        charts.line_chart(
            f"Calls per {report.bucket}",
            [charts.Series("calls", [(x(b.start), float(b.calls)) for b in series], True)],
            x_label,
            "calls",
            x_format,
        ),
        charts.line_chart(
            f"Success rate per {report.bucket} (%)",
            [
                charts.Series(
                    "success rate", [(x(b.start), b.success_rate * 100) for b in series], True
                )
            ],
            x_label,
            "%",
            x_format,
        ),
    ]
    versions = [v for v in report.versions if v.latency_p50_ms is not None]
    if versions:
        out.append(
            charts.line_chart(
                "Latency by version (ms)",
                [
                    charts.Series(
                        "p50", [(float(v.version), v.latency_p50_ms or 0.0) for v in versions]
                    ),
                    charts.Series(
                        "p95", [(float(v.version), v.latency_p95_ms or 0.0) for v in versions]
                    ),
                ],
                "version",
                "ms",
                "v{:.0f}",
            )
        )
    out.append(
        charts.line_chart(
            f"Mean latency per {report.bucket} (ms)",
            [charts.Series("mean latency", [(x(b.start), b.latency_mean_ms) for b in series])],
            x_label,
            "ms",
            x_format,
        )
    )
    return out


def _detail(
    request: Request, name: str, status: int = 200, form_error: str | None = None
) -> Response:
    from datetime import UTC, datetime

    from mlops.prompts import analytics

    params = request.query_params
    store = store_of(request)
    try:
        state = store.state(name)
        version = bounded_int(params.get("version"), len(state.versions), 1, len(state.versions))
        detail = store.detail(name, version)
    except MlopsError as exc:
        return error_page(request, exc)
    days = WINDOWS.get(params.get("days") or "7", 7)
    bucket: Bucket = "day" if params.get("bucket") == "day" else "hour"
    settings = settings_of(request)
    start = datetime.now(UTC) - timedelta(days=days)
    report = quiet(
        lambda: analytics.usage_report(settings.metadata_url, name, start, None, bucket), None
    )
    released = sorted(
        {e.version for e in detail.releases if e.event in ("publish", "rollback") and e.version}
    )
    link = linker(f"/prompts/{quote(name)}", {"version": params.get("version"), "days": days})
    moved = quiet(lambda: publishing.live_history(store, name).label_moved_outside, None)
    none: list[publications.PublicationInfo] = []
    waiting = quiet(
        lambda: publications.list_requests(settings, name, publications.AWAITING, 1), none
    )
    return page(
        request,
        "prompts/detail.html",
        status=status,
        t=detail,
        source=highlight_source(detail.template),
        latest=detail.latest_version,
        rollback_targets=[v for v in released if v != detail.published_version],
        report=report,
        usage_charts=_usage_charts(report) if report and report.total.calls else [],
        days=days,
        bucket=bucket,
        windows=sorted(WINDOWS.values()),
        link=link,
        form_error=form_error,
        notice=pop_notice(request),
        waiting=waiting[0] if waiting else None,
        label_moved_outside=moved,
    )


@router.get("/prompts/{name}", response_class=HTMLResponse, response_model=None)
def prompts_detail(request: Request, name: str) -> Response:
    """A version's highlighted source, metadata, releases, publish/rollback and usage."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _detail(request, name)


async def _release(request: Request, name: str, event: str) -> Response:
    from fastapi.concurrency import run_in_threadpool

    try:
        form = await checked_form(
            request,
            Role.APPROVER,
            "Rolling back a template" if event == "rollback" else "Publishing a template",
        )
    except REFUSED as exc:
        return error_page(request, exc)
    message = form_text(form, "message").strip()
    try:
        version = int(form_text(form, "version"))
        store = await run_in_threadpool(store_of, request)
        act = publishing.rollback if event == "rollback" else publications.publish_or_request
        result = await run_in_threadpool(act, store, name, version, caller_of(request), message)
    except ValueError:
        return await run_in_threadpool(_detail, request, name, 422, "Choose a version.")
    except MlopsError as exc:
        return await run_in_threadpool(_detail, request, name, exc.http_status, exc.message)
    if isinstance(result, publications.PublicationInfo):
        request.session[NOTICE] = (
            f"Version {result.version} of {name} awaits approval by {result.approvals_required} "
            "approver(s) other than you: the live version has not changed."
        )
        return RedirectResponse(f"/prompts/{quote(name)}", status_code=303)
    verb = "Rolled back to" if event == "rollback" else "Published"
    notes = [f"{verb} version {result.version} of {name} (tag {result.tag})."]
    if result.push_error:
        notes.append(f"The push failed: {result.push_error}")
    if result.mlflow and result.mlflow.error:
        notes.append(f"MLflow registration failed: {result.mlflow.error}")
    request.session[NOTICE] = " ".join(notes)
    return RedirectResponse(f"/prompts/{quote(name)}", status_code=303)


@router.post("/prompts/{name}/publish", response_model=None)
async def prompts_publish(request: Request, name: str) -> Response:
    """Make a version live (its examples must pass)."""
    return await _release(request, name, "publish")


@router.post("/prompts/{name}/rollback", response_model=None)
async def prompts_rollback(request: Request, name: str) -> Response:
    """Publish an earlier published version again."""
    return await _release(request, name, "rollback")


async def _decision(request: Request, request_id: str, decision: Decision) -> Response:
    from fastapi.concurrency import run_in_threadpool

    settings = settings_of(request)
    try:
        form = await checked_form(request, Role.APPROVER, "Deciding on a publication")
    except REFUSED as exc:
        return error_page(request, exc)
    try:
        waiting = await run_in_threadpool(publications.get_request, settings, request_id)
    except MlopsError as exc:
        return error_page(request, exc)
    name = waiting.template
    comment = form_text(form, "comment").strip()
    if not comment:
        return await run_in_threadpool(_detail, request, name, 422, "A decision needs a comment.")
    try:
        body = checked(DecisionRequest, {"comment": comment})
        store = await run_in_threadpool(store_of, request)
        done = await run_in_threadpool(
            publications.decide, store, request_id, request.state.principal, decision, body.comment
        )
    except MlopsError as exc:
        return await run_in_threadpool(_detail, request, name, exc.http_status, exc.message)
    request.session[NOTICE] = {
        "published": f"Published version {done.version} of {name}.",
        "rejected": f"The publication of version {done.version} of {name} was rejected.",
    }.get(done.status, f"Approved: {done.approvals_given} of {done.approvals_required}.")
    return RedirectResponse(f"/prompts/{quote(name)}", status_code=303)


@router.post("/prompts/publications/{request_id}/approve", response_model=None)
async def publication_approve(request: Request, request_id: str) -> Response:
    """Approve a publication awaiting approval; the last approval needed publishes it."""
    return await _decision(request, request_id, "approve")


@router.post("/prompts/publications/{request_id}/reject", response_model=None)
async def publication_reject(request: Request, request_id: str) -> Response:
    """Reject a publication awaiting approval: the live version is unchanged."""
    return await _decision(request, request_id, "reject")


@router.post("/prompts/{name}/acknowledge", response_model=None)
async def prompts_acknowledge(request: Request, name: str) -> Response:
    """Acknowledge the live tag moved outside the platform, with a comment."""
    from fastapi.concurrency import run_in_threadpool

    try:
        form = await checked_form(request, Role.APPROVER, "Acknowledging a move of the live tag")
    except REFUSED as exc:
        return error_page(request, exc)
    try:
        body = checked(DecisionRequest, {"comment": form_text(form, "comment").strip()})
        store = await run_in_threadpool(store_of, request)
        await run_in_threadpool(
            publishing.acknowledge_label_move, store, name, request.state.principal, body.comment
        )
    except MlopsError as exc:
        return await run_in_threadpool(_detail, request, name, exc.http_status, exc.message)
    request.session[NOTICE] = f"Acknowledged: the live tag of {name} is back on the release."
    return RedirectResponse(f"/prompts/{quote(name)}", status_code=303)
