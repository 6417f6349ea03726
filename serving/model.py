"""The scoring bundle: both LightGBM heads plus everything needed to score, in one directory.

Layout of a bundle directory (written by ``training``, read here; serving never imports training)::

    churn.txt     LightGBM booster, native text format: P(no purchase in the next horizon_days) before calibration
    value.txt     LightGBM booster, native text format: expected net revenue over the horizon (currency units)
    bundle.json   feature list, horizon, training as-of date, calibrator, value level factor, margin,
                  discount rate, tier and segment thresholds, feature descriptions

Scores for a feature matrix ``X`` (rows = customers, columns = ``feature_columns`` in order):

- ``churn_probability`` = isotonic calibrator(churn booster(X)), in [0, 1];
- ``expected_value`` = max(value booster(X), 0) x level_factor x margin x discount_factor: expected net
  revenue (or, with a margin < 1, gross profit) over the next ``horizon_days``, discounted to the as-of date
  at the mid-horizon point with the annual ``discount_rate``;
- ``value_at_risk`` = churn_probability x expected_value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

BUNDLE_FILE = "bundle.json"
CHURN_FILE = "churn.txt"
VALUE_FILE = "value.txt"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class BundleMeta:
    """Everything besides the two boosters that a model version needs to score (JSON-serialisable).

    ``calibrator_x``/``calibrator_y``: isotonic calibration knots (raw -> calibrated churn probability).
    ``tier_thresholds``: expected-value lower bounds per tier, highest tier first (currency units).
    ``segment_current_threshold``/``segment_future_value_threshold``: split points of the current x future
    value matrix (current value = net spend in the last 365 days).
    """

    feature_columns: tuple[str, ...]
    horizon_days: int
    trained_as_of: str
    calibrator_x: tuple[float, ...]
    calibrator_y: tuple[float, ...]
    level_factor: float
    margin: float
    discount_rate: float
    tier_names: tuple[str, ...]
    tier_thresholds: tuple[float, ...]
    segment_current_threshold: float
    segment_future_threshold: float
    feature_descriptions: dict[str, str]
    feature_reference: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict)
    """Per feature: decile ``edges`` and bin ``shares`` at the training as-of date (drift reference)."""
    format_version: int = FORMAT_VERSION

    @property
    def discount_factor(self) -> float:
        """Mid-horizon discount factor ``(1 + rate) ** -(horizon_days / 365 / 2)``."""
        return float((1.0 + self.discount_rate) ** (-(self.horizon_days / 365.0) / 2.0))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BundleMeta:
        raw: dict[str, Any] = json.loads(text)
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"bundle format {raw.get('format_version')} is not supported (expected {FORMAT_VERSION})")
        for key in ("feature_columns", "calibrator_x", "calibrator_y", "tier_names", "tier_thresholds"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


@dataclasses.dataclass
class Scores:
    """Per-customer model outputs, aligned with the input rows."""

    churn_probability: np.ndarray
    expected_value: np.ndarray
    value_at_risk: np.ndarray


class ScoringModel:
    """Both boosters and their metadata, loaded once; ``score`` is safe to call from many threads."""

    def __init__(self, churn_booster: Any, value_booster: Any, meta: BundleMeta, version: str | None = None):
        self.churn_booster = churn_booster
        self.value_booster = value_booster
        self.meta = meta
        self.version = version
        self._calib_x = np.asarray(meta.calibrator_x, dtype=np.float64)
        self._calib_y = np.asarray(meta.calibrator_y, dtype=np.float64)
        self._value_scale = meta.level_factor * meta.margin * meta.discount_factor

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.meta.feature_columns

    @classmethod
    def load(cls, directory: str | Path, version: str | None = None) -> ScoringModel:
        import lightgbm as lgb

        directory = Path(directory)
        meta = BundleMeta.from_json((directory / BUNDLE_FILE).read_text())
        churn = lgb.Booster(model_file=str(directory / CHURN_FILE))
        value = lgb.Booster(model_file=str(directory / VALUE_FILE))
        for name, booster in (("churn", churn), ("value", value)):
            if tuple(booster.feature_name()) != meta.feature_columns:
                raise ValueError(f"{name} booster features do not match the bundle's feature list")
        return cls(churn, value, meta, version)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.churn_booster.save_model(str(directory / CHURN_FILE))
        self.value_booster.save_model(str(directory / VALUE_FILE))
        (directory / BUNDLE_FILE).write_text(self.meta.to_json())
        return directory

    def calibrate(self, raw_churn: np.ndarray) -> np.ndarray:
        return np.interp(raw_churn, self._calib_x, self._calib_y)

    def score(self, X: np.ndarray, num_threads: int = 0) -> Scores:
        """Score a float64 matrix whose columns follow :attr:`feature_columns`.

        ``num_threads=1`` for single rows online (LightGBM's thread start-up dominates), 0 = all cores in batch.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        raw = self.churn_booster.predict(X, num_threads=num_threads)
        churn = np.clip(self.calibrate(raw), 0.0, 1.0)
        value = np.maximum(self.value_booster.predict(X, num_threads=num_threads), 0.0) * self._value_scale
        return Scores(churn, value, churn * value)

    def churn_contributions(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """LightGBM ``pred_contrib`` of the churn head: ``[n, k]`` log-odds contributions (bias column dropped)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        contrib = self.churn_booster.predict(X, pred_contrib=True, num_threads=num_threads)
        return np.asarray(contrib)[:, :-1]

    def describe(self) -> dict[str, Any]:
        return {
            "model_version": self.version,
            "horizon_days": self.meta.horizon_days,
            "trained_as_of": self.meta.trained_as_of,
            "features": len(self.meta.feature_columns),
            "margin": self.meta.margin,
            "discount_rate": self.meta.discount_rate,
            "tiers": dict(zip(self.meta.tier_names, self.meta.tier_thresholds, strict=True)),
        }


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
