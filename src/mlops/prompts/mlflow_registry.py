"""Published prompt versions mirrored into MLflow's prompt registry, so the MLflow UI lists
them. Git stays the source of truth: each MLflow prompt version carries the commit sha and
git version as tags, and the MLflow alias `production` follows the live git version."""

from __future__ import annotations

import logging

from mlops.prompts.models import MlflowRegistration
from mlops.settings import Settings

log = logging.getLogger("mlops.prompts.mlflow")
ALIAS = "production"


def register_version(
    settings: Settings, name: str, source: str, sha: str, version: int, message: str
) -> MlflowRegistration:
    """Register a published version and point the `production` alias at it.

    Never raises: a failure is logged and returned, and the publish in git stands.
    """
    try:
        import mlflow.genai

        from mlops.lifecycle.mlflow_backend import configure_mlflow

        configure_mlflow(settings)
        registered = mlflow.genai.register_prompt(
            name=name,
            template=source,
            commit_message=message or f"git {sha[:10]} (v{version})",
            tags={"git_sha": sha, "git_version": str(version), "source": "mlops-prompts"},
        )
        mlflow.genai.set_prompt_alias(name, alias=ALIAS, version=registered.version)
    except Exception as exc:
        log.warning("MLflow registration of %s v%d failed: %s", name, version, exc)
        return MlflowRegistration(registered=False, error=f"{type(exc).__name__}: {exc}"[:1000])
    return MlflowRegistration(registered=True, prompt_version=int(registered.version))
