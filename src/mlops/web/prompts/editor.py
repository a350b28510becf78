"""The editor of a new or an existing template: textarea, prompt.yaml, one input per
declared variable, a Preview button and the live preview fragment (`prompts.js`). An edit
is `PromptStore.update` with the base version the editor was opened on (a stale base is
refused, as in the API); the author of a commit is the form's author or the caller
(`console`), and the committer is always the caller."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlops.errors import MlopsError
from mlops.roles import Role
from mlops.web.common import (
    REFUSED,
    bounded_int,
    caller_of,
    checked_form,
    error_page,
    needs_reading,
    page,
    quiet,
)
from mlops.web.prompts.common import NOTICE, form_text, store_of
from mlops.web.prompts.preview import Preview, Problem, error_line, render_preview, variable_fields

router = APIRouter(include_in_schema=False)

SANDBOX_KINDS = frozenset(
    {"syntax", "undeclared_variable", "security", "timeout", "output_limit", "recursion"}
)
"""Render failures that are defects of the template itself: an edit showing one is refused."""
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
        fields = variable_fields(metadata, form) if metadata is not None else []
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
    preview = render_preview(store_of(request), "", None, source, NEW_METADATA, {})
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
        store = store_of(request)
        detail = store.detail(name)
        metadata_text = store.repository.read(detail.sha, f"{name}/{METADATA_FILE}")
    except MlopsError as exc:
        return error_page(request, exc)
    preview = render_preview(store, name, detail.sha, detail.template, metadata_text, {})
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
        form = await checked_form(request, Role.RESEARCHER, "Saving a template")
    except REFUSED as exc:
        return error_page(request, exc)
    target = form_text(form, "name").strip() if creating else str(name)
    source, metadata_text = form_text(form, "template"), form_text(form, "metadata")
    message, author = form_text(form, "message").strip(), form_text(form, "author").strip()
    base_version = None if creating else bounded_int(form_text(form, "base_version"), 0, 0)
    action = form_text(form, "action") or "preview"
    store = await run_in_threadpool(store_of, request)

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
        render_preview, store, target, base_sha, source, metadata_text, form
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
                author or caller_of(request),
                caller_of(request),
                message,
            )
        else:
            detail = await run_in_threadpool(
                store.update,
                target,
                base_version or 0,
                source,
                metadata_text,
                author or caller_of(request),
                caller_of(request),
                message,
            )
    except MlopsError as exc:
        line = error_line(exc, source) if "kind" in exc.details else None
        problem = Problem(exc.message, str(exc.details.get("kind", exc.code)), line)
        return again(exc.http_status, preview, problem)
    request.session[NOTICE] = f"Committed version {detail.version} of {detail.name}."
    return RedirectResponse(f"/prompts/{quote(detail.name)}", status_code=303)


@router.post("/prompts/_preview", response_class=HTMLResponse, response_model=None)
async def prompts_preview_fragment(request: Request) -> Response:
    """The preview of the editor's draft as an HTML fragment (for `prompts.js`)."""
    from fastapi.concurrency import run_in_threadpool

    try:
        form = await checked_form(request, Role.VIEWER, "Previewing a template")
    except REFUSED as exc:
        return page(request, "prompts/_preview.html", status=exc.http_status, auth_error=exc)
    name = form_text(form, "name").strip()
    store = await run_in_threadpool(store_of, request)
    base_sha = None
    if form_text(form, "base_version"):
        try:
            base_sha = store.record(name).commit.sha
        except MlopsError as exc:
            return page(request, "prompts/_preview.html", status=exc.http_status, auth_error=exc)
    preview = await run_in_threadpool(
        render_preview,
        store,
        name,
        base_sha,
        form_text(form, "template"),
        form_text(form, "metadata"),
        form,
    )
    return page(request, "prompts/_preview.html", preview=preview)
