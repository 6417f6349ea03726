"""training.heads: the hybrid heads' BTYD offsets (a hybrid head with no trees is BTYD exactly), the labels, one
real hybrid LightGBM fit whose trees cannot split, and the search draws."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest

from serving.model import CHURN_OFFSET_CLIP, VALUE_OFFSET_FLOOR
from training import heads
from training.config import DEFAULT_CONFIG


def btyd_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "btyd_churn": [0.5, 0.2, 0.0, 1.0, 0.9],
            "btyd_value": [math.e, 20.0, 0.0, 0.004, 1.0],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0],
            "churned": [1, 0, 0, 1, 1],
            "future_value": [3.0, -2.0, 0.0, 10.0, 1.5],
        }
    )


def test_offsets_are_the_btyd_prior_on_the_heads_raw_scales() -> None:
    frame = btyd_frame()
    churn = heads.offset(frame, "churn")
    clip = CHURN_OFFSET_CLIP
    expected = [0.0, math.log(0.2 / 0.8), math.log(clip / (1 - clip)), math.log((1 - clip) / clip), math.log(9.0)]
    np.testing.assert_allclose(churn, expected, rtol=1e-12, atol=1e-15)
    value = heads.offset(frame, "value")
    np.testing.assert_allclose(value, [1.0, math.log(20.0), *[math.log(VALUE_OFFSET_FLOOR)] * 2, 0.0], atol=1e-15)


class NoTrees:
    """A booster whose trees add nothing: raw score 0 for every row."""

    def predict(self, X, num_iteration=None, raw_score=False):
        assert raw_score, "a hybrid head reads the trees' raw score"
        return np.zeros(len(X))


def test_a_hybrid_head_with_no_trees_predicts_btyd() -> None:
    frame = btyd_frame()
    head = heads.FittedHead(NoTrees(), {}, best_iteration=1, valid_score=0.0, hybrid=True)
    churn = heads.predict_raw(head, frame, ["x"], kind="churn")
    clip = CHURN_OFFSET_CLIP
    np.testing.assert_allclose(churn, [0.5, 0.2, clip, 1 - clip, 0.9], rtol=1e-12)
    value = heads.predict_raw(head, frame, ["x"], kind="value")
    np.testing.assert_allclose(value, [math.e, 20.0, VALUE_OFFSET_FLOOR, VALUE_OFFSET_FLOOR, 1.0], rtol=1e-12)


def test_a_real_hybrid_fit_whose_trees_cannot_split_stays_at_the_prior() -> None:
    """LightGBM with init_score and a constant feature: every tree is one leaf fitting the mean residual, so the
    head moves all rows by one shift on the log-odds scale -- and keeps BTYD's order exactly."""
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({"btyd_churn": rng.uniform(0.05, 0.95, n), "x": np.ones(n)})
    frame["btyd_value"] = 1.0
    frame["churned"] = (rng.uniform(size=n) < frame["btyd_churn"]).astype(float)
    frame["future_value"] = 0.0
    config = DEFAULT_CONFIG
    head = heads.fit_head(frame, frame, ["x"], kind="churn", config=config, hybrid=True)
    p = heads.predict_raw(head, frame, ["x"], kind="churn")
    logit_shift = np.log(p / (1 - p)) - heads.offset(frame, "churn")
    np.testing.assert_allclose(logit_shift, logit_shift[0], atol=1e-9)
    assert (np.argsort(p, kind="stable") == np.argsort(frame["btyd_churn"].to_numpy(), kind="stable")).all()


def test_labels_clip_negative_future_value_to_zero() -> None:
    frame = btyd_frame()
    assert heads.churn_label(frame).tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert heads.value_label(frame).tolist() == [3.0, 0.0, 0.0, 10.0, 1.5]


def test_the_search_starts_with_the_defaults_then_draws_from_the_space() -> None:
    draws = heads.sample_params(DEFAULT_CONFIG)
    assert len(draws) == DEFAULT_CONFIG.tune and draws[0] == {}
    for draw in draws[1:]:
        assert set(draw) == set(DEFAULT_CONFIG.search_space)
        assert all(value in DEFAULT_CONFIG.search_space[key] for key, value in draw.items())
    assert heads.sample_params(DEFAULT_CONFIG) == draws  # seeded


def test_isotonic_knots_are_non_decreasing_probabilities() -> None:
    x, y = heads.fit_isotonic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0) and y.min() >= 0 and y.max() <= 1
    # pool adjacent violators: (1, 0) in the middle pools to 0.5
    assert np.interp([0.1, 0.25, 0.4], x, y) == pytest.approx([0.0, 0.5, 1.0])


def signal_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=n), "z": rng.uniform(size=n), "btyd_churn": rng.uniform(0.05, 0.95, n)})
    frame["btyd_value"] = rng.gamma(2.0, 10.0, n)
    frame["churned"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-2 * frame["x"]))).astype(float)
    frame["future_value"] = np.where(frame["churned"] > 0, 0.0, rng.gamma(2.0, 5.0 + 10 * frame["z"]))
    return frame


def test_splits_binned_once_and_shared_by_four_fits_give_the_boosters_of_fresh_datasets() -> None:
    """Label and init score do not touch the bins: the selection fits (plain kinds first, then hybrid) and the two
    refits on shared :class:`heads.Split` s are the very models fresh per-fit Datasets give."""
    train, valid, columns = signal_frame(600, 1), signal_frame(300, 2), ["x", "z"]
    config = DEFAULT_CONFIG.replace(num_threads=1, max_rounds=40, early_stopping_rounds=5)
    rows = heads.split(train, columns)
    valid_rows = heads.split(valid, columns, reference=rows, keep_matrix=True)
    for hybrid in (False, True):
        for kind in ("churn", "value"):
            shared = heads.fit_head(rows, valid_rows, columns, kind=kind, config=config, hybrid=hybrid)
            fresh = heads.fit_head(train, valid, columns, kind=kind, config=config, hybrid=hybrid)
            assert shared.booster.model_to_string() == fresh.booster.model_to_string()
            assert shared.best_iteration == fresh.best_iteration
            np.testing.assert_array_equal(
                heads.predict_raw(shared, valid_rows, columns, kind=kind),
                heads.predict_raw(fresh, valid, columns, kind=kind),
            )
    everything = heads.split(train, columns)
    for hybrid, kind in ((False, "value"), (True, "churn")):
        head = heads.fit_head(train, valid, columns, kind=kind, config=config, hybrid=hybrid)
        shared = heads.refit_head(everything, columns, head, kind=kind)
        assert shared.model_to_string() == heads.refit_head(train, columns, head, kind=kind).model_to_string()


def test_a_plain_head_after_a_hybrid_one_on_a_shared_split_is_refused() -> None:
    train, columns = signal_frame(300, 3), ["x", "z"]
    config = DEFAULT_CONFIG.replace(num_threads=1, max_rounds=5, early_stopping_rounds=2)
    rows = heads.split(train, columns)
    heads.fit_head(rows, train, columns, kind="churn", config=config, hybrid=True)
    with pytest.raises(ValueError, match="init score"):
        heads.fit_head(rows, train, columns, kind="churn", config=config, hybrid=False)


def test_lightgbm_threads_wait_passively_unless_the_environment_says_otherwise(monkeypatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    heads._lightgbm()
    assert os.environ["OMP_WAIT_POLICY"] == heads.OMP_WAIT_POLICY == "passive"
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    heads._lightgbm()
    assert os.environ["OMP_WAIT_POLICY"] == "active"
