"""The card grid of templates: name, description, latest and published version, status,
calls; searched, with archived ones on request, paged."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mlops.errors import MlopsError
from mlops.web.common import bounded_int, error_page, linker, needs_reading, page
from mlops.web.prompts.common import paginate, pop_notice, store_of

router = APIRouter(include_in_schema=False)

CARDS_PER_PAGE = 24


@router.get("/prompts", response_class=HTMLResponse, response_model=None)
def prompts_index(request: Request) -> Response:
    """The card grid: name, description, latest and published version, status, calls."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    params = request.query_params
    q = (params.get("q") or "").strip()[:200]
    archived = params.get("archived") == "1"
    try:
        items = store_of(request).list_templates(archived, q or None)
    except MlopsError as exc:
        return error_page(request, exc)
    number, count, offset = paginate(len(items), CARDS_PER_PAGE, bounded_int(params.get("page"), 1))
    link = linker("/prompts", {"q": q, "archived": "1" if archived else None, "page": number})
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
        notice=pop_notice(request),
    )
