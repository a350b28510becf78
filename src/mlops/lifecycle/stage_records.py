"""The record of one deployment stage and its transitions: pending -> running -> passed or
failed; a stage that is not part of the deployment, or never reached, is skipped. The
deployment record keeps them as a list (`deployments.py`); each change is made here on a
typed record and stored whole."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from mlops.errors import ConflictError
from mlops.fields import UtcDatetime
from mlops.lifecycle.gates import GateResult

StageStatus = Literal["pending", "running", "passed", "failed", "skipped"]


class StageRecord(BaseModel):
    name: str
    status: StageStatus
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    seconds: float | None = None
    message: str = ""
    gates: list[GateResult] = []

    def started(self, at: datetime) -> StageRecord:
        """The stage running from `at`; only a pending stage starts."""
        self._require("pending", "start")
        return self.model_copy(update={"status": "running", "started_at": at})

    def ended(self, gates: list[GateResult], message: str, at: datetime) -> StageRecord:
        """The running stage with its gates: passed when there are gates and every one
        passed."""
        self._require("running", "end")
        passed = bool(gates) and all(g.passed for g in gates)
        seconds = (at - self.started_at).total_seconds() if self.started_at else None
        return self.model_copy(
            update={
                "status": "passed" if passed else "failed",
                "finished_at": at,
                "seconds": None if seconds is None else round(seconds, 3),
                "message": message,
                "gates": gates,
            }
        )

    def closed(self) -> StageRecord:
        """As the deployment ends: a stage never reached is skipped, a running one failed."""
        status = {"pending": "skipped", "running": "failed"}.get(self.status, self.status)
        return self.model_copy(update={"status": status})

    def as_the_registry_shows(self, alias_moved: bool) -> StageRecord:
        """As the reaper closes it: a running stage passed when its alias points at the
        version (moving it is the stage's one decisive step), else failed; a stage never
        reached is skipped."""
        if self.status == "pending":
            return self.model_copy(
                update={"status": "skipped", "message": "not reached: the process stopped"}
            )
        if self.status != "running":
            return self
        if alias_moved:
            return self.model_copy(
                update={"status": "passed", "message": "alias moved; the process stopped after"}
            )
        return self.model_copy(update={"status": "failed", "message": "interrupted"})

    def _require(self, status: StageStatus, action: str) -> None:
        if self.status != status:
            raise ConflictError(
                f"The {self.name} stage is {self.status}: it cannot {action}.",
                {"stage": self.name, "status": self.status},
            )
