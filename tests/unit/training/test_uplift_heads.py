"""training.uplift and the bundle's uplift heads (format 4): fit on a small randomized campaign whose effect lives
in one feature, the held-out gate, save / verify / load, the score's uplift only when trusted, older formats."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_util import COLUMNS, make_model

from features.contract import ContractError
from serving.model import (
    BUNDLE_FILE,
    MANIFEST_FILE,
    UPLIFT_ROLES,
    BundleIntegrityError,
    BundleMeta,
    ScoringModel,
    verify_bundle,
)
from training import uplift


def campaign(n: int = 4_000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A randomized campaign on :data:`model_util.COLUMNS`: customers with ``recency_days`` > 80 are lost causes
    (retention 0.05 either way: the highest churn risk), those with 50 < ``recency_days`` <= 80 persuadable (contact:
    retention 0.3 -> 0.8), the others with ``spend_365d`` > 80 sleeping dogs (0.7 -> 0.3), the rest unmoved (0.6)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.uniform(0, 100, size=(n, len(COLUMNS))), columns=list(COLUMNS))
    t = rng.integers(0, 2, n)
    recency = X["recency_days"].to_numpy()
    lost, persuadable = recency > 80, (recency > 50) & (recency <= 80)
    dog = ~lost & ~persuadable & (X["spend_365d"].to_numpy() > 80)
    p = np.select([lost, persuadable, dog], [0.05, np.where(t == 1, 0.8, 0.3), np.where(t == 1, 0.3, 0.7)], default=0.6)
    outcomes = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "campaign_id": "spring",
            "cutoff": pd.Timestamp("2024-03-01").date(),
            "treatment": t.astype(np.int8),
            "retained": (rng.random(n) < p).astype(np.int8),
        }
    )
    return X, outcomes


@pytest.fixture(scope="module")
def fitted() -> uplift.UpliftFit:
    """The T-learner alone (the bundle tests below name its files)."""
    X, outcomes = campaign()
    return uplift.fit_uplift(X, outcomes, COLUMNS, horizon_days=90, num_threads=1, learners=("t_learner",))


T_FILES = UPLIFT_ROLES["t_learner"]


@pytest.fixture(scope="module")
def model(fitted) -> ScoringModel:
    return uplift.with_uplift(make_model(), fitted)


def test_holdout_is_customer_grouped_stable_and_about_the_share() -> None:
    ids = pd.Series([f"C{i:05d}" for i in range(5_000)])
    held = uplift.uplift_holdout(ids)
    assert 0.27 < held.mean() < 0.33
    assert (uplift.uplift_holdout(ids[::-1]) == held[::-1]).all()  # same customer, same side
    again = uplift.uplift_holdout(pd.concat([ids, ids]))  # every campaign row of a customer on one side
    assert (again[:5_000] == again[5_000:]).all()


def test_fit_recovers_the_persuadables_and_is_trusted(fitted) -> None:
    m = fitted.metrics
    assert fitted.trusted and m["uplift_trusted"] == 1.0
    assert m["uplift_qini_model"] > m["uplift_qini_risk"] and m["uplift_qini_model"] > m["uplift_qini_random_p95"]
    assert m["uplift_qini_random"] == 0.0
    assert m["uplift_model_at_10"] > m["uplift_random_at_10"] == pytest.approx(m["uplift_ate"])
    rows = fitted.holdout
    X, _ = campaign()
    held = X.set_index(pd.Index([f"C{i:05d}" for i in range(len(X))])).loc[rows["customer_id"]]
    recency = held["recency_days"].to_numpy()
    persuadable = (recency > 50) & (recency <= 80)
    dog = (recency <= 50) & (held["spend_365d"].to_numpy() > 80)
    assert rows["uplift"][persuadable].mean() > 0.3 > 0 > -0.2 > rows["uplift"][dog].mean()
    assert fitted.meta["risk_source"] == "control_head"
    assert set(fitted.curves) == set(uplift.TARGETINGS)


def test_meta_is_json_native_and_describes_the_fit(fitted) -> None:
    meta = fitted.meta
    assert json.loads(json.dumps(meta)) == meta
    assert meta["learner"] == "t_learner" and meta["files"] == T_FILES
    assert meta["campaign_ids"] == ["spring"] and meta["horizon_days"] == 90
    assert sum(meta["rows"].values()) == 4_000
    assert meta["rows"]["holdout_treated"] + meta["rows"]["holdout_control"] == len(fitted.holdout)
    assert meta["metrics"]["uplift_qini_model"] == pytest.approx(fitted.metrics["uplift_qini_model"])


def test_too_few_rows_of_an_arm_is_a_contract_error() -> None:
    X, outcomes = campaign(n=400)
    outcomes.loc[outcomes.index[:380], "treatment"] = 1
    with pytest.raises(ContractError, match="control campaign row"):
        uplift.fit_uplift(X, outcomes, COLUMNS, horizon_days=90, num_threads=1)


def test_saved_bundle_has_format_4_manifest_roles_and_scores_uplift(model, fitted, tmp_path: Path) -> None:
    directory = model.save(tmp_path / "bundle")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    for role, file in T_FILES.items():
        assert file in manifest["files"]
        assert manifest["boosters"][role] == {"file": file, "objective": "binary", "num_features": len(COLUMNS)}
        assert (directory / file).read_text().startswith("tree\n")  # LightGBM native text, nothing pickled
    assert json.loads((directory / BUNDLE_FILE).read_text())["format_version"] == 4
    loaded = ScoringModel.load(directory)
    assert loaded.meta == model.meta
    X = np.random.default_rng(1).uniform(0, 100, size=(50, len(COLUMNS)))
    expected = fitted.boosters["uplift_treated"].predict(X) - fitted.boosters["uplift_control"].predict(X)
    scores = loaded.score(X)
    np.testing.assert_allclose(scores.uplift, expected, rtol=0, atol=1e-12)
    assert ((scores.uplift >= -1) & (scores.uplift <= 1)).all()
    assert loaded.describe()["uplift"]["scored"] is True


def test_untrusted_heads_are_versioned_but_score_no_uplift(model, tmp_path: Path) -> None:
    meta = dataclasses.replace(model.meta, uplift={**model.meta.uplift, "trusted": False})
    untrusted = ScoringModel(model.churn_booster, model.value_booster, meta, None, model.uplift_boosters)
    loaded = ScoringModel.load(untrusted.save(tmp_path / "bundle"))
    X = np.zeros((3, len(COLUMNS)))
    assert loaded.score(X).uplift is None
    assert loaded.raw_uplift(X).shape == (3,)
    assert loaded.describe()["uplift"]["scored"] is False


def test_a_format_3_bundle_loads_without_uplift(tmp_path: Path) -> None:
    old = make_model()
    directory = old.save(tmp_path / "bundle")
    raw = json.loads((directory / BUNDLE_FILE).read_text())
    raw.pop("uplift")
    raw["format_version"] = 3
    (directory / BUNDLE_FILE).write_text(json.dumps(raw))
    (directory / MANIFEST_FILE).unlink()  # a bundle from before this format's manifest digests of bundle.json
    loaded = ScoringModel.load(directory)
    assert loaded.meta.uplift is None and loaded.uplift_boosters is None
    assert loaded.score(np.zeros((2, len(COLUMNS)))).uplift is None
    assert loaded.describe()["uplift"] is None


def test_a_missing_or_swapped_uplift_head_is_refused_before_parsing(model, tmp_path: Path) -> None:
    directory = model.save(tmp_path / "bundle")
    (directory / T_FILES["uplift_control"]).unlink()
    with pytest.raises(BundleIntegrityError, match=r"uplift_control\.txt is listed in manifest\.json but missing"):
        verify_bundle(directory)
    (directory / MANIFEST_FILE).unlink()
    with pytest.raises(BundleIntegrityError, match=r"uplift_control\.txt is missing: the bundle has t_learner"):
        verify_bundle(directory)
    # a tweedie booster (the value head) saved as an uplift head: wrong objective for the role
    model.value_booster.save_model(str(directory / T_FILES["uplift_control"]))
    with pytest.raises(BundleIntegrityError, match="objective 'tweedie' but the uplift_control head needs binary"):
        verify_bundle(directory)


def test_meta_and_boosters_must_agree(model) -> None:
    with pytest.raises(ValueError, match="do not match the uplift boosters"):
        ScoringModel(model.churn_booster, model.value_booster, model.meta, None, None)
    with pytest.raises(ValueError, match="uplift horizon 30"):
        BundleMeta(**{**dataclasses.asdict(model.meta), "uplift": {**model.meta.uplift, "horizon_days": 30}})
    with pytest.raises(ValueError, match="uplift_treated"):
        ScoringModel(
            model.churn_booster, model.value_booster, model.meta, None, {"uplift_treated": model.churn_booster}
        )


def test_qini_plot_and_report_table_show_the_held_out_comparison(fitted) -> None:
    from training import plots, report

    coefficients = report.qini_coefficients(fitted.metrics)
    assert coefficients == {t: fitted.metrics[f"uplift_qini_{t}"] for t in uplift.TARGETINGS}
    fig = plots.plot_qini(fitted.curves, coefficients)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels[:3] == [
        f"uplift model (Qini {coefficients['model']:.3f})",
        f"churn risk (Qini {coefficients['risk']:.3f})",
        "random (Qini 0)",
    ]
    table = report.uplift_markdown(fitted.metrics).splitlines()
    assert table[0].split("|")[1:-1] == [" metric       ", " model ", "  risk ", " random "]
    assert [row.split("|")[1].strip() for row in table[2:]] == ["qini", "uplift_at_10", "uplift_at_20", "uplift_at_30"]


def test_registry_records_the_uplift_verdict(fitted) -> None:
    from training import registry

    assert registry.uplift_verdict(None) is None
    verdict = registry.uplift_verdict(fitted.meta)
    assert verdict["trusted"] is True and verdict["rule"] == fitted.meta["gate"]
    assert verdict["uplift_qini_model"] == pytest.approx(fitted.metrics["uplift_qini_model"])
    assert set(verdict) == {"trusted", "rule", *registry.UPLIFT_GATE_METRICS, "champion_learner"}
    assert verdict["champion_learner"] is None
    assert registry.uplift_verdict(fitted.meta, {"uplift_learner": "x_learner"})["champion_learner"] == "x_learner"
    # a version without uplift heads replacing a champion with some: said, not silent
    assert registry.uplift_verdict(None, {"as_of": "2024-12-30"}) is None
    dropped = registry.uplift_verdict(None, {"uplift_learner": "t_learner"})
    assert dropped["trusted"] is False and "promoting it drops the uplift scores" in dropped["note"]


def test_the_training_job_logs_the_uplift_heads_beside_the_two_heads(fitted, tmp_path, monkeypatch) -> None:
    import mlflow

    from features.campaigns import prepare_campaigns
    from training import jobs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # artifacts under tmp_path
    log = pd.DataFrame(
        {"customer_id": ["a", "b"], "campaign_id": "spring", "sent_at": "2024-03-01", "treatment": [1, 0]}
    )
    _, quality = prepare_campaigns(log)
    mlflow.set_experiment("uplift-unit")
    with mlflow.start_run() as run:
        jobs._log_uplift(fitted, quality)
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.metrics["uplift_qini_model"] == pytest.approx(fitted.metrics["uplift_qini_model"])
    assert {"uplift_qini_risk", "uplift_qini_random", "uplift_qini_random_p95", "uplift_trusted"} <= set(logged.metrics)
    assert logged.params["uplift_learner"] == "t_learner" and logged.params["uplift_campaigns"] == "spring"
    assert logged.tags["uplift_trusted"] == "True"
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/uplift.json") == fitted.meta
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/campaign_quality.json")["rows_valid"] == 2


def test_campaign_rows_without_a_known_outcome_or_customer_are_left_out_and_counted() -> None:
    from features.contract import prepare_transactions
    from features.kernel import index_transactions
    from features.synthetic import generate_transactions
    from features.synthetic_campaigns import simulate_campaign

    sim = simulate_campaign(generate_transactions(3_000, 730, seed=2), "2024-09-01", seed=2)
    prep = index_transactions(prepare_transactions(sim.transactions)[0])
    late = sim.campaigns.head(7).assign(campaign_id="late", sent_at=pd.Timestamp("2024-12-01", tz="UTC"))
    stranger = sim.campaigns.head(3).assign(customer_id=["X1", "X2", "X3"])
    log = pd.concat([sim.campaigns, late, stranger], ignore_index=True)
    base = make_model()  # three kernel features, horizon 90
    fit = uplift.fit_campaign_uplift(prep, log, base, as_of=pd.Timestamp("2024-12-30").date(), num_threads=1)
    assert fit.meta["campaign_rows"] == {
        "read": len(log),
        "incomplete_window": 7,
        "unknown_customer": 3,
        "used": len(sim.campaigns),
    }
    assert fit.meta["campaign_ids"] == ["C1"] and fit.meta["risk_source"] == "churn_head"
    assert len(fit.warnings) == 2 and "7 campaign row(s)" in fit.warnings[0] and "3 campaign" in fit.warnings[1]
    with pytest.raises(ContractError, match="no campaign row has a complete outcome window"):
        uplift.fit_campaign_uplift(prep, late, base, as_of=pd.Timestamp("2024-12-30").date())


def test_both_learners_are_compared_and_the_better_held_out_qini_is_kept(tmp_path: Path) -> None:
    X, outcomes = campaign()
    both = uplift.fit_uplift(X, outcomes, COLUMNS, horizon_days=90, num_threads=1)
    m = both.metrics
    assert {"uplift_qini_t_learner", "uplift_qini_x_learner"} <= set(m)
    best = max(uplift.LEARNERS, key=lambda name: (m[f"uplift_qini_{name}"], -uplift.LEARNERS.index(name)))
    assert both.meta["learner"] == best and m["uplift_qini_model"] == m[f"uplift_qini_{best}"]
    assert set(both.boosters) == set(UPLIFT_ROLES[best])
    assert 0.45 < both.meta["propensity"] < 0.55  # the training customers' treated share
    assert set(both.meta["rounds"]) == {*UPLIFT_ROLES["t_learner"], *UPLIFT_ROLES["x_learner"]}


def test_an_x_learner_bundle_round_trips_and_scores_its_weighted_effect_heads(tmp_path: Path) -> None:
    X, outcomes = campaign()
    fit = uplift.fit_uplift(X, outcomes, COLUMNS, horizon_days=90, num_threads=1, learners=("x_learner",))
    assert fit.meta["learner"] == "x_learner" and fit.meta["files"] == UPLIFT_ROLES["x_learner"]
    model = uplift.with_uplift(make_model(), fit)
    directory = model.save(tmp_path / "bundle")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    assert manifest["boosters"]["uplift_tau_treated"]["objective"] == "regression"
    loaded = ScoringModel.load(directory)
    rows = np.random.default_rng(2).uniform(0, 100, size=(40, len(COLUMNS)))
    g = fit.meta["propensity"]
    expected = g * fit.boosters["uplift_tau_control"].predict(rows) + (1 - g) * fit.boosters[
        "uplift_tau_treated"
    ].predict(rows)
    np.testing.assert_allclose(loaded.score(rows).uplift, np.clip(expected, -1, 1), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="propensity"):
        BundleMeta(**{**dataclasses.asdict(model.meta), "uplift": {**model.meta.uplift, "propensity": None}})
