"""The public API, ``import retention as rt``: exact values on a hand-made log, one fit -> score -> rank on
generated data, and the promise that importing the package (or its settings) loads nothing heavy."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import retention as rt
from features.synthetic import generate_transactions
from retention import api

CUTOFF = "2024-01-31"


@pytest.fixture
def raw() -> pd.DataFrame:
    """Three customers' lines, one broken row and one duplicated line.

    A buys on Jan 1 (10) and Jan 11 (one order of two lines, 20 + 10), refunds 5 on Jan 15 and buys 20 on Feb 5.
    B buys 50 at 23:00 UTC on the cutoff day (included) and refunds 10 on Feb 10. C's only purchase is at 23:30 on
    Jan 31 at UTC-2, i.e. Feb 1 01:30 UTC: after the cutoff.
    """
    return pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "A", "A", "B", "B", "C", None, "A"],
            "transaction_id": ["T1", "T2", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T1"],
            "timestamp": [
                "2024-01-01",
                "2024-01-11T09:00:00Z",
                "2024-01-11T10:00:00Z",
                "2024-01-15",
                "2024-02-05",
                "2024-01-31T23:00:00Z",
                "2024-02-10",
                "2024-01-31T23:30:00-02:00",
                "2024-01-20",
                "2024-01-01",
            ],
            "amount": [10.0, 20.0, 10.0, -5.0, 20.0, 50.0, -10.0, 15.0, 5.0, 10.0],
        }
    )


# --------------------------------------------------------------------------------------------------------------
# the package
# --------------------------------------------------------------------------------------------------------------


def test_public_names_are_the_api_and_two_modules() -> None:
    assert sorted(rt.__all__) == sorted([*api.__all__, "analysis", "settings"])
    for name in api.__all__:
        assert getattr(rt, name) is getattr(api, name)
        assert getattr(rt, name).__doc__, f"rt.{name} has no docstring"
    import retention.analysis
    import retention.settings
    import serving.pareto

    assert rt.settings is retention.settings and rt.analysis is retention.analysis
    assert rt.top_share is serving.pareto.top_share, "one top-share function"
    assert set(rt.__all__) <= set(dir(rt))
    with pytest.raises(AttributeError, match="no attribute 'score_table'"):
        rt.score_table  # noqa: B018


def test_importing_the_package_or_its_settings_loads_nothing_heavy() -> None:
    heavy = ("lightgbm", "mlflow", "training", "retention.api", "serving", "features", "pandas")
    code = (
        "import sys, retention.settings, retention.progress, retention\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
        "retention.features\n"
        "print(','.join(m for m in ('retention.api', 'lightgbm', 'mlflow', 'training') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    before, after = out.stdout.splitlines()
    assert before == "", f"`import retention` loaded {before}"
    assert after == "retention.api", "rt.features loads the API, still without LightGBM, MLflow or training"


# --------------------------------------------------------------------------------------------------------------
# exact values on a hand-made log
# --------------------------------------------------------------------------------------------------------------


def test_read_transactions_applies_the_contract(raw: pd.DataFrame, tmp_path: Path) -> None:
    tx, quality = rt.read_transactions(raw, as_of=CUTOFF)
    assert tx["customer_id"].tolist() == ["A", "A", "A", "B"]
    assert tx["transaction_id"].tolist() == ["T1", "T2", "T3", "T5"]
    assert tx["amount"].tolist() == [10.0, 30.0, -5.0, 50.0], "the two lines of T2 are one order"
    assert str(tx["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert tx["timestamp"].iloc[1] == pd.Timestamp("2024-01-11T09:00:00Z"), "an order is at its earliest line"
    assert (quality.rows_read, quality.rows_valid, quality.orders, quality.customers) == (10, 5, 4, 2)
    assert quality.rule_counts == {
        "null_customer_id": 1,
        "bad_timestamp": 0,
        "implausible_timestamp": 0,
        "bad_amount": 0,
        "duplicate_line": 1,
        "after_as_of": 3,
    }
    assert quality.as_of == CUTOFF and quality.last_date == CUTOFF

    path = tmp_path / "lines.csv"
    raw.to_csv(path, index=False)
    from_file, file_quality = rt.read_transactions(path, as_of=dt.date(2024, 1, 31))
    pd.testing.assert_frame_equal(from_file, tx)
    assert file_quality == quality
    with pytest.raises(rt.ContractError, match="does not exist"):
        rt.read_transactions(tmp_path / "missing.csv")


def test_features_at_a_cutoff_exact_values(raw: pd.DataFrame) -> None:
    features = rt.features(raw, CUTOFF)
    assert features["customer_id"].tolist() == ["A", "B"], "C's first purchase is on Feb 1, UTC"
    assert features["cutoff"].tolist() == [dt.date(2024, 1, 31)] * 2
    expected = {
        # A: purchase days Jan 1 and Jan 11 (10 + 30), refund 5 on Jan 15; B: 50 on the cutoff day itself
        "recency_days": [20.0, 0.0],
        "tenure_days": [30.0, 0.0],
        "n_purchase_days": [2.0, 1.0],
        "n_transactions": [2.0, 1.0],
        "net_spend": [35.0, 50.0],
        "gross_spend": [40.0, 50.0],
        "max_amount": [30.0, 50.0],
        "tx_30d": [1.0, 1.0],  # the last 30 days are Jan 2 .. Jan 31
        "spend_30d": [25.0, 50.0],
        "refund_count": [1.0, 0.0],
        "refund_share": [0.125, 0.0],
        "btyd_frequency": [1.0, 0.0],
        "btyd_recency": [10.0, 0.0],
        "btyd_T": [30.0, 0.0],
        "btyd_monetary": [30.0, 0.0],
        "ipt_mean_days": [10.0, np.nan],
    }
    for name, values in expected.items():
        np.testing.assert_array_equal(features[name].to_numpy(), values, err_msg=name)

    pd.testing.assert_frame_equal(rt.features(raw, dt.date(2024, 1, 31)), features)
    # a datetime is its UTC day: 23:30 at UTC-2 on Jan 31 is Feb 1, when C has bought
    late = dt.datetime(2024, 1, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))
    both = rt.features(raw, [CUTOFF, late])
    assert both["cutoff"].tolist() == [dt.date(2024, 1, 31)] * 2 + [dt.date(2024, 2, 1)] * 3
    assert both["customer_id"].tolist() == ["A", "B", "A", "B", "C"]
    with pytest.raises(rt.ContractError, match="not a date"):
        rt.features(raw, "end of January")


def test_labels_for_a_cutoff_and_horizon(raw: pd.DataFrame) -> None:
    labels = rt.labels(raw, CUTOFF, 30)
    expected = pd.DataFrame(
        {
            "customer_id": pd.array(["A", "B"], dtype="str"),
            "cutoff": [dt.date(2024, 1, 31)] * 2,
            # A buys 20 on Feb 5; B only refunds 10 on Feb 10: a refund is not a purchase, so B churned
            "churned": np.array([0, 1], dtype=np.int8),
            "future_value": [20.0, -10.0],
        }
    )
    pd.testing.assert_frame_equal(labels, expected)
    short = rt.labels(raw, dt.date(2024, 1, 31), 4)  # Feb 1 .. Feb 4: nothing bought
    assert short["churned"].tolist() == [1, 1] and short["future_value"].tolist() == [0.0, 0.0]
    with pytest.raises(rt.ContractError, match="at least 1 day"):
        rt.labels(raw, CUTOFF, 0)


# --------------------------------------------------------------------------------------------------------------
# fit -> score -> rank on generated data
# --------------------------------------------------------------------------------------------------------------

AS_OF = "2024-12-30"


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    return generate_transactions(300, 730, seed=3, start="2023-01-01")


@pytest.fixture(scope="module")
def fitted(generated: pd.DataFrame):
    return rt.fit(generated, AS_OF, horizon_days=90, seed=0, num_threads=1)


def test_fit_score_rank_end_to_end(generated: pd.DataFrame, fitted, tmp_path: Path) -> None:
    from serving.batch import score_partition
    from serving.ranking import rank_frame
    from serving.scoring import reason_text

    model = fitted.model
    assert model.meta.horizon_days == 90 and str(model.meta.trained_as_of) == AS_OF
    assert fitted.plan.validation_cutoff == dt.date(2024, 10, 1), "validation at as_of - H"

    scored = rt.score(model, generated, AS_OF)
    population = rt.features(generated, AS_OF)
    assert scored.customer_id.tolist() == population["customer_id"].tolist()
    assert len(scored) == 300
    assert np.all((scored.churn_probability >= 0) & (scored.churn_probability <= 1))
    np.testing.assert_array_equal(scored.value_at_risk, scored.churn_probability * scored.expected_value)

    ranked = rt.rank(scored)
    assert ranked["retention_rank"].tolist() == list(range(1, 301))
    assert (np.diff(ranked["value_at_risk"].to_numpy()) <= 0).all(), "highest value at risk first"
    assert sorted(ranked["customer_id"]) == sorted(population["customer_id"])
    pd.testing.assert_frame_equal(rt.rank(scored, top_k=10), ranked.head(10))
    pd.testing.assert_frame_equal(rt.rank(rt.score(model, generated, dt.date(2024, 12, 30), as_frame=True)), ranked)
    # exactly the rows of the nightly job's scoring function (serving.batch, the one the Spark engine runs too)
    nightly = rank_frame(score_partition(generated, model, dt.date(2024, 12, 30)).scores)
    pd.testing.assert_frame_equal(ranked, nightly)

    # the reason rows say what the list's reason text says
    top = ranked["customer_id"].iloc[0]
    reasons = rt.reasons(scored, [top])
    assert reasons["customer_id"].unique().tolist() == [top]
    assert reasons["reason"].tolist() == list(range(1, len(reasons) + 1))
    texts = [reason_text(r.fact, r.cause, r.effect) for r in reasons.itertuples()]
    assert texts == ranked.loc[0, [f"reason_{k}" for k in range(1, len(reasons) + 1)]].tolist()
    assert len(rt.reasons(scored)) == int(scored.reason_count.sum())
    with pytest.raises(KeyError, match="nobody"):
        rt.reasons(scored, ["nobody"])

    share = rt.top_share(scored.expected_value, 0.2)
    values = np.sort(scored.expected_value)[::-1]
    assert share == pytest.approx(values[:60].sum() / values.sum(), rel=1e-12), "60 of 300 customers, no ties"

    # a saved version loads back and scores the same
    model.save(tmp_path / "bundle")
    loaded = rt.load_model(tmp_path / "bundle", isolate=False)
    np.testing.assert_array_equal(rt.score(loaded, generated, AS_OF, reasons=0).value_at_risk, scored.value_at_risk)


def test_fit_btyd_is_the_baseline_fit_at_as_of(generated: pd.DataFrame) -> None:
    from features.kernel import compute_features, index_transactions
    from training.baselines import fit_btyd

    model = rt.fit_btyd(generated, AS_OF)
    tx, _ = rt.read_transactions(generated)
    assert model.to_dict() == fit_btyd(compute_features(index_transactions(tx), dt.date(2024, 12, 30))).to_dict()
    assert model.time_unit == "days"
    predicted = model.predict([2.0], [100.0], [300.0], [40.0], 90)
    assert 0 < predicted["churn_probability"][0] < 1 and predicted["expected_value"][0] > 0


def test_train_calls_the_training_job(generated: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``rt.train`` hands the contract's output, its report and the as-of day to :func:`training.jobs.train`."""
    from training import jobs

    calls: list[dict] = []

    def record(transactions, quality, **kwargs):
        calls.append({"transactions": transactions, "quality": quality, **kwargs})
        return "summary"

    monkeypatch.setattr(jobs, "train", record)
    assert rt.train(generated, AS_OF, horizon_days=60, seed=2, force=True) == "summary"
    path = tmp_path / "tx.parquet"
    generated.to_parquet(path)
    rt.train(path, dt.date(2024, 12, 30))
    tx, quality = rt.read_transactions(generated, as_of=AS_OF)
    for call, source in zip(calls, (api.IN_MEMORY_SOURCE, str(path)), strict=True):
        pd.testing.assert_frame_equal(call["transactions"], tx)
        assert call["quality"] == quality
        assert call["as_of"] == dt.date(2024, 12, 30) and call["source"] == source
    assert (calls[0]["horizon_days"], calls[0]["seed"], calls[0]["force"]) == (60, 2, True)
    assert calls[1]["horizon_days"] is None, "the config's horizon"
    assert calls[0]["campaigns"] is None and calls[0]["campaign_quality"] is None

    # a campaign log (a frame or a file) goes through the campaign contract to the job
    log = pd.DataFrame(
        {"customer_id": ["C1", "C2", None], "campaign_id": "K", "sent_at": "2024-09-01", "treatment": [1, 0, 1]}
    )
    log.to_csv(tmp_path / "campaigns.csv", index=False)
    rt.train(generated, AS_OF, campaigns=log)
    rt.train(generated, AS_OF, campaigns=tmp_path / "campaigns.csv")
    for call in calls[2:]:
        assert call["campaigns"]["customer_id"].tolist() == ["C1", "C2"]
        assert call["campaign_quality"].rule_counts["null_customer_id"] == 1


def test_backtest_one_fold(generated: pd.DataFrame) -> None:
    table = rt.backtest(generated, AS_OF, folds=1, horizon_days=90, log=False, seed=0, num_threads=1)
    assert table["as_of"].unique().tolist() == [dt.date(2024, 10, 1)], "the fold's outcome is known at as_of"
    assert set(table["model"]) == {"model", "btyd", "naive", "population_average"}
    assert table.loc[table["group"] == "all", "customers"].tolist() == [len(rt.features(generated, "2024-10-01"))] * 4
