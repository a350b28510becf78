"""Serve the project's flows as Prefect deployments with the cron schedules of
`config/schedules.yaml` (run by `mlops up`; a schedule or a click in the Prefect UI
then starts a real run in this process)."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from mlops.errors import ConfigError
from mlops.settings import Settings, load_settings


class ScheduledDeployment(BaseModel):
    flow: str
    name: str
    cron: str
    timezone: str = "UTC"
    description: str = ""
    parameters: dict[str, Any] = {}


def load_schedules(settings: Settings) -> list[ScheduledDeployment]:
    path = settings.config_dir / "schedules.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}") from exc
    return [ScheduledDeployment.model_validate(item) for item in raw.get("deployments", [])]


def flow_by_name(name: str) -> Any:
    if name == "ingest":
        from flows.ingest import ingest_flow

        return ingest_flow
    if name == "train":
        from flows.train import train_flow

        return train_flow
    if name == "train-many":
        from flows.train import train_many_flow

        return train_many_flow
    if name == "evaluate":
        from flows.evaluate import evaluate_flow

        return evaluate_flow
    raise ConfigError(f"Unknown flow '{name}' in schedules.yaml.")


def deployments(settings: Settings, **options: Any) -> list[Any]:
    """Prefect deployments (with cron schedules) of every scheduled flow; `options` go to
    `to_deployment` (the work pool's deployments name their flows by module path)."""
    from prefect.schedules import Cron

    return [
        flow_by_name(item.flow).to_deployment(
            name=item.name,
            schedule=Cron(item.cron, timezone=item.timezone),
            description=item.description,
            parameters=item.parameters,
            **options,
        )
        for item in load_schedules(settings)
    ]


def main() -> None:
    from prefect import serve

    from mlops.reaper import reap_interrupted

    settings = load_settings()
    reap_interrupted(settings)  # the runs this process served before it was restarted
    serve(*deployments(settings), print_starting_message=True)


if __name__ == "__main__":
    main()
