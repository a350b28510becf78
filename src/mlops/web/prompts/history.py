"""A template's git-style history (every version, newest first) and the highlighted diffs of
its template and prompt.yaml between any two versions."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from mlops.errors import MlopsError
from mlops.web.common import bounded_int, error_page, linker, needs_reading, page
from mlops.web.prompts.common import paginate, store_of

router = APIRouter(include_in_schema=False)

VERSIONS_PER_PAGE = 50


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


@router.get("/prompts/{name}/history", response_class=HTMLResponse, response_model=None)
def prompts_history(request: Request, name: str) -> Response:
    """Every version, newest first, with a form to diff any two."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    try:
        history = store_of(request).history(name)
    except MlopsError as exc:
        return error_page(request, exc)
    newest = list(reversed(history))
    number, count, offset = paginate(
        len(newest), VERSIONS_PER_PAGE, bounded_int(request.query_params.get("page"), 1)
    )
    return page(
        request,
        "prompts/history.html",
        tname=name,
        versions=newest[offset : offset + VERSIONS_PER_PAGE],
        latest=len(history),
        number=number,
        pages=count,
        link=linker(f"/prompts/{quote(name)}/history", {"page": number}),
    )


@router.get("/prompts/{name}/diff", response_class=HTMLResponse, response_model=None)
def prompts_diff(request: Request, name: str) -> Response:
    """The template and prompt.yaml diffs between two versions, highlighted."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    store = store_of(request)
    try:
        latest = len(store.state(name).versions)
        params = request.query_params
        new = bounded_int(params.get("to"), latest, 1, latest)
        old = bounded_int(params.get("from"), max(new - 1, 1), 1, latest)
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
