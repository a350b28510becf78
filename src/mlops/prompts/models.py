"""Schemas of prompt governance: template metadata (`prompt.yaml`), versions, renders, usage."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlops.errors import InvalidInputError, UnsafePathError
from mlops.fields import UtcDatetime

MAX_NAME_LENGTH = 100
MAX_TEMPLATE_BYTES = 100 * 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")

VariableType = Literal["string", "integer", "number", "boolean", "list", "object", "any"]
Status = Literal["draft", "published", "archived"]
Label = Literal["production", "latest"]
Bucket = Literal["hour", "day"]


def check_name(name: str) -> str:
    """A template name is one safe path component: lowercase letters, digits, `_` and `-`."""
    if len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name):
        return name
    if not name or len(name) > MAX_NAME_LENGTH:
        raise UnsafePathError(f"A template name has 1 to {MAX_NAME_LENGTH} characters.")
    if ".." in name or "/" in name or "\\" in name or name.startswith("~"):
        raise UnsafePathError(f"Template name {name!r} would leave the prompt repository.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise UnsafePathError("A template name may not contain control characters.")
    if not _NAME.fullmatch(name):
        raise UnsafePathError(
            f"Template name {name!r} is invalid: use lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit."
        )
    return name


def check_template_size(source: str) -> None:
    size = len(source.encode())
    if size > MAX_TEMPLATE_BYTES:
        raise InvalidInputError(
            f"The template is {size} bytes; the limit is {MAX_TEMPLATE_BYTES} bytes.",
            {"size": size, "limit": MAX_TEMPLATE_BYTES},
        )


class VariableSpec(BaseModel):
    """One declared template variable."""

    model_config = ConfigDict(extra="forbid")

    type: VariableType = "string"
    required: bool = True
    default: Any = None
    description: str = ""


class Example(BaseModel):
    """An example render: these variables must produce exactly this output."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    variables: dict[str, Any] = Field(default_factory=dict)
    expected: str


class PromptMetadata(BaseModel):
    """The content of `<name>/prompt.yaml`."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=2000)
    owner: str = Field(default="", max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=50)
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    examples: list[Example] = Field(default_factory=list, max_length=100)


class VersionInfo(BaseModel):
    """One version of a template: the N-th commit touching `<name>/`."""

    version: int
    sha: str
    author: str
    author_email: str
    committer: str
    time: UtcDatetime
    message: str
    published: bool = False
    live: bool = False


class ReleaseEvent(BaseModel):
    """One publish, rollback, archive or restore, kept in `.releases/<name>.yaml`; also an
    `external` move of the live tag seen by the platform (`git tag -f`; `sha` is where the
    tag pointed) and an approver's `acknowledge` of it."""

    event: Literal["publish", "rollback", "archive", "restore", "external", "acknowledge"]
    version: int | None = None
    sha: str | None = None
    by: str
    time: UtcDatetime
    message: str = ""
    approved_by: list[str] = Field(
        default_factory=list, description="The approvers of a publication that needed them."
    )


class TemplateSummary(BaseModel):
    name: str
    description: str
    owner: str
    tags: list[str]
    latest_version: int
    published_version: int | None
    status: Status
    updated: UtcDatetime
    calls: int


class TemplateDetail(TemplateSummary):
    version: int = Field(description="The version shown (latest unless asked otherwise).")
    sha: str
    template: str
    metadata: PromptMetadata
    releases: list[ReleaseEvent]


class TemplateDiff(BaseModel):
    name: str
    from_version: int
    to_version: int
    template_diff: str
    metadata_diff: str


class ExampleResult(BaseModel):
    name: str
    passed: bool
    expected: str
    output: str | None
    error: str | None = None


class ExamplesReport(BaseModel):
    name: str
    version: int
    passed: bool
    results: list[ExampleResult]


class MlflowRegistration(BaseModel):
    registered: bool
    prompt_version: int | None = None
    error: str | None = None


class PublishResult(BaseModel):
    name: str
    version: int
    sha: str
    event: Literal["publish", "rollback"]
    tag: str
    pushed: bool | None = Field(default=None, description="None: no remote configured.")
    push_error: str | None = None
    mlflow: MlflowRegistration | None = None


class RenderResult(BaseModel):
    render_id: str
    name: str
    version: int
    sha: str
    output: str
    latency_ms: float


class UsageGroup(BaseModel):
    calls: int
    successes: int
    success_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class VersionUsage(UsageGroup):
    version: int


class UsageBucket(BaseModel):
    start: UtcDatetime
    calls: int
    successes: int
    success_rate: float
    latency_mean_ms: float


class UsageReport(BaseModel):
    name: str
    start: UtcDatetime
    end: UtcDatetime
    bucket: Bucket
    total: UsageGroup
    failures_by_kind: dict[str, int]
    outcomes: dict[str, int] = Field(description="Reported downstream outcomes: success/failure.")
    versions: list[VersionUsage]
    series: list[UsageBucket]
