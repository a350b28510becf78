"""The editor's preview: one input per declared variable, and an unsaved draft rendered in
the sandbox the store renders in (its includes read at the base version), with the failing
line of a render error. A preview records no usage event."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from mlops.errors import InvalidInputError, MlopsError
from mlops.web.prompts.common import form_text, highlight_source

if TYPE_CHECKING:
    from mlops.prompts.models import PromptMetadata, VariableSpec
    from mlops.prompts.store import PromptStore


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


def variable_fields(
    metadata: PromptMetadata, form: dict[str, Any] | None = None
) -> list[VariableField]:
    """One field per declared variable: the posted value, else the first example's, else
    the declared default."""
    example = metadata.examples[0].variables if metadata.examples else {}
    fields = []
    for name, spec in metadata.variables.items():
        if form is not None and f"var.{name}" in form:
            value = form_text(form, f"var.{name}")
        else:
            value = _as_text(example.get(name, spec.default))
        fields.append(VariableField(name, spec, value))
    return fields


def _parse_variables(metadata: PromptMetadata, form: dict[str, Any]) -> dict[str, Any]:
    """The variables form as typed values; an empty field is left out (its default applies)."""
    import yaml

    from mlops.prompts.rendering import RenderError

    values: dict[str, Any] = {}
    for item in variable_fields(metadata, form):
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


def error_line(exc: Exception, source: str) -> int | None:
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


def render_preview(
    store: PromptStore,
    name: str,
    base_sha: str | None,
    source: str,
    metadata_text: str,
    form: dict[str, Any],
) -> Preview:
    """Render an unsaved draft in the store's sandbox (its includes read at `base_sha`)."""
    from mlops.prompts.metadata import parse_metadata
    from mlops.prompts.models import check_name
    from mlops.prompts.rendering import RenderError

    try:
        metadata = parse_metadata(metadata_text)
    except InvalidInputError as exc:
        return Preview(problem=Problem(exc.message, "metadata", where="prompt.yaml"))
    fields = variable_fields(metadata, form)
    try:
        check_name(name)
    except MlopsError:
        name = "untitled"
    try:
        store.check_draft(name, source, metadata, base_sha)  # a broken draft before its values
        variables = _parse_variables(metadata, form)
        output = store.preview(name, source, metadata, variables, base_sha)
    except RenderError as exc:
        line = error_line(exc, source)
        problem = Problem(exc.message, exc.kind, line)
        return Preview(
            problem=problem, source=highlight_source(source, mark=line), variables=fields
        )
    except InvalidInputError as exc:
        return Preview(problem=Problem(exc.message, "invalid"), variables=fields)
    return Preview(output=output, variables=fields)
