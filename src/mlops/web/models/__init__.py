"""The models section: experiments (list, creation, detail with runs, metric charts), the
model registry as cards with stage chips and a Deploy form, deployments with a live stepper
of their stages and gates, and rollback (confirmed on a page of its own, no JavaScript).

One module per page group: `experiments`, `registry` (models, Deploy, rollback) and
`deployments` (the list and the stepper); `common` holds what they share.

Pages call the lifecycle functions the API uses (`mlops.lifecycle.experiments`,
`comparison`, `registry`, `deployments`, and `mlops.orchestration.start_deployment`)."""

from __future__ import annotations

from mlops.web.models import deployments, experiments, registry

ROUTERS = (experiments.router, registry.router, deployments.router)
"""The page groups' routers, in the order they are mounted."""
