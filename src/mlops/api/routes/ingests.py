"""Ingest endpoints: upload files of daily bars to ingest them, and follow the run."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import Field, ValidationError

from mlops.api.deps import Researcher, SettingsDep, read_access
from mlops.api.errors import READ_ERRORS
from mlops.api.gate import body_limit
from mlops.api.started import answer_started, started_responses
from mlops.errors import InvalidInputError, problems
from mlops.features.ingest import IngestRunInfo
from mlops.fields import RecordNumber
from mlops.settings import Settings
from mlops.usecases import ingests as use
from mlops.usecases.ingests import IngestOptions
from mlops.usecases.started import Started

router = APIRouter(
    prefix="/ingests", tags=["features"], dependencies=[Depends(read_access)], responses=READ_ERRORS
)
UPLOAD_OVERHEAD = 1024**2
"""Room for the multipart framing and the options beside the files' own bytes."""


class IngestRun(IngestRunInfo):
    """An ingest run as the API shows it: the record, and where to follow it."""

    status_url: str = Field(description="Where the run's steps and outcome are read.")


def _run_of(request: Request, info: IngestRunInfo) -> IngestRun:
    url = request.app.url_path_for("get_ingest", run_id=info.id)
    return IngestRun(**dict(info), status_url=str(url))


def _upload_limit(settings: Settings) -> int:
    return settings.ingest_max_bytes + UPLOAD_OVERHEAD


@router.post("", responses=started_responses(IngestRun), response_model=IngestRun, status_code=202)
@body_limit(_upload_limit)
async def submit_ingest(
    settings: SettingsDep,
    caller: Researcher,
    request: Request,
    response: Response,
    files: Annotated[
        list[UploadFile],
        File(description="CSV or parquet files of daily bars; names may hold sub-folders."),
    ],
    options: Annotated[
        str,
        Form(description="IngestOptions as JSON: source (BarsSource fields), message, label."),
    ] = "{}",
    wait: Annotated[bool, Query(description="Answer when the ingest has finished.")] = False,
) -> IngestRun:
    """Ingest the uploaded files (validate -> compute -> write -> apply -> materialize ->
    statistics) as a Prefect flow run in a warm child process; answers 202 with the run's
    id and status URL (200 when `wait`). A refused batch ends the run as `rejected` and
    writes nothing."""
    try:
        parsed = IngestOptions.model_validate_json(options)
    except ValidationError as exc:
        raise InvalidInputError(
            f"Invalid options (IngestOptions as JSON): {problems(exc)}."
        ) from exc
    uploads = [(upload.filename, upload.file) for upload in files]
    started: Started[IngestRunInfo] = await run_in_threadpool(
        use.submit, settings, caller.name, uploads, parsed
    )
    return await answer_started(started, wait, response, partial(_run_of, request))


@router.get("", response_model=list[IngestRun])
def list_ingests(
    settings: SettingsDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[IngestRun]:
    """The newest ingest runs first, with their steps and outcomes."""
    return [_run_of(request, info) for info in use.recent(settings, limit)]


@router.get("/{run_id}", response_model=IngestRun)
def get_ingest(run_id: RecordNumber, settings: SettingsDep, request: Request) -> IngestRun:
    """One ingest run: status, the steps done so far, and what a completed run did."""
    return _run_of(request, use.get(settings, run_id))
