"""The git-backed prompt store: create and update templates (one commit each, refused on a
stale base version), list, show, history, diff and sandboxed renders with usage events."""

from __future__ import annotations

import difflib
import threading
import time
from pathlib import Path
from typing import Any

from mlops.errors import ConflictError, InvalidInputError, NotFoundError
from mlops.prompts import usage
from mlops.prompts.index import TemplateState, VersionIndex, VersionRecord
from mlops.prompts.metadata import check_defaults, dump_metadata, metadata_at, parse_metadata
from mlops.prompts.models import (
    ExampleResult,
    ExamplesReport,
    PromptMetadata,
    RenderResult,
    TemplateDetail,
    TemplateDiff,
    TemplateSummary,
    VersionInfo,
    check_name,
    check_template_size,
)
from mlops.prompts.rendering import (
    PromptEnvironment,
    RenderError,
    bind_variables,
    check_template,
    render_template,
)
from mlops.prompts.repository import METADATA_FILE, TEMPLATE_FILE, PromptRepository
from mlops.settings import Settings

DRAFT = "draft"
"""Pseudo commit of an unsaved draft in the preview sandbox."""


class PromptStore:
    """One prompt repository with its version index and sandbox."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repository = PromptRepository(settings.prompts_dir, settings.prompts_remote)
        self.repository.open(settings.prompts_source_dir, settings.author)
        self.index = VersionIndex(self.repository)
        self.env = PromptEnvironment(self._source_at)
        self.index.refresh()

    def _source_at(self, sha: str, name: str) -> str:
        return self.repository.read(sha, f"{name}/{TEMPLATE_FILE}")

    def state(self, name: str) -> TemplateState:
        check_name(name)
        self.index.refresh()
        state = self.index.state(name)
        if state is None or not state.versions:
            raise NotFoundError(f"No prompt template named {name!r}.")
        return state

    def record(
        self, name: str, version: int | None = None, state: TemplateState | None = None
    ) -> VersionRecord:
        """A version of a template (default: the latest)."""
        versions = (state or self.state(name)).versions
        if version is None:
            return versions[-1]
        if not 1 <= version <= len(versions):
            raise NotFoundError(
                f"{name} has no version {version} (versions 1 to {len(versions)}).",
                {"latest_version": len(versions)},
            )
        return versions[version - 1]

    def metadata(self, name: str, sha: str) -> PromptMetadata:
        return metadata_at(self.repository.path, sha, name)

    def create(
        self,
        name: str,
        source: str,
        metadata: PromptMetadata | str,
        author: str,
        committer: str,
        message: str = "",
    ) -> TemplateDetail:
        """Add a new template (version 1)."""
        check_name(name)
        return self._commit_version(
            name, None, source, metadata, author, committer, message or f"Create {name}"
        )

    def update(
        self,
        name: str,
        base_version: int,
        source: str | None,
        metadata: PromptMetadata | str | None,
        author: str,
        committer: str,
        message: str = "",
    ) -> TemplateDetail:
        """Commit a new version based on `base_version`; a stale base is a 409."""
        current = self.record(name)
        if source is None:
            source = self._source_at(current.commit.sha, name)
        if metadata is None:
            metadata = self.repository.read(current.commit.sha, f"{name}/{METADATA_FILE}")
        return self._commit_version(
            name, base_version, source, metadata, author, committer, message or f"Update {name}"
        )

    def _validated(self, source: str, metadata: PromptMetadata | str) -> tuple[str, str]:
        check_template_size(source)
        if isinstance(metadata, str):
            text, parsed = metadata, parse_metadata(metadata)
        else:
            check_defaults(metadata)
            text, parsed = dump_metadata(metadata), metadata
        check_template(self.env, source, parsed)
        return source, text

    def _commit_version(
        self,
        name: str,
        base_version: int | None,
        source: str,
        metadata: PromptMetadata | str,
        author: str,
        committer: str,
        message: str,
    ) -> TemplateDetail:
        source, meta_text = self._validated(source, metadata)
        paths = [f"{name}/{TEMPLATE_FILE}", f"{name}/{METADATA_FILE}"]
        with self.repository.locked():
            self.index.refresh()
            state = self.index.state(name)
            latest = len(state.versions) if state else 0
            if base_version is None and latest:
                raise ConflictError(
                    f"A template named {name!r} already exists.", {"current_version": latest}
                )
            if base_version is not None and base_version != latest:
                raise ConflictError(
                    f"{name} is at version {latest}, not {base_version}: reload and edit again.",
                    {"current_version": latest, "base_version": base_version},
                )
            if state and state.archived:
                raise ConflictError(f"{name} is archived; restore it before changing it.")
            head = self.repository.head_sha()
            if head and self._unchanged(head, name, source, meta_text):
                raise InvalidInputError(f"Nothing changed in {name} since version {latest}.")
            self._commit(
                paths, {paths[0]: source, paths[1]: meta_text}, author, committer, message, head
            )
        return self.detail(name)

    def _unchanged(self, head: str, name: str, source: str, meta_text: str) -> bool:
        try:
            old_source = self._source_at(head, name)
            old_meta = self.repository.read(head, f"{name}/{METADATA_FILE}")
        except NotFoundError:
            return False
        return old_source == source and old_meta == meta_text

    def _commit(
        self,
        paths: list[str],
        files: dict[str, str],
        author: str,
        committer: str,
        message: str,
        head: str | None,
    ) -> str:
        """Write and commit files (caller holds the lock); on any error the index entries and
        the working-tree files of `paths` are restored to HEAD, so nothing stays staged."""
        try:
            self.repository.write(files)
            record = self.repository.commit(paths, author, committer, message)
        except Exception:
            self.repository.discard(paths)
            raise
        self.index.add_commit(record, head)
        return record.sha

    def summary(self, name: str, state: TemplateState, calls: int) -> TemplateSummary:
        latest = state.versions[-1]
        metadata = self.metadata(name, latest.commit.sha)
        return TemplateSummary(
            name=name,
            description=metadata.description,
            owner=metadata.owner,
            tags=metadata.tags,
            latest_version=latest.version,
            published_version=state.live_version,
            status=state.status,
            updated=max([latest.commit.time, *(e.time for e in state.releases)]),
            calls=calls,
        )

    def list_templates(
        self, include_archived: bool = False, q: str | None = None
    ) -> list[TemplateSummary]:
        """Templates by name (archived ones only when asked), with their call counts."""
        self.index.refresh()
        counts = usage.call_counts(self.settings.metadata_url)
        items = []
        for name in sorted(self.index.templates):
            state = self.index.templates[name]
            if not state.versions or (state.archived and not include_archived):
                continue
            item = self.summary(name, state, counts.get(name, 0))
            text = f"{name} {item.description} {' '.join(item.tags)}".lower()
            if q is None or q.lower() in text:
                items.append(item)
        return items

    def detail(self, name: str, version: int | None = None) -> TemplateDetail:
        state = self.state(name)
        record = self.record(name, version)
        calls = usage.call_counts(self.settings.metadata_url).get(name, 0)
        summary = self.summary(name, state, calls)
        return TemplateDetail(
            **summary.model_dump(),
            version=record.version,
            sha=record.commit.sha,
            template=self._source_at(record.commit.sha, name),
            metadata=self.metadata(name, record.commit.sha),
            releases=state.releases,
        )

    def history(self, name: str) -> list[VersionInfo]:
        """Versions oldest first: the git log of the template's folder."""
        state = self.state(name)
        live, published = state.live_version, state.published_versions
        return [
            VersionInfo(
                version=r.version,
                sha=r.commit.sha,
                author=r.commit.author,
                author_email=r.commit.author_email,
                committer=r.commit.committer,
                time=r.commit.time,
                message=r.commit.message,
                published=r.version in published,
                live=r.version == live,
            )
            for r in state.versions
        ]

    def diff(self, name: str, from_version: int, to_version: int) -> TemplateDiff:
        """Unified diffs of the template and of its metadata between two versions."""
        old, new = self.record(name, from_version), self.record(name, to_version)

        def unified(file: str) -> str:
            a = self.repository.read(old.commit.sha, f"{name}/{file}").splitlines(keepends=True)
            b = self.repository.read(new.commit.sha, f"{name}/{file}").splitlines(keepends=True)
            label = f"{name}/{file}"
            return "".join(
                difflib.unified_diff(a, b, f"{label}@v{from_version}", f"{label}@v{to_version}")
            )

        return TemplateDiff(
            name=name,
            from_version=from_version,
            to_version=to_version,
            template_diff=unified(TEMPLATE_FILE),
            metadata_diff=unified(METADATA_FILE),
        )

    def resolve(self, name: str, version: int | None, label: str | None) -> VersionRecord:
        """The version a render asks for: a number, `latest`, or `production` (the default)."""
        state = self.state(name)
        if version is not None:
            return self.record(name, version, state)
        if label == "latest":
            return state.versions[-1]
        if label not in (None, "production"):
            raise InvalidInputError(f"Unknown label {label!r}: use 'production' or 'latest'.")
        live = state.live_version
        if live is None:
            raise ConflictError(f"{name} has no published version; render a version or 'latest'.")
        return self.record(name, live, state)

    def render_version(self, name: str, record: VersionRecord, variables: dict[str, Any]) -> str:
        metadata = self.metadata(name, record.commit.sha)
        bound = bind_variables(metadata.variables, variables)
        timeout = self.settings.prompts_render_timeout_s
        return render_template(self.env, record.commit.sha, name, bound, timeout)

    def render(
        self,
        name: str,
        variables: dict[str, Any],
        caller: str,
        version: int | None = None,
        label: str | None = None,
    ) -> RenderResult:
        """Render and record a usage event (success, or failure with its kind)."""
        record = self.resolve(name, version, label)
        started = time.perf_counter()
        error: RenderError | None = None
        try:
            output = self.render_version(name, record, variables)
        except RenderError as exc:
            error = exc
        latency = (time.perf_counter() - started) * 1000
        kind = error.kind if error else None
        event = usage.new_event(name, record.version, kind, latency, caller)
        usage.recorder_for(self.settings.metadata_url).record(event)
        if error is not None:
            error.details["render_id"] = event["id"]
            raise error
        return RenderResult(
            render_id=event["id"],
            name=name,
            version=record.version,
            sha=record.commit.sha,
            output=output,
            latency_ms=round(latency, 4),
        )

    def _draft_environment(self, name: str, source: str, base_sha: str | None) -> PromptEnvironment:
        """A sandbox where template `name` at commit DRAFT is `source`, and every other
        template is read at `base_sha` (default: the newest commit)."""
        base = base_sha or self.repository.head_sha()

        def read(sha: str, template: str) -> str:
            if sha == DRAFT and template == name:
                return source
            if base is None:
                raise NotFoundError(f"No template {template!r}.")
            return self.repository.read(base, f"{template}/{TEMPLATE_FILE}")

        return PromptEnvironment(read)

    def check_draft(
        self, name: str, source: str, metadata: PromptMetadata, base_sha: str | None = None
    ) -> None:
        """Check an unsaved draft as a save checks it (size, defaults, syntax, declared
        variables)."""
        check_template_size(source)
        check_defaults(metadata)
        check_template(self._draft_environment(name, source, base_sha), source, metadata)

    def preview(
        self,
        name: str,
        source: str,
        metadata: PromptMetadata,
        variables: dict[str, Any],
        base_sha: str | None = None,
    ) -> str:
        """Check and render an unsaved draft of template `name` in the sandbox, its
        includes read at `base_sha`. A preview records no usage event."""
        self.check_draft(name, source, metadata, base_sha)
        env = self._draft_environment(name, source, base_sha)
        bound = bind_variables(metadata.variables, variables)
        return render_template(env, DRAFT, name, bound, self.settings.prompts_render_timeout_s)

    def run_examples(self, name: str, version: int | None = None) -> ExamplesReport:
        """Render each example of a version and compare with its expected output."""
        record = self.record(name, version)
        results = []
        for example in self.metadata(name, record.commit.sha).examples:
            try:
                output: str | None = self.render_version(name, record, example.variables)
                error = None
            except RenderError as exc:
                output, error = None, exc.message
            passed = output is not None and output.strip() == example.expected.strip()
            results.append(
                ExampleResult(
                    name=example.name,
                    passed=passed,
                    expected=example.expected,
                    output=output,
                    error=error,
                )
            )
        return ExamplesReport(
            name=name,
            version=record.version,
            passed=all(r.passed for r in results),
            results=results,
        )


_stores: dict[tuple[Path, str | None], PromptStore] = {}
_stores_lock = threading.Lock()


def open_store(settings: Settings) -> PromptStore:
    """The process's store for the settings' prompt repository (opened, or seeded, once)."""
    key = (settings.prompts_dir, settings.metadata_url)
    with _stores_lock:
        store = _stores.get(key)
        if store is None or store.settings != settings:
            store = _stores[key] = PromptStore(settings)
        return store
