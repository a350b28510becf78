"""Publish, roll back, archive and restore templates.

A release event is a commit to `.releases/<name>.yaml`; a published version also gets the
annotated tag `<name>/v<N>` and the moving tag `<name>/production` (the live label). With a
remote configured the branch and those tags are pushed; with the MLflow registry enabled
the version is registered as an MLflow prompt too. Pushing and MLflow registration happen
after the git commit: when they fail the release stands and the result says what failed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import git
from pydantic import BaseModel, Field

from mlops.errors import ConflictError, InvalidInputError
from mlops.fields import UtcDatetime, as_utc
from mlops.prompts.index import TemplateState, dump_releases, release_path
from mlops.prompts.models import PublishResult, ReleaseEvent, TemplateDetail
from mlops.prompts.repository import BRANCH
from mlops.prompts.store import PromptStore
from mlops.roles import Principal, Role

log = logging.getLogger("mlops.prompts.publishing")
LIVE_LABEL = "production"


def version_tag(name: str, version: int) -> str:
    return f"{name}/v{version}"


def live_tag(name: str) -> str:
    return f"{name}/{LIVE_LABEL}"


def _append_event(store: PromptStore, name: str, event: ReleaseEvent, committer: str) -> str:
    """Commit one release event (caller holds the repository lock), authored by its `by`;
    returns the commit sha."""
    state = store.state(name)
    path = release_path(name)
    text = dump_releases([*state.releases, event])
    subject = f"{event.event} {name}" + (f" v{event.version}" if event.version else "")
    message = subject + (f"\n\n{event.message}" if event.message else "")
    if event.approved_by:
        message += f"\n\nApproved-by: {', '.join(event.approved_by)}"
    head = store.repository.head_sha()
    return store._commit([path], {path: text}, event.by, committer, message, head)


OUTSIDE = "outside the platform"
"""Who moved a live tag the platform did not move (git does not tell)."""


def _label_events(state: TemplateState) -> list[ReleaseEvent]:
    return [
        e for e in state.releases if e.event in ("publish", "rollback", "external", "acknowledge")
    ]


def label_moved_outside(state: TemplateState) -> ReleaseEvent | None:
    """The recorded `external` move of the live tag no approver acknowledged yet (a later
    publish or rollback, which puts the tag back, settles it too)."""
    events = _label_events(state)
    return events[-1] if events and events[-1].event == "external" else None


def detect_label_moves(store: PromptStore) -> list[str]:
    """Record, as `external` release events, the live tags moved outside the platform
    since they were last looked at (one `git for-each-ref` for every template); the
    templates found. Renders keep following the recorded release."""
    found = []
    with store.repository.locked():
        store.index.refresh()
        tags = store.repository.tag_commits()
        for name, state in sorted(store.index.templates.items()):
            recorded = next(
                (e.sha for e in reversed(state.releases) if e.event in ("publish", "rollback")),
                None,
            )
            if recorded is None:
                continue
            tag = tags.get(live_tag(name))
            moved = label_moved_outside(state)
            if tag == recorded or (moved is not None and moved.sha == tag):
                continue
            where = f"{tag[:10]}" if tag else "nowhere (deleted)"
            event = ReleaseEvent(
                event="external",
                sha=tag,
                by=OUTSIDE,
                time=datetime.now(UTC),
                message=f"the tag {live_tag(name)} was moved outside the platform to {where}; "
                f"renders still follow v{state.live_version}",
            )
            _append_event(store, name, event, OUTSIDE)
            found.append(name)
    return found


def acknowledge_label_move(
    store: PromptStore, name: str, caller: Principal, comment: str
) -> TemplateDetail:
    """An approver acknowledges the template's live tag moved outside the platform: an
    `acknowledge` event, and the tag back on the recorded release, which lets rollbacks
    run again. 409 when there is none."""
    caller.require(Role.APPROVER, "Acknowledging a move of the live tag")
    with store.repository.locked():
        store.index.refresh()
        state = store.state(name)
        moved = label_moved_outside(state)
        if moved is None:
            raise ConflictError(f"The live tag of {name} was not moved outside the platform.")
        recorded = next(
            e.sha for e in reversed(state.releases) if e.event in ("publish", "rollback")
        )
        event = ReleaseEvent(
            event="acknowledge",
            sha=moved.sha,
            by=caller.name,
            time=datetime.now(UTC),
            message=comment,
        )
        _append_event(store, name, event, caller.name)
        if recorded:
            store.repository.tag(live_tag(name), recorded, None, force=True)
    return store.detail(name)


def check_publishable(
    store: PromptStore,
    name: str,
    version: int,
    event: Literal["publish", "rollback"] = "publish",
) -> None:
    """What `publish` refuses, refused without writing: an archived template, a version
    live already, a rollback to a version never published, failing examples."""
    with store.repository.locked():
        store.index.refresh()
        _publishable(store, name, version, event)


def _publishable(
    store: PromptStore, name: str, version: int, event: Literal["publish", "rollback"]
) -> str:
    """The version's commit sha once the checks of `check_publishable` pass (caller holds
    the lock)."""
    state = store.state(name)
    record = store.record(name, version)
    if state.archived:
        raise ConflictError(f"{name} is archived; restore it before publishing.")
    if event == "rollback" and state.live_version is None:
        raise ConflictError(f"{name} has never been published: there is nothing to roll back.")
    if state.live_version == version:
        raise ConflictError(f"Version {version} of {name} is already live.")
    released = sorted(
        {e.version for e in state.releases if e.event in ("publish", "rollback") and e.version}
    )
    moved = label_moved_outside(state)
    if event == "rollback" and moved is not None:
        raise ConflictError(
            f"The live tag of {name} was moved outside the platform "
            f"({moved.time:%Y-%m-%d %H:%M} UTC): an approver acknowledges it first "
            f"(mlops prompts acknowledge {name} --comment ..., or the template's page).",
            {"template": name, "tag_points_at": moved.sha},
        )
    if event == "rollback" and version not in released:
        raise InvalidInputError(
            f"Version {version} of {name} was never published: a rollback goes back to an "
            f"earlier published version ({', '.join(f'v{v}' for v in released)}); "
            "publish a new version instead.",
            {"published_versions": released, "live_version": state.live_version},
        )
    report = store.run_examples(name, version)
    if not report.passed:
        failing = [r for r in report.results if not r.passed]
        raise InvalidInputError(
            f"Version {version} of {name} fails {len(failing)} example(s): "
            + ", ".join(r.name for r in failing),
            {"failures": [r.model_dump() for r in failing]},
        )
    return record.commit.sha


def publish(
    store: PromptStore,
    name: str,
    version: int,
    caller: str,
    message: str = "",
    event: Literal["publish", "rollback"] = "publish",
    approved_by: list[str] | None = None,
) -> PublishResult:
    """Make a version live after its examples pass; recorded as a commit and tags. With
    `approved_by` (a publication that waited for approvers, `publications.py`) the event
    names them, and the commit is authored by `caller` (the requester) and committed by
    the last approver."""
    approvers = approved_by or []
    with store.repository.locked():
        store.index.refresh()
        sha = _publishable(store, name, version, event)
        release = ReleaseEvent(
            event=event,
            version=version,
            sha=sha,
            by=caller,
            time=datetime.now(UTC),
            message=message,
            approved_by=approvers,
        )
        _append_event(store, name, release, approvers[-1] if approvers else caller)
        tag = version_tag(name, version)
        approval = f", approved by {', '.join(approvers)}" if approvers else ""
        if not store.repository.has_tag(tag):  # kept as first made: a rollback reuses it
            store.repository.tag(tag, sha, f"{name} v{version} published by {caller}{approval}")
        store.repository.tag(live_tag(name), sha, None, force=True)
        result = PublishResult(name=name, version=version, sha=sha, event=event, tag=tag)
        if store.repository.remote:
            result.pushed, result.push_error = _push(store, name, tag)
    if store.settings.prompts_mlflow_registry:
        from mlops.prompts.mlflow_registry import register_version

        source = store.repository.read(sha, f"{name}/template.j2")
        result.mlflow = register_version(store.settings, name, source, sha, version, message)
    return result


def rollback(
    store: PromptStore, name: str, version: int, caller: str, message: str = ""
) -> PublishResult:
    """Publish an older version again, as a new recorded event."""
    return publish(store, name, version, caller, message or f"Roll back to v{version}", "rollback")


def _push(store: PromptStore, name: str, tag: str) -> tuple[bool, str | None]:
    refspecs = [BRANCH, f"refs/tags/{tag}", f"+refs/tags/{live_tag(name)}"]
    try:
        store.repository.push(refspecs)
    except git.GitCommandError as exc:
        log.warning("Push of %s to the prompt remote failed: %s", name, exc.stderr)
        return False, str(exc.stderr).strip()[:1000]
    return True, None


def set_archived(
    store: PromptStore, name: str, archived: bool, caller: str, message: str = ""
) -> TemplateDetail:
    """Archive (hide from listings, keep history) or restore a template."""
    with store.repository.locked():
        store.index.refresh()
        state = store.state(name)
        if state.archived == archived:
            raise ConflictError(f"{name} is already {'archived' if archived else 'active'}.")
        event = ReleaseEvent(
            event="archive" if archived else "restore",
            by=caller,
            time=datetime.now(UTC),
            message=message,
        )
        _append_event(store, name, event, caller)
    return store.detail(name)


class LiveChange(BaseModel):
    """One move of a template's live label: a publish or a rollback."""

    event: Literal["publish", "rollback"]
    from_version: int | None = Field(description="The live version before (null: none).")
    to_version: int
    sha: str
    by: str
    approved_by: list[str]
    time: UtcDatetime
    message: str


class LiveHistory(BaseModel):
    name: str
    changes: list[LiveChange] = Field(description="Every move of the live label, newest first.")
    at: UtcDatetime | None = Field(description="The moment asked about, if any.")
    live_at: int | None = Field(description="The version that was live at `at` (null: none).")
    label_moved_outside: str | None = Field(
        description="Set when the git tag `<name>/production` points at another commit than "
        "the last release recorded (moved with `git tag -f`): the commit it points at. "
        "Renders follow the recorded release, not the tag."
    )


def live_history(store: PromptStore, name: str, at: datetime | None = None) -> LiveHistory:
    """Who made which version live when, from which, why and with whose approval (the
    release events of `.releases/<name>.yaml`, append-only in git); with `at`, the version
    live then; and whether the live tag was moved outside the platform."""
    state = store.state(name)
    changes: list[LiveChange] = []
    for event in state.releases:
        if event.event in ("publish", "rollback") and event.version is not None:
            changes.append(
                LiveChange(
                    event=event.event,
                    from_version=changes[-1].to_version if changes else None,
                    to_version=event.version,
                    sha=event.sha or "",
                    by=event.by,
                    approved_by=event.approved_by,
                    time=event.time,
                    message=event.message,
                )
            )
    live_at = None
    if at is not None:
        moment = as_utc(at)
        before = [c for c in changes if as_utc(c.time) <= moment]
        live_at = before[-1].to_version if before else None
    tag_sha = store.repository.tag_commit(live_tag(name))
    recorded = changes[-1].sha if changes else None
    seen = label_moved_outside(state)
    moved = tag_sha if recorded is not None and tag_sha != recorded else None
    moved = moved or (seen.sha if seen is not None else None)
    return LiveHistory(
        name=name, changes=changes[::-1], at=at, live_at=live_at, label_moved_outside=moved
    )
