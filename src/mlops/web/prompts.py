"""The prompts section: a card grid of templates (version, status, calls), a read-only view
with Pygments-highlighted Jinja source, an editor (textarea, prompt.yaml, one input per
declared variable, a Preview button and a live preview fragment), git-style history with
highlighted diffs, publish and rollback, and usage charts.

Pages call the prompt store the API uses (`mlops.prompts.store.open_store`, `publishing`,
`analytics`, `rendering`): an edit is `PromptStore.update` with the base version the editor
was opened on (a stale base is refused, as in the API), the author of a commit is the form's
author or the caller (`console`), and the committer is always the caller. A preview renders
the unsaved draft in the same sandbox the store renders in and records no usage event."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from mlops.errors import AuthError, InvalidInputError, MlopsError
from mlops.web import charts
from mlops.web.common import checked_form, error_page, needs_reading, page, quiet, settings_of

if TYPE_CHECKING:
    from mlops.prompts.models import Bucket, PromptMetadata, UsageReport, VariableSpec
    from mlops.prompts.store import PromptStore

router = APIRouter(include_in_schema=False)

CALLER = "console"
CARDS_PER_PAGE = 24
VERSIONS_PER_PAGE = 50
DRAFT = "draft"
"""Pseudo commit of an unsaved edit in the preview sandbox."""
SANDBOX_KINDS = frozenset(
    {"syntax", "undeclared_variable", "security", "timeout", "output_limit", "recursion"}
)
"""Render failures that are defects of the template itself: an edit showing one is refused."""
WINDOWS = {"1": 1, "7": 7, "30": 30}
NOTICE = "prompts_notice"
NEW_METADATA = """description: ""
owner: ""
tags: []
variables:
  who:
    type: string
    description: Who to greet.
examples:
  - name: basic
    variables: {who: world}
    expected: Hello world!
"""


# ------------------------------------------------------------------------------ helpers


def _store(request: Request) -> PromptStore:
    from mlops.prompts.store import open_store

    return open_store(settings_of(request))


def _linker(path: str, params: Mapping[str, Any]) -> Callable[..., str]:
    """This page's URL with some query parameters changed (None or "" drops one)."""

    def link(**changes: Any) -> str:
        merged = {**params, **changes}
        query = {k: v for k, v in merged.items() if v not in (None, "", False)}
        return f"{path}?{urlencode(query)}" if query else path

    return link


def _int(value: str | None, default: int, low: int = 1, high: int = 10**9) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return min(max(number, low), high)


def _field(form: dict[str, Any], key: str) -> str:
    """A form value as text, with the browser's CRLF line ends of a textarea made LF."""
    values = form.get(key) or [""]
    return str(values[0]).replace("\r\n", "\n").replace("\r", "\n")


def _pages(total: int, size: int, number: int) -> tuple[int, int, int]:
    """(page number clamped, page count, offset)."""
    count = max(1, -(-total // size))
    number = min(max(number, 1), count)
    return number, count, (number - 1) * size


def _notice(request: Request) -> str | None:
    notice = request.session.pop(NOTICE, None)
    return notice if isinstance(notice, str) else None


def _highlight(source: str, language: str = "jinja", mark: int | None = None) -> Markup:
    """Source with Pygments' Jinja (or YAML) lexer, line numbers, and `mark` highlighted."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name

    formatter = HtmlFormatter(
        linenos="inline", cssclass="highlight", hl_lines=[mark] if mark else [], wrapcode=True
    )
    return Markup(highlight(source, get_lexer_by_name(language), formatter))


@dataclass
class DiffLine:
    kind: str
    """add, del, ctx, hunk or file."""
    sign: str
    html: Markup
    old: int | None = None
    new: int | None = None


def _diff_lines(diff: str, language: str) -> list[DiffLine]:
    """A unified diff as rows: the content of each line highlighted with the lexer."""
    import re

    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name

    lexer, formatter = get_lexer_by_name(language), HtmlFormatter(nowrap=True)
    rows: list[DiffLine] = []
    old = new = 0
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            rows.append(DiffLine("file", "", Markup.escape(line)))
        elif line.startswith("@@"):
            found = re.match(r"@@ -(\d+)(?:,\d+)? \+(\d+)", line)
            if found:
                old, new = int(found.group(1)), int(found.group(2))
            rows.append(DiffLine("hunk", "", Markup.escape(line)))
        elif line.startswith("\\"):
            rows.append(DiffLine("hunk", "", Markup.escape(line)))
        else:
            sign, text = line[:1], line[1:]
            html = Markup(highlight(text, lexer, formatter).rstrip("\n"))
            if sign == "+":
                rows.append(DiffLine("add", "+", html, None, new))
                new += 1
            elif sign == "-":
                rows.append(DiffLine("del", "-", html, old, None))
                old += 1
            else:
                rows.append(DiffLine("ctx", " ", html, old, new))
                old, new = old + 1, new + 1
    return rows


# ------------------------------------------------------------------------------ variables


@dataclass
class VariableField:
    name: str
    spec: VariableSpec
    value: str

    @property
    def widget(self) -> str:
        kinds = {"integer": "integer", "number": "number", "boolean": "boolean"}
        return kinds.get(self.spec.type, "text" if self.spec.type == "string" else "json")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _variable_fields(
    metadata: PromptMetadata, form: dict[str, Any] | None = None
) -> list[VariableField]:
    """One field per declared variable: the posted value, else the first example's, else
    the declared default."""
    example = metadata.examples[0].variables if metadata.examples else {}
    fields = []
    for name, spec in metadata.variables.items():
        if form is not None and f"var.{name}" in form:
            value = _field(form, f"var.{name}")
        else:
            value = _as_text(example.get(name, spec.default))
        fields.append(VariableField(name, spec, value))
    return fields


def _parse_variables(metadata: PromptMetadata, form: dict[str, Any]) -> dict[str, Any]:
    """The variables form as typed values; an empty field is left out (its default applies)."""
    import yaml

    from mlops.prompts.rendering import RenderError

    values: dict[str, Any] = {}
    for item in _variable_fields(metadata, form):
        text = item.value
        if not text.strip() and item.spec.type != "string":
            continue
        if not text and item.spec.type == "string":
            continue
        kind = item.spec.type
        try:
            if kind == "string":
                values[item.name] = text
            elif kind == "integer":
                values[item.name] = int(text.strip())
            elif kind == "number":
                number = float(text.strip())
                values[item.name] = int(number) if number.is_integer() else number
            elif kind == "boolean":
                if text.strip().lower() not in ("true", "false"):
                    raise ValueError("use true or false")
                values[item.name] = text.strip().lower() == "true"
            else:
                values[item.name] = yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise RenderError(
                "wrong_type",
                f"Variable '{item.name}' ({kind}): {text!r} is not a valid value ({exc}).",
                variable=item.name,
            ) from None
    return values


# ------------------------------------------------------------------------------ preview


@dataclass
class Problem:
    message: str
    kind: str
    line: int | None = None
    where: str = "template"


@dataclass
class Preview:
    output: str | None = None
    problem: Problem | None = None
    source: Markup | None = None
    """The draft highlighted with the failing line marked (when a line is known)."""
    variables: list[VariableField] = field(default_factory=list)


def _error_line(exc: Exception, source: str) -> int | None:
    """The template line of a render failure: from the error's details, the rendered
    template's frames in the traceback, or the first line naming an undeclared variable."""
    import re

    details = getattr(exc, "details", {}) or {}
    if isinstance(details.get("line"), int):
        return int(details["line"])
    line = None
    cause = exc.__cause__ or exc.__context__
    tb = cause.__traceback__ if cause is not None else None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is not None:
        return line
    names = details.get("variables") or ([details["variable"]] if "variable" in details else [])
    for name in names:
        for number, text in enumerate(source.splitlines(), start=1):
            if re.search(rf"\b{re.escape(str(name))}\b", text):
                return number
    return None


def _preview(
    store: PromptStore,
    name: str,
    base_sha: str | None,
    source: str,
    metadata_text: str,
    form: dict[str, Any],
) -> Preview:
    """Render an unsaved draft in the store's sandbox (its includes read at `base_sha`)."""
    from mlops.prompts.metadata import parse_metadata
    from mlops.prompts.models import check_name, check_template_size
    from mlops.prompts.rendering import (
        PromptEnvironment,
        RenderError,
        bind_variables,
        check_template,
        render_template,
    )
    from mlops.prompts.repository import TEMPLATE_FILE

    try:
        metadata = parse_metadata(metadata_text)
    except InvalidInputError as exc:
        return Preview(problem=Problem(exc.message, "metadata", where="prompt.yaml"))
    fields = _variable_fields(metadata, form)
    try:
        check_name(name)
    except MlopsError:
        name = "untitled"
    base = base_sha or store.repository.head_sha()

    def read(sha: str, template: str) -> str:
        if sha == DRAFT and template == name:
            return source
        if base is None:
            from mlops.errors import NotFoundError

            raise NotFoundError(f"No template {template!r}.")
        return store.repository.read(base, f"{template}/{TEMPLATE_FILE}")

    env = PromptEnvironment(read)
    try:
        check_template_size(source)
        check_template(env, source, metadata)
        bound = bind_variables(metadata.variables, _parse_variables(metadata, form))
        output = render_template(env, DRAFT, name, bound, store.settings.prompts_render_timeout_s)
    except RenderError as exc:
        line = _error_line(exc, source)
        problem = Problem(exc.message, exc.kind, line)
        return Preview(problem=problem, source=_highlight(source, mark=line), variables=fields)
    except InvalidInputError as exc:
        return Preview(problem=Problem(exc.message, "invalid"), variables=fields)
    return Preview(output=output, variables=fields)


# ------------------------------------------------------------------------------ list


@router.get("/prompts", response_class=HTMLResponse, response_model=None)
def prompts_index(request: Request) -> Response:
    """The card grid: name, description, latest and published version, status, calls."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    params = request.query_params
    q = (params.get("q") or "").strip()[:200]
    archived = params.get("archived") == "1"
    try:
        items = _store(request).list_templates(archived, q or None)
    except MlopsError as exc:
        return error_page(request, exc)
    number, count, offset = _pages(len(items), CARDS_PER_PAGE, _int(params.get("page"), 1))
    link = _linker("/prompts", {"q": q, "archived": "1" if archived else None, "page": number})
    return page(
        request,
        "prompts/index.html",
        items=items[offset : offset + CARDS_PER_PAGE],
        total=len(items),
        q=q,
        archived=archived,
        number=number,
        pages=count,
        link=link,
        notice=_notice(request),
    )


# ------------------------------------------------------------------------------ editor


def _editor(
    request: Request,
    *,
    name: str,
    creating: bool,
    source: str,
    metadata_text: str,
    base_version: int | None,
    form: dict[str, Any] | None = None,
    preview: Preview | None = None,
    form_error: Problem | None = None,
    status: int = 200,
    message: str = "",
    author: str = "",
) -> HTMLResponse:
    from mlops.prompts.metadata import parse_metadata

    fields = preview.variables if preview and preview.variables else []
    if not fields:
        metadata = quiet(lambda: parse_metadata(metadata_text), None)
        fields = _variable_fields(metadata, form) if metadata is not None else []
    return page(
        request,
        "prompts/editor.html",
        status=status,
        tname=name,
        creating=creating,
        source=source,
        metadata_text=metadata_text,
        base_version=base_version,
        fields=fields,
        preview=preview,
        form_error=form_error,
        message=message,
        author=author,
    )


@router.get("/prompts/_new", response_class=HTMLResponse, response_model=None)
def prompts_new(request: Request) -> Response:
    """The editor of a new template."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    source = "Hello {{ who }}!\n"
    preview = _preview(_store(request), "", None, source, NEW_METADATA, {})
    return _editor(
        request,
        name="",
        creating=True,
        source=source,
        metadata_text=NEW_METADATA,
        base_version=None,
        preview=preview,
    )


@router.post("/prompts/_new", response_model=None)
async def prompts_create(request: Request) -> Response:
    """Preview the draft, or create the template (version 1) when it renders."""
    return await _save(request, None)


@router.get("/prompts/{name}/edit", response_class=HTMLResponse, response_model=None)
def prompts_edit(request: Request, name: str) -> Response:
    """The editor on the latest version: source, prompt.yaml, variables and preview."""
    from mlops.prompts.repository import METADATA_FILE

    if (redirect := needs_reading(request)) is not None:
        return redirect
    try:
        store = _store(request)
        detail = store.detail(name)
        metadata_text = store.repository.read(detail.sha, f"{name}/{METADATA_FILE}")
    except MlopsError as exc:
        return error_page(request, exc)
    preview = _preview(store, name, detail.sha, detail.template, metadata_text, {})
    return _editor(
        request,
        name=name,
        creating=False,
        source=detail.template,
        metadata_text=metadata_text,
        base_version=detail.version,
        preview=preview,
    )


@router.post("/prompts/{name}/edit", response_model=None)
async def prompts_update(request: Request, name: str) -> Response:
    """Preview the draft, or commit it as a new version on the base version it was opened on."""
    return await _save(request, name)


async def _save(request: Request, name: str | None) -> Response:
    from fastapi.concurrency import run_in_threadpool

    from mlops.prompts.repository import check_author

    creating = name is None
    try:
        form = await checked_form(request)
    except AuthError as exc:
        return error_page(request, exc)
    target = _field(form, "name").strip() if creating else str(name)
    source, metadata_text = _field(form, "template"), _field(form, "metadata")
    message, author = _field(form, "message").strip(), _field(form, "author").strip()
    base_version = None if creating else _int(_field(form, "base_version"), 0, 0)
    action = _field(form, "action") or "preview"
    store = await run_in_threadpool(_store, request)

    def again(
        status: int, preview: Preview | None = None, problem: Problem | None = None
    ) -> Response:
        return _editor(
            request,
            name=target,
            creating=creating,
            source=source,
            metadata_text=metadata_text,
            base_version=base_version,
            form=form,
            preview=preview,
            form_error=problem,
            status=status,
            message=message,
            author=author,
        )

    try:
        base_sha = None if creating else store.record(target).commit.sha
    except MlopsError as exc:
        return error_page(request, exc)
    preview = await run_in_threadpool(
        _preview, store, target, base_sha, source, metadata_text, form
    )
    if action != "commit":
        return again(200, preview)
    if preview.problem is not None and (
        preview.problem.kind in SANDBOX_KINDS or preview.problem.where == "prompt.yaml"
    ):
        return again(422, preview, preview.problem)
    try:
        if author:
            check_author(author)
        if creating:
            detail = await run_in_threadpool(
                store.create,
                target,
                source,
                metadata_text,
                author or CALLER,
                CALLER,
                message,
            )
        else:
            detail = await run_in_threadpool(
                store.update,
                target,
                base_version or 0,
                source,
                metadata_text,
                author or CALLER,
                CALLER,
                message,
            )
    except MlopsError as exc:
        line = _error_line(exc, source) if "kind" in exc.details else None
        problem = Problem(exc.message, str(exc.details.get("kind", exc.code)), line)
        return again(exc.http_status, preview, problem)
    request.session[NOTICE] = f"Committed version {detail.version} of {detail.name}."
    return RedirectResponse(f"/prompts/{quote(detail.name)}", status_code=303)


@router.post("/prompts/_preview", response_class=HTMLResponse, response_model=None)
async def prompts_preview_fragment(request: Request) -> Response:
    """The preview of the editor's draft as an HTML fragment (for `prompts.js`)."""
    from fastapi.concurrency import run_in_threadpool

    try:
        form = await checked_form(request)
    except AuthError as exc:
        return page(request, "prompts/_preview.html", status=exc.http_status, auth_error=exc)
    name = _field(form, "name").strip()
    store = await run_in_threadpool(_store, request)
    base_sha = None
    if _field(form, "base_version"):
        try:
            base_sha = store.record(name).commit.sha
        except MlopsError as exc:
            return page(request, "prompts/_preview.html", status=exc.http_status, auth_error=exc)
    preview = await run_in_threadpool(
        _preview, store, name, base_sha, _field(form, "template"), _field(form, "metadata"), form
    )
    return page(request, "prompts/_preview.html", preview=preview)


# ------------------------------------------------------------------------------ detail


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
    store = _store(request)
    try:
        state = store.state(name)
        version = _int(params.get("version"), len(state.versions), 1, len(state.versions))
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
    link = _linker(f"/prompts/{quote(name)}", {"version": params.get("version"), "days": days})
    return page(
        request,
        "prompts/detail.html",
        status=status,
        t=detail,
        source=_highlight(detail.template),
        latest=detail.latest_version,
        rollback_targets=[v for v in released if v != detail.published_version],
        report=report,
        usage_charts=_usage_charts(report) if report and report.total.calls else [],
        days=days,
        bucket=bucket,
        windows=sorted(WINDOWS.values()),
        link=link,
        form_error=form_error,
        notice=_notice(request),
    )


@router.get("/prompts/{name}", response_class=HTMLResponse, response_model=None)
def prompts_detail(request: Request, name: str) -> Response:
    """A version's highlighted source, metadata, releases, publish/rollback and usage."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _detail(request, name)


async def _release(request: Request, name: str, event: str) -> Response:
    from fastapi.concurrency import run_in_threadpool

    from mlops.prompts import publishing

    try:
        form = await checked_form(request)
    except AuthError as exc:
        return error_page(request, exc)
    message = _field(form, "message").strip()
    try:
        version = int(_field(form, "version"))
        store = await run_in_threadpool(_store, request)
        act = publishing.rollback if event == "rollback" else publishing.publish
        result = await run_in_threadpool(act, store, name, version, CALLER, message)
    except ValueError:
        return await run_in_threadpool(_detail, request, name, 422, "Choose a version.")
    except MlopsError as exc:
        return await run_in_threadpool(_detail, request, name, exc.http_status, exc.message)
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


# ------------------------------------------------------------------------------ history


@router.get("/prompts/{name}/history", response_class=HTMLResponse, response_model=None)
def prompts_history(request: Request, name: str) -> Response:
    """Every version, newest first, with a form to diff any two."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    try:
        history = _store(request).history(name)
    except MlopsError as exc:
        return error_page(request, exc)
    newest = list(reversed(history))
    number, count, offset = _pages(
        len(newest), VERSIONS_PER_PAGE, _int(request.query_params.get("page"), 1)
    )
    return page(
        request,
        "prompts/history.html",
        tname=name,
        versions=newest[offset : offset + VERSIONS_PER_PAGE],
        latest=len(history),
        number=number,
        pages=count,
        link=_linker(f"/prompts/{quote(name)}/history", {"page": number}),
    )


@router.get("/prompts/{name}/diff", response_class=HTMLResponse, response_model=None)
def prompts_diff(request: Request, name: str) -> Response:
    """The template and prompt.yaml diffs between two versions, highlighted."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    store = _store(request)
    try:
        latest = len(store.state(name).versions)
        params = request.query_params
        new = _int(params.get("to"), latest, 1, latest)
        old = _int(params.get("from"), max(new - 1, 1), 1, latest)
        diff = store.diff(name, old, new)
    except MlopsError as exc:
        return error_page(request, exc)
    return page(
        request,
        "prompts/diff.html",
        tname=name,
        diff=diff,
        latest=latest,
        template_rows=_diff_lines(diff.template_diff, "jinja"),
        metadata_rows=_diff_lines(diff.metadata_diff, "yaml"),
    )
