"""Prompt governance endpoints: templates in git, versions, diff, publish, rollback, archive,
sandboxed render, downstream outcomes and usage analytics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, field_validator, model_validator

from mlops.api.deps import Approver, Researcher, SettingsDep, read_access
from mlops.api.errors import READ_ERRORS, WRITE_ERRORS
from mlops.approvals import DecisionRequest
from mlops.errors import InvalidInputError, MlopsError
from mlops.fields import TimeInRange, VersionNumber
from mlops.prompts import analytics, publications, publishing, usage
from mlops.prompts.models import (
    MAX_TEMPLATE_BYTES,
    Bucket,
    ExamplesReport,
    Label,
    PromptMetadata,
    PublishResult,
    RenderResult,
    TemplateDetail,
    TemplateDiff,
    TemplateSummary,
    UsageReport,
    VersionInfo,
    check_name,
)
from mlops.prompts.publications import PublicationInfo
from mlops.prompts.repository import check_author
from mlops.prompts.store import PromptStore, open_store
from mlops.settings import Settings


@asynccontextmanager
async def _prompt_store_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open (or seed) the prompt repository at start; write buffered usage at shutdown."""
    try:
        await run_in_threadpool(open_store, app.state.settings)
    except MlopsError as exc:
        log.error("The prompt repository could not be opened: %s", exc.message)
    yield
    await run_in_threadpool(usage.flush_all)


log = logging.getLogger("mlops.api.prompts")
router = APIRouter(
    prefix="/prompt-governance",
    tags=["prompt-governance"],
    dependencies=[Depends(read_access)],
    responses=READ_ERRORS,
    lifespan=_prompt_store_lifespan,
)
_TEMPLATE_TEXT = Field(max_length=MAX_TEMPLATE_BYTES * 2, description="Jinja2 source.")


class _Authored(BaseModel):
    message: str = Field(default="", max_length=2000, description="Commit message.")
    author: str | None = Field(
        default=None,
        max_length=200,
        description="Commit author (default: the caller); no '<', '>' or control characters.",
    )

    @field_validator("author")
    @classmethod
    def _valid_author(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_author(value)
            except InvalidInputError as exc:
                raise ValueError(exc.message) from None
        return value


class _WithMetadata(_Authored):
    metadata: PromptMetadata | None = None
    metadata_yaml: str | None = Field(
        default=None, max_length=MAX_TEMPLATE_BYTES, description="prompt.yaml text instead."
    )

    @model_validator(mode="after")
    def _one_metadata(self) -> _WithMetadata:
        if self.metadata is not None and self.metadata_yaml is not None:
            raise ValueError("send metadata or metadata_yaml, not both")
        return self

    def metadata_input(self) -> PromptMetadata | str | None:
        return self.metadata if self.metadata is not None else self.metadata_yaml


class CreateTemplateRequest(_WithMetadata):
    name: str = Field(description="Lowercase letters, digits, '_' and '-', up to 100.")
    template: str = _TEMPLATE_TEXT


class UpdateTemplateRequest(_WithMetadata):
    base_version: VersionNumber = Field(description="The version this edit was based on.")
    template: str | None = Field(default=None, max_length=MAX_TEMPLATE_BYTES * 2)


class ReleaseRequest(BaseModel):
    version: VersionNumber
    message: str = Field(default="", max_length=2000)


class ArchiveRequest(BaseModel):
    message: str = Field(default="", max_length=2000)


class RenderRequest(BaseModel):
    variables: dict[str, Any] = Field(default_factory=dict)
    version: VersionNumber | None = Field(default=None, description="A version number...")
    label: Label | None = Field(default=None, description="...or a label (default production).")


class PreviewRequest(BaseModel):
    name: str = Field(description="The template the draft is of (a new one's name too).")
    template: str = _TEMPLATE_TEXT
    metadata: PromptMetadata = Field(default_factory=PromptMetadata)
    variables: dict[str, Any] = Field(default_factory=dict)
    base_version: VersionNumber | None = Field(
        default=None, description="Read the draft's includes at this version (default: latest)."
    )


class PreviewResult(BaseModel):
    name: str
    output: str


class OutcomeRequest(BaseModel):
    success: bool = Field(description="Did the downstream call that used the render succeed?")
    detail: str = Field(default="", max_length=2000)


class OutcomeResponse(BaseModel):
    render_id: str
    outcome: str


def _store(settings: Settings) -> PromptStore:
    return open_store(settings)


@router.get("/templates", response_model=list[TemplateSummary])
def list_templates(
    settings: SettingsDep,
    include_archived: bool = False,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> list[TemplateSummary]:
    """Templates with latest and published version, status, last update and call count."""
    return _store(settings).list_templates(include_archived, q)


@router.post(
    "/templates",
    responses=WRITE_ERRORS,
    response_model=TemplateDetail,
    status_code=status.HTTP_201_CREATED,
)
def create_template(
    body: CreateTemplateRequest, settings: SettingsDep, caller: Researcher
) -> TemplateDetail:
    """Create a template (version 1, one commit)."""
    metadata = body.metadata_input()
    return _store(settings).create(
        body.name,
        body.template,
        metadata if metadata is not None else PromptMetadata(),
        body.author or caller.name,
        caller.name,
        body.message,
    )


@router.get("/templates/{name}", response_model=TemplateDetail)
def get_template(
    name: str, settings: SettingsDep, version: VersionNumber | None = None
) -> TemplateDetail:
    """A template at its latest version (or `version`), with metadata and release events."""
    return _store(settings).detail(name, version)


@router.put("/templates/{name}", responses=WRITE_ERRORS, response_model=TemplateDetail)
def update_template(
    name: str, body: UpdateTemplateRequest, settings: SettingsDep, caller: Researcher
) -> TemplateDetail:
    """Commit a new version; 409 with the current version when `base_version` is stale."""
    return _store(settings).update(
        name,
        body.base_version,
        body.template,
        body.metadata_input(),
        body.author or caller.name,
        caller.name,
        body.message,
    )


@router.get("/templates/{name}/versions", response_model=list[VersionInfo])
def template_versions(name: str, settings: SettingsDep) -> list[VersionInfo]:
    """Every version, oldest first (sha, author, time, message, published, live)."""
    return _store(settings).history(name)


@router.get("/templates/{name}/diff", response_model=TemplateDiff)
def template_diff(
    name: str,
    settings: SettingsDep,
    from_version: Annotated[VersionNumber, Query(alias="from")],
    to_version: Annotated[VersionNumber, Query(alias="to")],
) -> TemplateDiff:
    """Unified diffs of the template and its metadata between two versions."""
    return _store(settings).diff(name, from_version, to_version)


@router.get("/templates/{name}/live-history", response_model=publishing.LiveHistory)
def live_history(
    name: str,
    settings: SettingsDep,
    at: Annotated[
        datetime | None,
        Query(description="A moment (ISO 8601; UTC if no offset): which version was live then."),
    ] = None,
) -> publishing.LiveHistory:
    """Every move of the live label (publish, rollback): who, when, from which version to
    which, why, with whose approval; with `at`, the version live then; and whether the
    label's git tag was moved outside the platform."""
    return publishing.live_history(_store(settings), name, at)


@router.post(
    "/templates/{name}/publish",
    responses=WRITE_ERRORS,
    response_model=PublishResult | PublicationInfo,
)
def publish_template(
    name: str, body: ReleaseRequest, settings: SettingsDep, caller: Approver, response: Response
) -> PublishResult | PublicationInfo:
    """Make a version live (its examples must pass): tag, label, push, MLflow. When
    publications need approvals (`prompts: {approvals: N}` in config/gates.yaml), 202 with
    the publication request that now awaits them instead."""
    store = _store(settings)
    result = publications.publish_or_request(store, name, body.version, caller.name, body.message)
    if isinstance(result, PublicationInfo):
        response.status_code = status.HTTP_202_ACCEPTED
    return result


@router.post("/templates/{name}/acknowledge", responses=WRITE_ERRORS, response_model=TemplateDetail)
def acknowledge_label_move(
    name: str, body: DecisionRequest, settings: SettingsDep, caller: Approver
) -> TemplateDetail:
    """Acknowledge the live tag moved outside the platform (`git tag -f`): recorded as a
    release event, the tag goes back on the recorded release and rollbacks run again; 409
    when there is none."""
    return publishing.acknowledge_label_move(_store(settings), name, caller, body.comment)


@router.get("/publications", response_model=list[PublicationInfo])
def list_publications(
    settings: SettingsDep,
    template: str | None = None,
    state: Annotated[
        str | None, Query(alias="status", description="awaiting_approval, published, rejected")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[PublicationInfo]:
    """Publication requests (publications that waited for approvers), newest first."""
    return publications.list_requests(settings, template, state, limit)


@router.get("/publications/{request_id}", response_model=PublicationInfo)
def get_publication(request_id: str, settings: SettingsDep) -> PublicationInfo:
    """A publication request with its approvers' decisions."""
    return publications.get_request(settings, request_id)


@router.post(
    "/publications/{request_id}/approve", responses=WRITE_ERRORS, response_model=PublicationInfo
)
def approve_publication(
    request_id: str, body: DecisionRequest, settings: SettingsDep, caller: Approver
) -> PublicationInfo:
    """Approve a publication awaiting approval (approvers other than its requester, once
    each); the approval that completes the count publishes the version."""
    return publications.decide(_store(settings), request_id, caller, "approve", body.comment)


@router.post(
    "/publications/{request_id}/reject", responses=WRITE_ERRORS, response_model=PublicationInfo
)
def reject_publication(
    request_id: str, body: DecisionRequest, settings: SettingsDep, caller: Approver
) -> PublicationInfo:
    """Reject a publication awaiting approval: the live version is unchanged."""
    return publications.decide(_store(settings), request_id, caller, "reject", body.comment)


@router.post("/templates/{name}/rollback", responses=WRITE_ERRORS, response_model=PublishResult)
def rollback_template(
    name: str, body: ReleaseRequest, settings: SettingsDep, caller: Approver
) -> PublishResult:
    """Publish an older version again, as a new recorded event."""
    return publishing.rollback(_store(settings), name, body.version, caller.name, body.message)


@router.post("/templates/{name}/archive", responses=WRITE_ERRORS, response_model=TemplateDetail)
def archive_template(
    name: str, body: ArchiveRequest, settings: SettingsDep, caller: Approver
) -> TemplateDetail:
    """Hide a template from listings; its history stays."""
    return publishing.set_archived(_store(settings), name, True, caller.name, body.message)


@router.post("/templates/{name}/restore", responses=WRITE_ERRORS, response_model=TemplateDetail)
def restore_template(
    name: str, body: ArchiveRequest, settings: SettingsDep, caller: Approver
) -> TemplateDetail:
    """Bring an archived template back."""
    return publishing.set_archived(_store(settings), name, False, caller.name, body.message)


@router.post("/templates/{name}/render", responses=WRITE_ERRORS, response_model=RenderResult)
def render_template(
    name: str, body: RenderRequest, settings: SettingsDep, caller: Researcher
) -> RenderResult:
    """Render in the sandbox; records a usage event whose id is `render_id`."""
    return _store(settings).render(name, body.variables, caller.name, body.version, body.label)


@router.post("/preview", responses=WRITE_ERRORS, response_model=PreviewResult)
def preview_template(body: PreviewRequest, settings: SettingsDep) -> PreviewResult:
    """Check and render an unsaved draft in the sandbox, as the console's editor previews
    it: nothing is saved and no usage event is recorded (422 `render_failed` says why a
    draft does not render)."""
    check_name(body.name)
    store = _store(settings)
    base = store.record(body.name, body.base_version).commit.sha if body.base_version else None
    output = store.preview(body.name, body.template, body.metadata, body.variables, base)
    return PreviewResult(name=body.name, output=output)


@router.post("/templates/{name}/test", responses=WRITE_ERRORS, response_model=ExamplesReport)
def test_template(
    name: str, settings: SettingsDep, version: VersionNumber | None = None
) -> ExamplesReport:
    """Run the examples of a version (default latest) against their expected output."""
    return _store(settings).run_examples(name, version)


@router.post("/renders/{render_id}/outcome", responses=WRITE_ERRORS, response_model=OutcomeResponse)
def report_outcome(
    render_id: str, body: OutcomeRequest, settings: SettingsDep, caller: Researcher
) -> OutcomeResponse:
    """Report whether the downstream call that used a render succeeded (once per render)."""
    usage.report_outcome(settings.metadata_url, render_id, body.success, body.detail)
    return OutcomeResponse(render_id=render_id, outcome="success" if body.success else "failure")


@router.get("/templates/{name}/usage", response_model=UsageReport)
def template_usage(
    name: str,
    settings: SettingsDep,
    start: TimeInRange | None = None,
    end: TimeInRange | None = None,
    bucket: Bucket = "hour",
) -> UsageReport:
    """Calls, success rate, failures by kind, latency p50/p95: total, per version, per bucket."""
    _store(settings).state(name)
    return analytics.usage_report(settings.metadata_url, name, start, end, bucket)
