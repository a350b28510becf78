"""The Feast feature repository: every entity, source, feature view and feature
service of the platform, as plain declarations.

Source paths are relative to the offline store folder of the active profile
(`MLOPS_HOME/offline`); the platform resolves them before `apply`.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

OWNER = "quant-research@example.com"

ticker = Entity(
    name="ticker",
    join_keys=["ticker"],
    value_type=ValueType.STRING,
    description="Exchange ticker symbol of a listed equity.",
)

daily_features_source = FileSource(
    name="daily_features",
    path="daily_features.parquet",
    timestamp_field="event_timestamp",
    description="Features computed from validated daily OHLCV bars, one row per ticker and day.",
)

labels_source = FileSource(
    name="daily_labels",
    path="labels.parquet",
    timestamp_field="event_timestamp",
    description="Training labels; they look one day ahead and are never served online.",
)

price_returns = FeatureView(
    name="price_returns",
    entities=[ticker],
    ttl=timedelta(days=7),
    schema=[
        Field(name="ret_1d", dtype=Float64, description="Close-to-close return over 1 day."),
        Field(name="ret_5d", dtype=Float64, description="Close-to-close return over 5 days."),
        Field(name="ret_20d", dtype=Float64, description="Close-to-close return over 20 days."),
    ],
    source=daily_features_source,
    online=True,
    description="Simple returns of the daily close over several windows.",
    owner=OWNER,
    tags={"team": "quant-research", "family": "returns"},
)

risk_momentum = FeatureView(
    name="risk_momentum",
    entities=[ticker],
    ttl=timedelta(days=7),
    schema=[
        Field(name="vol_20d", dtype=Float64, description="Annualized std of 20 daily log returns."),
        Field(name="mom_10d", dtype=Float64, description="Close over its 10-day mean, minus 1."),
        Field(name="mom_20d", dtype=Float64, description="Close over its 20-day mean, minus 1."),
        Field(name="rsi_14", dtype=Float64, description="Wilder's 14-day relative strength index."),
    ],
    source=daily_features_source,
    online=True,
    description="Volatility, momentum and oscillator features.",
    owner=OWNER,
    tags={"team": "quant-research", "family": "risk"},
)

volume_signals = FeatureView(
    name="volume_signals",
    entities=[ticker],
    ttl=timedelta(days=7),
    schema=[
        Field(
            name="volume_zscore_20d",
            dtype=Float64,
            description="Z-score of today's volume within the last 20 days.",
        ),
    ],
    source=daily_features_source,
    online=True,
    description="Trading-activity features.",
    owner=OWNER,
    tags={"team": "quant-research", "family": "volume"},
)

training_labels = FeatureView(
    name="training_labels",
    entities=[ticker],
    ttl=timedelta(days=7),
    schema=[
        Field(
            name="label_next_day_up",
            dtype=Int64,
            description="1 if the next trading day's close is above today's close, else 0.",
        ),
    ],
    source=labels_source,
    online=False,
    description="Next-day direction label for training; kept out of the serving features.",
    owner=OWNER,
    tags={"team": "quant-research", "family": "label"},
)

model_features = FeatureService(
    name="model_features",
    features=[price_returns, risk_momentum, volume_signals],
    description="The serving features of the direction model (no label).",
    owner=OWNER,
)
