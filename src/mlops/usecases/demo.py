"""Seed the demo: ingest the seeded demo bars, train every configuration of
config/models.yaml, and deploy the best (by ROC AUC) to production through the gated
`deploy` flow. `mlops demo` and the first `mlops up` run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

from mlops.roles import Principal, Role
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.features.ingest import IngestSummary
    from mlops.lifecycle.deployments import DeploymentInfo
    from mlops.lifecycle.training import TrainResult

SELECTION_METRIC = "roc_auc"


class DemoView(Protocol):
    """How a front end shows each step while it runs: each method runs `work` (in this
    thread or another) and returns what it returned."""

    def ingest(self, work: Callable[[], IngestSummary]) -> IngestSummary: ...

    def train(
        self, names: list[str], work: Callable[[], list[TrainResult]]
    ) -> list[TrainResult]: ...

    def deploy(self, model_uri: str, work: Callable[[], DeploymentInfo]) -> DeploymentInfo: ...


class Quietly:
    """A `DemoView` that shows nothing."""

    def ingest(self, work: Callable[[], IngestSummary]) -> IngestSummary:
        return work()

    def train(self, names: list[str], work: Callable[[], list[TrainResult]]) -> list[TrainResult]:
        return work()

    def deploy(self, model_uri: str, work: Callable[[], DeploymentInfo]) -> DeploymentInfo:
        return work()


@dataclass(frozen=True)
class DemoResult:
    ingest: IngestSummary
    trained: list[TrainResult]
    deployment: DeploymentInfo
    """The deployment of the best model (its status says whether the gates passed)."""


def seed_demo(settings: Settings, caller: str, view: DemoView | None = None) -> DemoResult:
    """Ingest, train all, deploy the best; Prefect must be configured (`configure_prefect`)."""
    from mlops.lifecycle.training import load_model_configs
    from mlops.orchestration import run_ingest, run_train_many
    from mlops.usecases import deployments as use

    view = view or Quietly()
    summary = view.ingest(partial(run_ingest, settings, "demo", caller, "demo data"))
    names = list(load_model_configs(settings))  # trained side by side (`train-many`)
    trained = view.train(names, partial(run_train_many, settings, names, caller))
    best = max(trained, key=lambda t: t.metrics.get(SELECTION_METRIC, 0.0))
    request = use.DeployRequest(
        version=best.model_version,
        target_stage="production",
        reason=f"demo: best {SELECTION_METRIC} of the demo models",
    )
    started = use.deploy(settings, Principal(caller, Role.ADMIN), best.model_name, request)
    deployed = view.deploy(best.model_uri, started.wait)
    return DemoResult(ingest=summary, trained=trained, deployment=deployed)
