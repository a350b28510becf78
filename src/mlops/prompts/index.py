"""An in-memory index of template versions and release events, rebuilt from the git log
when a store opens and brought forward from HEAD on each request (one `git log` of the new
commits), so no request walks the history of a template."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import yaml

from mlops.prompts.models import ReleaseEvent, Status
from mlops.prompts.repository import (
    METADATA_FILE,
    RELEASES_DIR,
    TEMPLATE_FILE,
    CommitRecord,
    PromptRepository,
)

_TEMPLATE_PATH = re.compile(
    rf"([a-z0-9][a-z0-9_-]{{0,99}})/({re.escape(TEMPLATE_FILE)}|{re.escape(METADATA_FILE)})"
)
"""The files that make a template version; other paths (`.github/ci.yml`, a README) are not."""


@dataclass(frozen=True)
class VersionRecord:
    """Version `version` of a template is the `version`-th commit touching its folder."""

    version: int
    commit: CommitRecord


@dataclass
class TemplateState:
    versions: list[VersionRecord] = field(default_factory=list)
    releases: list[ReleaseEvent] = field(default_factory=list)

    @property
    def archived(self) -> bool:
        flags = [e.event for e in self.releases if e.event in ("archive", "restore")]
        return bool(flags) and flags[-1] == "archive"

    @property
    def live_version(self) -> int | None:
        published = [e.version for e in self.releases if e.event in ("publish", "rollback")]
        return published[-1] if published else None

    @property
    def published_versions(self) -> set[int]:
        return {e.version for e in self.releases if e.version is not None}

    @property
    def status(self) -> Status:
        if self.archived:
            return "archived"
        return "published" if self.live_version is not None else "draft"


def release_path(name: str) -> str:
    return f"{RELEASES_DIR}/{name}.yaml"


def dump_releases(events: list[ReleaseEvent]) -> str:
    """The events as `.releases/<name>.yaml` keeps them (`approved_by` only when named)."""
    dumped = [
        e.model_dump(mode="json", exclude=None if e.approved_by else {"approved_by"})
        for e in events
    ]
    return yaml.safe_dump({"events": dumped}, sort_keys=False)


def load_releases(text: str) -> list[ReleaseEvent]:
    data = yaml.safe_load(text) or {}
    return [ReleaseEvent.model_validate(e) for e in data.get("events", [])]


class VersionIndex:
    """Template name -> versions and release events, as of `head`."""

    def __init__(self, repository: PromptRepository) -> None:
        self.repository = repository
        self.head: str | None = None
        self.templates: dict[str, TemplateState] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Bring the index up to the repository's HEAD (no-op when nothing changed)."""
        head = self.repository.head_sha()
        if head == self.head:
            return
        with self._lock:
            if head == self.head:
                return
            self._apply(self.repository.log(since=self.head, until=head), head)

    def add_commit(self, record: CommitRecord, previous_head: str | None) -> None:
        """Index a commit this process just made (skips the `git log` of `refresh`)."""
        with self._lock:
            if previous_head != self.head:
                head = self.repository.head_sha()
                self._apply(self.repository.log(since=self.head, until=head), head)
            else:
                self._apply([record], record.sha)

    def _apply(self, records: list[CommitRecord], head: str | None) -> None:
        touched_releases: set[str] = set()
        for record in records:
            names = {m.group(1) for p in record.paths if (m := _TEMPLATE_PATH.fullmatch(p))}
            for name in sorted(names):
                state = self.templates.setdefault(name, TemplateState())
                state.versions.append(VersionRecord(len(state.versions) + 1, record))
            for path in record.paths:
                if path.startswith(f"{RELEASES_DIR}/") and path.endswith(".yaml"):
                    touched_releases.add(path[len(RELEASES_DIR) + 1 : -len(".yaml")])
        for name in touched_releases:
            if head is not None and name in self.templates:
                text = self.repository.read(head, release_path(name))
                self.templates[name].releases = load_releases(text)
        self.head = head

    def state(self, name: str) -> TemplateState | None:
        return self.templates.get(name)
