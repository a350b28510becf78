"""What the prompts pages share: the prompt store of the request, form and query values,
paging, the notice shown after a redirect, and Pygments highlighting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request
from markupsafe import Markup

from mlops.web.common import settings_of

if TYPE_CHECKING:
    from mlops.prompts.store import PromptStore

NOTICE = "prompts_notice"


def store_of(request: Request) -> PromptStore:
    from mlops.prompts.store import open_store

    return open_store(settings_of(request))


def form_text(form: dict[str, Any], key: str) -> str:
    """A form value as text, with the browser's CRLF line ends of a textarea made LF."""
    values = form.get(key) or [""]
    return str(values[0]).replace("\r\n", "\n").replace("\r", "\n")


def paginate(total: int, size: int, number: int) -> tuple[int, int, int]:
    """(page number clamped, page count, offset)."""
    count = max(1, -(-total // size))
    number = min(max(number, 1), count)
    return number, count, (number - 1) * size


def pop_notice(request: Request) -> str | None:
    notice = request.session.pop(NOTICE, None)
    return notice if isinstance(notice, str) else None


def highlight_source(source: str, language: str = "jinja", mark: int | None = None) -> Markup:
    """Source with Pygments' Jinja (or YAML) lexer, line numbers, and `mark` highlighted."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name

    formatter = HtmlFormatter(
        linenos="inline", cssclass="highlight", hl_lines=[mark] if mark else [], wrapcode=True
    )
    return Markup(highlight(source, get_lexer_by_name(language), formatter))
