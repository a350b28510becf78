"""Prefect flow `api-warm-up`: does nothing. The API runs it once at start-up, in the
background, so that the first deployment or evaluation a user asks for does not pay for
Prefect's first flow run in the process (engine imports, client, first API calls)."""

from __future__ import annotations

from prefect import flow


@flow(name="api-warm-up", log_prints=False)
def warm_up_flow() -> str:
    return "warm"
