"""A tiny scoring model built from two small LightGBM boosters on three features (no training pipeline, no workspace),
for unit tests of bundles, scoring and online answers, and for servers started on a hand-made bundle."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from serving.model import (
    BundleMeta,
    ScoringModel,
)

COLUMNS = ("recency_days", "spend_365d", "n_purchase_days")


def make_model(version: str | None = None) -> ScoringModel:
    rng = np.random.default_rng(7)
    X = rng.uniform(0, 100, size=(400, len(COLUMNS)))
    churned = (X[:, 0] + rng.normal(0, 20, len(X)) > 50).astype(float)
    value = np.maximum(X[:, 1] * 2 + rng.normal(0, 10, len(X)), 0)
    params = {"verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    churn = lgb.train(
        {**params, "objective": "binary"}, lgb.Dataset(X, churned, feature_name=list(COLUMNS)), num_boost_round=8
    )
    val = lgb.train(
        {**params, "objective": "tweedie"}, lgb.Dataset(X, value, feature_name=list(COLUMNS)), num_boost_round=8
    )
    meta = BundleMeta(
        feature_columns=COLUMNS,
        horizon_days=90,
        trained_as_of="2024-12-30",
        calibrator_x=(0.0, 1.0),
        calibrator_y=(0.0, 1.0),
        level_factor=1.0,
        margin=1.0,
        discount_rate=0.0,
        tier_names=("gold", "bronze"),
        tier_thresholds=(100.0, 0.0),
        segment_current_threshold=50.0,
        segment_future_threshold=100.0,
        feature_descriptions={c: c for c in COLUMNS},
    )
    return ScoringModel(churn, val, meta, version)


def abort_lightgbm(path: Path) -> None:
    """An edit that keeps the header and the end marker but makes LightGBM 4.7 abort while parsing."""
    path.write_text(path.read_text().replace("tree_sizes=", "tree_sizes=99999 ", 1))
