"""Publications that wait for approvers: when `config/gates.yaml` says `prompts:
{approvals: N}`, publishing a template's version records a request (after the same checks a
publish makes: not archived, not live, its examples pass) instead of moving the live label.
N approvers other than the requester approve it, each with a comment; the approval that
completes the count publishes it (`publishing.publish`: the commit is authored by the
requester, committed by that approver, and the release event names the approvers). One
rejection, or the expiry (`approval_expiry_hours`), ends it; the live label is untouched
until then.

The requests are rows of the platform's database (`publication_requests`), one waiting per
template at a time; the decisions are in the shared `approvals` table (`mlops.approvals`).
Each decision holds the request's row locked, so approvals from several processes are
counted one at a time and the version is published once. If that publish fails (an
example now fails, the version went live through a rollback), the approval is not kept
and the request keeps waiting. Rollbacks need no approvals (they restore a version that
was published, and need the approver role).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlops import approvals
from mlops.approvals import Decision, DecisionInfo
from mlops.db import Approval, PublicationRequest, locked_scope, session_scope, utcnow
from mlops.errors import ConflictError, InvalidInputError, NotFoundError
from mlops.fields import UtcDatetime, as_utc
from mlops.roles import Principal
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.prompts.models import PublishResult
    from mlops.prompts.store import PromptStore

AWAITING = "awaiting_approval"
PUBLISHING = "publishing"
"""The last approval came in and the version is being published (no lock held)."""
STUCK_AFTER = timedelta(minutes=5)
"""A request `publishing` for longer was left by a process that stopped mid-publish."""
APPROVAL_KIND = "publication"
"""How the approvals table names a publication's decisions."""


class PublicationInfo(BaseModel):
    id: str
    template: str
    version: int
    message: str
    requested_by: str
    status: Literal["awaiting_approval", "publishing", "published", "rejected"]
    approvals_required: int
    approvals: list[DecisionInfo]
    expires_at: UtcDatetime
    created_at: UtcDatetime
    finished_at: UtcDatetime | None
    error: str | None
    sha: str | None

    @property
    def approvals_given(self) -> int:
        return approvals.approved(self.approvals)


def _info(session: Session, row: PublicationRequest) -> PublicationInfo:
    return PublicationInfo(
        id=row.id,
        template=row.template,
        version=row.version,
        message=row.message,
        requested_by=row.requested_by,
        status=row.status,
        approvals_required=row.approvals_required,
        approvals=approvals.decisions(session, APPROVAL_KIND, row.id),
        expires_at=row.expires_at,
        created_at=row.created_at,
        finished_at=row.finished_at,
        error=row.error,
        sha=row.sha,
    )


def publish_or_request(
    store: PromptStore, name: str, version: int, caller: str, message: str = ""
) -> PublishResult | PublicationInfo:
    """Publish the version now, or, when publications need approvals, check it as a
    publish would and record a request for them (409 while another request of the
    template waits)."""
    from mlops.lifecycle.gates import load_prompt_policy
    from mlops.prompts import publishing

    policy = load_prompt_policy(store.settings)
    if policy.approvals == 0:
        return publishing.publish(store, name, version, caller, message)
    publishing.check_publishable(store, name, version)
    settings = store.settings
    end_overdue(settings, name)
    row = PublicationRequest(
        id=uuid.uuid4().hex,
        template=name,
        version=version,
        message=message,
        requested_by=caller,
        status=AWAITING,
        approvals_required=policy.approvals,
        expires_at=utcnow() + timedelta(hours=policy.approval_expiry_hours),
        created_at=utcnow(),
        active_template=name,
    )
    try:
        with session_scope(settings.metadata_url) as session:
            session.add(row)
            session.flush()
            return _info(session, row)
    except IntegrityError as exc:
        waiting = list_requests(settings, name, status=AWAITING)
        waiting_id = waiting[0].id if waiting else None
        raise ConflictError(
            f"{name} has a publication awaiting approval ({waiting_id}): approvers approve or "
            "reject it first.",
            {"template": name, "request": waiting_id},
        ) from exc


def get_request(settings: Settings, request_id: str) -> PublicationInfo:
    with session_scope(settings.metadata_url) as session:
        row = session.get(PublicationRequest, request_id)
        if row is None:
            raise NotFoundError(f"No publication request '{request_id}'.", {"id": request_id})
        return _info(session, row)


def resolve_request_id(settings: Settings, prefix: str) -> str:
    """The full id of the one request whose id starts with `prefix`."""
    with session_scope(settings.metadata_url) as session:
        ids = session.scalars(
            select(PublicationRequest.id)
            .where(PublicationRequest.id.startswith(prefix.lower()))
            .limit(2)
        ).all()
    if not ids:
        raise NotFoundError(f"No publication request '{prefix}'.", {"id": prefix})
    if len(ids) > 1:
        raise InvalidInputError(
            f"'{prefix}' matches several publication requests: give more of the id."
        )
    return ids[0]


def list_requests(
    settings: Settings, template: str | None = None, status: str | None = None, limit: int = 50
) -> list[PublicationInfo]:
    """Publication requests, newest first."""
    statement = select(PublicationRequest).order_by(PublicationRequest.created_at.desc())
    if template:
        statement = statement.where(PublicationRequest.template == template)
    if status:
        statement = statement.where(PublicationRequest.status == status)
    with session_scope(settings.metadata_url) as session:
        return [_info(session, row) for row in session.scalars(statement.limit(limit))]


def _end(row: PublicationRequest, now: datetime, status: str, error: str | None = None) -> None:
    row.status, row.error, row.finished_at, row.active_template = status, error, now, None


def _expired(session: Session, row: PublicationRequest, now: datetime) -> str | None:
    if as_utc(row.expires_at) > now:
        return None
    given = approvals.approved(approvals.decisions(session, APPROVAL_KIND, row.id))
    return (
        f"Expired at {row.expires_at:%Y-%m-%d %H:%M} UTC with {given} of "
        f"{row.approvals_required} approvals; the live version is unchanged."
    )


def end_overdue(settings: Settings, template: str | None = None) -> list[str]:
    """Reject the requests that waited past their expiry (the reaper runs it); their ids."""
    now = utcnow()
    statement = select(PublicationRequest.id).where(
        PublicationRequest.status == AWAITING, PublicationRequest.expires_at <= now
    )
    if template:
        statement = statement.where(PublicationRequest.template == template)
    with session_scope(settings.metadata_url) as session:
        overdue = session.scalars(statement).all()
    ended = []
    for request_id in overdue:
        with locked_scope(settings.metadata_url) as session:
            row = session.get(PublicationRequest, request_id, with_for_update=True)
            why = None if row is None or row.status != AWAITING else _expired(session, row, now)
            if row is not None and why is not None:
                _end(row, now, "rejected", why)
                ended.append(request_id)
    return ended


def decide(
    store: PromptStore, request_id: str, caller: Principal, decision: Decision, comment: str
) -> PublicationInfo:
    """Record an approver's decision on a publication awaiting approval; the approval that
    completes the count publishes the version. Refused: not awaiting approval, or expired
    (409; an expired one is rejected here), and what `approvals.decide` refuses.

    The publish itself (examples, git commit and tags, a push, MLflow) runs outside the
    database transaction, with the request marked `publishing` meanwhile, so no database
    lock is held over git or the network. If it fails, the approval is taken back and the
    request waits again."""
    now = utcnow()
    approvers: list[str] = []
    with locked_scope(store.settings.metadata_url) as session:
        row = session.get(PublicationRequest, request_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"No publication request '{request_id}'.", {"id": request_id})
        if row.status != AWAITING:
            raise ConflictError(
                f"Publication request {request_id} is {row.status}: it is not awaiting approval.",
                {"id": request_id, "status": row.status},
            )
        expired = _expired(session, row, now)
        if expired is not None:
            _end(row, now, "rejected", expired)
        else:
            found = approvals.decide(
                session,
                APPROVAL_KIND,
                request_id,
                requester=row.requested_by,
                caller=caller,
                decision=decision,
                comment=comment,
                what=f"the publication of {row.template} v{row.version}",
            )
            if decision == "reject":
                _end(row, now, "rejected", f"Rejected by {caller.name}: {comment}")
            elif approvals.approved(found) >= row.approvals_required:
                approvers = [d.approver for d in found if d.decision == "approve"]
                row.status, row.publishing_since = PUBLISHING, now
        info = _info(session, row)
    if expired is not None:
        raise ConflictError(expired, {"id": request_id, "status": "rejected"})
    if not approvers:
        return info
    try:
        result = _publish(store, info, approvers)
    except BaseException:
        _take_back(store.settings, request_id, caller.name)
        raise
    return _published(store.settings, request_id, result.sha)


def _publish(store: PromptStore, info: PublicationInfo, approvers: list[str]) -> PublishResult:
    from mlops.prompts import publishing

    return publishing.publish(
        store, info.template, info.version, info.requested_by, info.message, approved_by=approvers
    )


def _published(settings: Settings, request_id: str, sha: str) -> PublicationInfo:
    with locked_scope(settings.metadata_url) as session:
        row = session.get(PublicationRequest, request_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"No publication request '{request_id}'.", {"id": request_id})
        _end(row, utcnow(), "published")
        row.sha = sha
        return _info(session, row)


def _take_back(settings: Settings, request_id: str, approver: str) -> None:
    """The publish failed: the request waits again, without the approval that started it."""
    with locked_scope(settings.metadata_url) as session:
        row = session.get(PublicationRequest, request_id, with_for_update=True)
        if row is None or row.status != PUBLISHING:
            return
        row.status = AWAITING
        session.execute(
            delete(Approval).where(
                Approval.subject_kind == APPROVAL_KIND,
                Approval.subject_id == request_id,
                Approval.approver == approver,
            )
        )


def recover_publishing(settings: Settings, older_than: timedelta = STUCK_AFTER) -> list[str]:
    """Settle the requests left `publishing` by a process that stopped mid-publish (the
    reaper runs it): published when the template's live version is the request's (git
    says so), else waiting again without its last approval. Their ids."""
    cutoff = utcnow() - older_than
    with session_scope(settings.metadata_url) as session:
        stuck = session.scalars(
            select(PublicationRequest).where(
                PublicationRequest.status == PUBLISHING,
                PublicationRequest.publishing_since <= cutoff,
            )
        ).all()
        found = [(r.id, r.template, r.version) for r in stuck]
    if not found:
        return []
    from mlops.prompts.store import open_store

    store = open_store(settings)
    for request_id, template, version in found:
        state = store.state(template)
        if state.live_version == version:
            sha = next(e.sha for e in reversed(state.releases) if e.version == version)
            _published(settings, request_id, sha or "")
            continue
        with session_scope(settings.metadata_url) as session:
            last = session.scalars(
                select(Approval.approver)
                .where(Approval.subject_kind == APPROVAL_KIND, Approval.subject_id == request_id)
                .order_by(Approval.decided_at.desc(), Approval.id.desc())
                .limit(1)
            ).first()
        _take_back(settings, request_id, last or "")
    return [request_id for request_id, _, _ in found]
