"""Online feature lookup from the Feast online store."""

from __future__ import annotations

from typing import Any

from mlops.errors import InvalidInputError, NotFoundError
from mlops.features.catalog import active_definitions
from mlops.features.datasets import DatasetRequest, resolve_feature_refs
from mlops.features.store import open_store
from mlops.settings import Settings
from mlops.stores import ONLINE_STORE, outages_as_store_errors

MAX_TICKERS = 1000


def online_features(
    settings: Settings, tickers: list[str], features: list[str], feature_service: str | None
) -> dict[str, list[Any]]:
    """Latest serving values per ticker, column-wise ({'ticker': [...], 'ret_1d': [...]})."""
    if not tickers:
        raise InvalidInputError("Give at least one ticker.")
    if len(tickers) > MAX_TICKERS:
        raise InvalidInputError(f"At most {MAX_TICKERS} tickers per lookup.")
    store = open_store(settings)
    request = DatasetRequest(name="online", features=features, feature_service=feature_service)
    definitions = active_definitions(settings)
    refs = resolve_feature_refs(settings, request, definitions)
    offline_only = {name for name, v in definitions.items() if not v["online"]}
    blocked = [ref for ref in refs if ref.split(":")[0] in offline_only]
    if blocked:
        raise NotFoundError(f"Not served online: {', '.join(blocked)}.")
    with outages_as_store_errors(ONLINE_STORE):
        response = store.get_online_features(
            features=refs, entity_rows=[{"ticker": t} for t in tickers]
        )
    return dict(response.to_dict())
