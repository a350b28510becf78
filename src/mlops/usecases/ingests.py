"""Ingest uploaded files of daily bars: the API's (and so a remote `mlops ingest`'s) way in.

The upload is refused (422) before anything is stored when a file name is unsafe or the
source's options are invalid. Otherwise the files are kept in a folder of their own under
the state folder, a pending ingest run is recorded, and the `ingest` flow runs for it in a
warm child process (`ingest_jobs`), or (cluster profile) on a worker of the work pool; the
run's record tells its steps and outcome, and the folder is removed when the run ends.
The flow validates before it writes, so a refused batch leaves the stores as they were, as
an ingest of the CLI's own does.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any

from pydantic import BaseModel, Field, ValidationError

from mlops.errors import InvalidInputError, problems
from mlops.features import ingest, ingest_jobs
from mlops.features.ingest import IngestRunInfo
from mlops.features.source_files import file_kind
from mlops.features.sources import BarsSource
from mlops.settings import Settings
from mlops.usecases.started import Started

LABEL_LIMIT = 500


class IngestOptions(BaseModel):
    """How the uploaded files are read: a ``BarsSource`` without its paths (the CLI sends
    the one it built from its options and `config/sources.yaml`), and what the run records."""

    source: dict[str, Any] = Field(default_factory=dict, description="BarsSource fields.")
    message: str = Field(default="", max_length=2000, description="Recorded with versions.")
    label: str = Field(
        default="", max_length=LABEL_LIMIT, description="How the run names its source."
    )


def _upload_name(name: str | None) -> PurePosixPath:
    """A file name of the upload as a relative path inside its folder (sub-folders kept,
    so that files of one name in two folders stay two files)."""
    path = PurePosixPath((name or "").replace("\\", "/"))
    if not path.parts or path.is_absolute() or any(p in ("", ".", "..") for p in path.parts):
        raise InvalidInputError(
            f"Upload file name {name!r} is not a relative path inside the upload.",
            {"file": name},
        )
    file_kind(Path(path.name))  # refuses what is neither CSV nor parquet
    return path


def submit(
    settings: Settings,
    caller: str,
    files: Sequence[tuple[str | None, IO[bytes]]],
    options: IngestOptions,
) -> Started[IngestRunInfo]:
    """Store the uploaded files, record a pending ingest run and start it."""
    if not files:
        raise InvalidInputError("An ingest needs at least one file.")
    names = [_upload_name(name) for name, _ in files]
    if len(set(names)) < len(names):
        raise InvalidInputError(
            "The upload names a file twice.", {"files": [str(n) for n in names]}
        )
    folder = settings.home / "uploads" / secrets.token_hex(8)
    try:
        source = BarsSource.model_validate(
            {**options.source, "paths": [str(folder / name) for name in names]}
        )
    except ValidationError as exc:
        raise InvalidInputError(f"Invalid source: {problems(exc)}.") from exc
    label = options.label or source.model_copy(update={"paths": [str(n) for n in names]}).describe()
    try:
        for name, (_, stream) in zip(names, files, strict=True):
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
        run_id = ingest.start_run(settings, label, pending=True)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    message = options.message or f"ingest {label}"
    read = partial(_read, settings)
    if settings.uses_work_pool:  # on a worker; the home folder (uploads too) is shared
        from mlops.orchestration import start_ingest

        start_ingest(settings, run_id, source, caller, message, upload_dir=folder)
        return Started(str(run_id), None, read, done=lambda info: info.ended)
    thread = ingest_jobs.start(settings, run_id, source, caller, message, folder)
    return Started(str(run_id), thread, read)


def _read(settings: Settings, run_id: str) -> IngestRunInfo:
    return ingest.run_info(settings, int(run_id))


def get(settings: Settings, run_id: int) -> IngestRunInfo:
    return ingest.run_info(settings, run_id)


def recent(settings: Settings, limit: int) -> list[IngestRunInfo]:
    return [IngestRunInfo.model_validate(run) for run in ingest.latest_runs(settings, limit)]
