"""Approvals of production changes: a change that `config/gates.yaml` says needs N
approvals (a deployment to production, a prompt publication) waits until N distinct
approvers other than the one who asked for it approve, each with a comment; one rejection
ends it.

The decisions are rows of the `approvals` table, one per approver and change (a second
decision of the same approver is refused, so it counts once). `decide` runs inside the
caller's transaction, which holds the change's own row locked (`db.locked_scope`): two
approvers deciding at once, in any processes, are counted one after the other, so a change
never collects more than the approvals it needs and moves on exactly once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mlops.db import Approval, utcnow
from mlops.errors import ConflictError, ForbiddenError
from mlops.fields import UtcDatetime
from mlops.roles import Principal, Role

Decision = Literal["approve", "reject"]
COMMENT_LIMIT = 2000


class DecisionRequest(BaseModel):
    """An approver's decision as the API's body, the console's form and the CLI give it."""

    comment: str = Field(
        min_length=1, max_length=COMMENT_LIMIT, description="Why: kept with the decision."
    )


class DecisionInfo(BaseModel):
    approver: str
    decision: Decision
    comment: str
    decided_at: UtcDatetime


def decisions(session: Session, kind: str, subject_id: str) -> list[DecisionInfo]:
    """The decisions on one change, oldest first."""
    rows = session.scalars(
        select(Approval)
        .where(Approval.subject_kind == kind, Approval.subject_id == subject_id)
        .order_by(Approval.decided_at, Approval.id)
    )
    return [
        DecisionInfo(
            approver=r.approver, decision=r.decision, comment=r.comment, decided_at=r.decided_at
        )
        for r in rows
    ]


def approved(found: list[DecisionInfo]) -> int:
    """How many approvers approved."""
    return sum(d.decision == "approve" for d in found)


def decide(
    session: Session,
    kind: str,
    subject_id: str,
    *,
    requester: str,
    caller: Principal,
    decision: Decision,
    comment: str,
    what: str,
) -> list[DecisionInfo]:
    """Record `caller`'s decision on the change (`what` names it in messages); the
    decisions then, oldest first. Refused: a caller below the approver role (403), a
    requester approving their own change (403; they may reject it, which withdraws it),
    and a second decision of the same approver (409)."""
    caller.require(Role.APPROVER, f"Deciding on {what}")
    if decision == "approve" and caller.name == requester:
        raise ForbiddenError(
            f"{caller.name} asked for {what}: it needs approvers other than the requester.",
            {"user": caller.name, "requester": requester},
        )
    found = decisions(session, kind, subject_id)
    earlier = next((d for d in found if d.approver == caller.name), None)
    if earlier is not None:
        raise ConflictError(
            f"{caller.name} already decided on {what} ({earlier.decision}, "
            f"{earlier.decided_at:%Y-%m-%d %H:%M} UTC): each approver counts once.",
            {"user": caller.name, "decision": earlier.decision},
        )
    row = Approval(
        subject_kind=kind,
        subject_id=subject_id,
        approver=caller.name,
        decision=decision,
        comment=comment,
        decided_at=utcnow(),
    )
    session.add(row)
    session.flush()
    mine = DecisionInfo(
        approver=row.approver, decision=decision, comment=comment, decided_at=row.decided_at
    )
    return [*found, mine]
