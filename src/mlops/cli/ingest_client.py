"""`mlops ingest` through the platform's API: upload the files, then follow the run.

When `mlops up` (or `mlops api`) serves this state folder, its API runs ingests in a warm
process (`mlops.features.ingest_jobs`), so this command imports neither Prefect, Great
Expectations nor Feast: it resolves the files, sends them with the source's options, and
reads the run's record until it ends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from mlops.errors import ServiceError, error_from
from mlops.features.ingest_names import OPEN_STATUSES, run_outcome
from mlops.features.source_files import resolve_files
from mlops.features.sources import BarsSource
from mlops.settings import Settings

__all__ = ["IngestClient", "upload_names"]

POLL_SECONDS = 0.2


def upload_names(files: list[Path]) -> list[str]:
    """Each file's name in the upload: relative to the files' common folder, so that two
    files of one name in two folders stay apart and a name-derived ticker is unchanged."""
    absolute = [Path(os.path.abspath(file)) for file in files]  # links keep their names
    common = absolute[0].parent
    while not all(file.parent.is_relative_to(common) for file in absolute):
        common = common.parent
    return [file.relative_to(common).as_posix() for file in absolute]


class IngestClient:
    """One ingest submitted to the API at ``url`` with this folder's token."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.url = url
        self.client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {settings.token}"},
            timeout=httpx.Timeout(30.0, read=None),  # an upload of GBs takes its time
        )
        self.run: dict[str, Any] = {}

    def close(self) -> None:
        self.client.close()

    def submit(self, source: BarsSource, message: str) -> dict[str, Any]:
        """Upload the source's files; the pending run the API recorded."""
        files = resolve_files(source.paths)
        options = {
            "source": source.model_dump(exclude={"paths"}),
            "message": message,
            "label": source.describe(),
        }
        with ExitStack() as stack:
            parts = [
                ("files", (name, stack.enter_context(path.open("rb")), "application/octet-stream"))
                for name, path in zip(upload_names(files), files, strict=True)
            ]
            response = self._call(
                "POST", "/api/v1/ingests", files=parts, data={"options": json.dumps(options)}
            )
        self.run = response.json()
        return self.run

    def steps(self) -> tuple[list[dict[str, Any]], bool]:
        """The steps recorded so far, and whether the run has ended (reads it again after a
        short wait while it has not)."""
        if self.run.get("status") in OPEN_STATUSES:
            time.sleep(POLL_SECONDS)
            self.run = self._call("GET", self.run["status_url"]).json()
        return list(self.run.get("steps") or []), self.run.get("status") not in OPEN_STATUSES

    def result(self) -> dict[str, Any]:
        """What the completed run did (as `IngestSummary`), or its error raised as the
        local run would have raised it."""
        return run_outcome(self.run)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"The platform's API at {self.url} did not answer: {exc}.") from exc
        if response.status_code >= 400:
            try:
                body = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise ServiceError(
                    f"The platform's API at {self.url} answered {response.status_code}."
                ) from None
            raise error_from(body["code"], body["message"], body.get("details"))
        return response


@contextmanager
def ingest_client(settings: Settings, url: str) -> Iterator[IngestClient]:
    client = IngestClient(settings, url)
    try:
        yield client
    finally:
        client.close()
