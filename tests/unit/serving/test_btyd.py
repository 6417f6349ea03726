"""Tests of serving.btyd: BG/NBD + Gamma-Gamma maximum likelihood (time in days, money in currency units)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from btyd_simulate import CDNOW, CDNOW_GG, OTHER, simulate_bgnbd, simulate_gamma_gamma
from btyd_simulate import ages as _ages
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import btyd
from serving.btyd import (
    PARAM_BOUNDS,
    BGNBDParams,
    BTYDFitWarning,
    BTYDModel,
    FitDiagnostics,
    GammaGammaParams,
    bgnbd,
    bgnbd_log_likelihood,
    conditional_expected_spend,
    expected_purchases,
    fit_bgnbd,
    fit_bgnbd_with_diagnostics,
    fit_gamma_gamma,
    fit_gamma_gamma_with_diagnostics,
    fitting,
    probability_alive,
    probability_no_purchase,
)

# ----------------------------------------------------------------------------------------------------------
# the time unit (parameter recovery itself: tests/model/test_btyd_recovery.py)
# ----------------------------------------------------------------------------------------------------------


def test_alpha_is_in_days() -> None:
    """Fitting on weeks gives alpha / 7 (alpha is a rate parameter in the time unit of the data)."""
    x, tx, T = simulate_bgnbd(CDNOW, 10_000, _ages(10_000, 5), seed=6)
    days = fit_bgnbd(x, tx, T)
    weeks = fit_bgnbd(x, tx / 7, T / 7)
    assert weeks.alpha * 7 == pytest.approx(days.alpha, rel=1e-4)
    assert weeks.r == pytest.approx(days.r, rel=1e-4)
    assert weeks.b == pytest.approx(days.b, rel=1e-4)


# ----------------------------------------------------------------------------------------------------------
# closed forms against independent formulas
# ----------------------------------------------------------------------------------------------------------


def _ll_reference(r: float, alpha: float, a: float, b: float, x: float, tx: float, T: float) -> float:
    """FHL 2005 eq. 6 written out with math.lgamma (no logaddexp)."""

    def lbeta(u: float, v: float) -> float:
        return math.lgamma(u) + math.lgamma(v) - math.lgamma(u + v)

    log_front = lbeta(a, b + x) - lbeta(a, b) + math.lgamma(r + x) - math.lgamma(r) + r * math.log(alpha)
    bracket = (alpha + T) ** (-(r + x))
    if x > 0:
        bracket += a / (b + x - 1) * (alpha + tx) ** (-(r + x))
    return log_front + math.log(bracket)


def test_log_likelihood_matches_reference_formula() -> None:
    x = np.array([0.0, 2.0, 7.0])
    tx = np.array([0.0, 30.5, 200.0])
    T = np.array([38.86, 40.0, 250.0])
    ll = bgnbd_log_likelihood(CDNOW, x, tx, T)
    expected = [_ll_reference(CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b, *row) for row in zip(x, tx, T, strict=True)]
    np.testing.assert_allclose(ll, expected, rtol=1e-12)
    # a customer who first bought at the cutoff carries no information
    assert bgnbd_log_likelihood(CDNOW, [0.0], [0.0], [0.0])[0] == pytest.approx(0.0, abs=1e-12)


def test_objective_matches_log_likelihood_and_gradient() -> None:
    """The fitting objective (aggregated rows, per-distinct-value lookups, softplus form) is the mean of the
    per-customer log-likelihood, and its analytic gradient matches central differences."""
    x, tx, T = simulate_bgnbd(OTHER, 3000, _ages(3000, 51), seed=52)
    tx = np.floor(tx)
    (ux, utx, ut), w = bgnbd._aggregate(x, tx, T)
    assert w.sum() == x.size and ux.size < x.size
    data = bgnbd._BGNBDData(ux, utx, ut, w)
    for params, penalizer in ((CDNOW, 0.0), (OTHER, 0.0), (OTHER, 0.1)):
        z = np.log([params.r, params.alpha, params.a, params.b])
        value, grad = bgnbd._bgnbd_nll_and_grad(z, data, penalizer)
        penalty = penalizer * (params.r**2 + params.a**2 + params.b**2)
        assert value == pytest.approx(-bgnbd_log_likelihood(params, x, tx, T).mean() + penalty, rel=1e-12)
        h = 1e-6
        numeric = [
            (
                bgnbd._bgnbd_nll_and_grad(z + h * e, data, penalizer)[0]
                - bgnbd._bgnbd_nll_and_grad(z - h * e, data, penalizer)[0]
            )
            / (2 * h)
            for e in np.eye(4)
        ]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_frequency_float_noise_is_accepted() -> None:
    x, tx, T = simulate_bgnbd(OTHER, 2000, _ages(2000, 53), seed=54)
    noisy = x + np.random.default_rng(0).uniform(0.0, 1e-9, x.size)
    assert fit_bgnbd(noisy, tx, T) == fit_bgnbd(x, tx, T)


def test_gamma_gamma_log_likelihood_matches_reference() -> None:
    p, q, v = CDNOW_GG.p, CDNOW_GG.q, CDNOW_GG.v
    x, m = np.array([1.0, 4.0, 0.0]), np.array([20.0, 35.5, 10.0])
    ll = btyd.gamma_gamma_log_likelihood(CDNOW_GG, x, m)
    for i in range(2):
        xi, mi = x[i], m[i]
        # mean of x Gamma(p, nu) spends ~ Gamma(p x, x nu), nu ~ Gamma(q, v), marginalised over nu
        ref = (
            math.lgamma(p * xi + q)
            - math.lgamma(p * xi)
            - math.lgamma(q)
            + q * math.log(v)
            + (p * xi - 1) * math.log(mi)
            + p * xi * math.log(xi)
            - (p * xi + q) * math.log(xi * mi + v)
        )
        assert ll[i] == pytest.approx(ref, rel=1e-12)
    assert np.isnan(ll[2])


def test_probability_alive() -> None:
    x = np.array([0.0, 0.0, 3.0, 3.0, 3.0])
    tx = np.array([0.0, 0.0, 100.0, 100.0, 300.0])
    T = np.array([10.0, 700.0, 110.0, 400.0, 400.0])
    pa = probability_alive(CDNOW, x, tx, T)
    assert pa[0] == 1.0 and pa[1] == 1.0  # BG/NBD: one-time buyers are always "alive"
    assert 0 < pa[3] < pa[2] < 1  # longer silence -> less likely alive
    assert pa[4] > pa[3]  # more recent last purchase -> more likely alive
    r, alpha, a, b = CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b
    ref = 1 / (1 + a / (b + 3 - 1) * ((alpha + 400) / (alpha + 100)) ** (r + 3))
    assert pa[3] == pytest.approx(ref, rel=1e-12)


def test_expected_purchases_basic_properties() -> None:
    x = np.array([0.0, 1.0, 5.0, 40.0, 400.0])
    tx = np.array([0.0, 20.0, 300.0, 350.0, 364.0])
    T = np.full(5, 365.0)
    assert np.all(expected_purchases(CDNOW, 0.0, x, tx, T) == 0.0)
    ts = [1.0, 7.0, 30.0, 90.0, 365.0, 3650.0]
    values = np.array([expected_purchases(CDNOW, t, x, tx, T) for t in ts])
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert np.all(np.diff(values, axis=0) > 0)
    # short horizon: rate ~ p_alive * E[lambda | data] = p_alive * (r + x) / (alpha + T)
    small = expected_purchases(CDNOW, 1e-3, x, tx, T) / 1e-3
    rate = probability_alive(CDNOW, x, tx, T) * (CDNOW.r + x) / (CDNOW.alpha + T)
    np.testing.assert_allclose(small, rate, rtol=1e-3)


@pytest.mark.parametrize("a", [0.5, 0.793, 0.999, 1.0, 1.001, 2.0, 8.0])
def test_expected_purchases_closed_form_matches_integral(a: float) -> None:
    params = BGNBDParams(r=0.5, alpha=25.0, a=a, b=3.0)
    x = np.array([0.0, 1.0, 3.0, 30.0, 250.0])
    tx = np.array([0.0, 50.0, 100.0, 300.0, 360.0])
    T = np.array([5.0, 100.0, 365.0, 365.0, 365.0])
    for t in (10.0, 180.0, 2000.0):
        closed = expected_purchases(params, t, x, tx, T)
        integral = bgnbd._expected_purchases_quadrature(params, np.full(5, t), x, T, step=0.05) * probability_alive(
            params, x, tx, T
        )
        np.testing.assert_allclose(closed, integral, rtol=1e-6)


def test_conditional_expected_spend() -> None:
    spend = conditional_expected_spend(CDNOW_GG, [0.0, 1.0, 50.0], [np.nan, 100.0, 100.0])
    p, q, v = CDNOW_GG.p, CDNOW_GG.q, CDNOW_GG.v
    assert spend[0] == pytest.approx(p * v / (q - 1))
    assert spend[1] == pytest.approx((v + 100.0) * p / (p + q - 1))
    assert spend[0] < spend[1] < spend[2] < 100.0  # shrinkage towards the population mean
    heavy = GammaGammaParams(p=2.0, q=0.8, v=10.0, mean_monetary=42.0)
    np.testing.assert_allclose(conditional_expected_spend(heavy, [0.0, 3.0], [0.0, 17.0]), [42.0, 17.0])


# ----------------------------------------------------------------------------------------------------------
# the combined model
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_data() -> tuple[BTYDModel, tuple[np.ndarray, ...]]:
    n = 20_000
    x, tx, T = simulate_bgnbd(CDNOW, n, _ages(n, 21), seed=22)
    tx = np.floor(tx)  # whole days, as in the feature kernel
    T[:100] = 0.0  # first purchase on the cutoff day
    x[:100], tx[:100] = 0.0, 0.0
    m = simulate_gamma_gamma(CDNOW_GG, x, seed=23)
    return BTYDModel.fit(x, tx, T, m), (x, tx, T, m)


def test_model_predict(model_and_data: tuple[BTYDModel, tuple[np.ndarray, ...]]) -> None:
    model, (x, tx, T, m) = model_and_data
    pred = model.predict(x, tx, T, m, horizon_days=90)
    keys = {"expected_purchases", "p_alive", "churn_probability", "expected_spend", "expected_value"}
    assert keys <= set(pred)
    for k in keys:
        assert pred[k].shape == x.shape and np.all(np.isfinite(pred[k])), k
    assert np.all((pred["churn_probability"] >= 0) & (pred["churn_probability"] <= 1))
    assert np.all(pred["p_alive"][x == 0] == 1)
    np.testing.assert_allclose(pred["expected_value"], pred["expected_purchases"] * pred["expected_spend"])
    assert np.all(pred["expected_spend"][x == 0] == pytest.approx(model.gamma_gamma.population_mean))
    # one-time buyers: churn grows with age; longer horizon -> lower churn, more purchases
    c = model.predict([0, 0, 0], [0, 0, 0], [0, 100, 700], [0, 0, 0], horizon_days=90)["churn_probability"]
    assert c[0] < c[1] < c[2]
    longer = model.predict(x, tx, T, m, horizon_days=365)
    assert np.all(longer["churn_probability"] <= pred["churn_probability"] + 1e-12)
    assert np.all(longer["expected_purchases"] >= pred["expected_purchases"])
    # horizon 0: nobody buys
    zero = model.predict(x, tx, T, m, horizon_days=0)
    assert np.all(zero["churn_probability"] == 1) and np.all(zero["expected_value"] == 0)
    # negative net spend of a repeat buyer falls back to the population mean
    neg = model.predict([3.0], [50.0], [100.0], [-20.0], horizon_days=30)
    assert neg["expected_spend"][0] == pytest.approx(model.gamma_gamma.population_mean)


def test_model_json_roundtrip(model_and_data: tuple[BTYDModel, tuple[np.ndarray, ...]]) -> None:
    model, (x, tx, T, m) = model_and_data
    d = json.loads(json.dumps(model.to_dict()))
    assert d["time_unit"] == "days" and set(d) == {"time_unit", "bgnbd", "gamma_gamma", "diagnostics"}
    restored = BTYDModel.from_dict(d)
    assert restored.bgnbd == model.bgnbd and restored.gamma_gamma == model.gamma_gamma
    assert restored.diagnostics == model.diagnostics and set(model.diagnostics) == {"bgnbd", "gamma_gamma"}
    assert model.diagnostics["bgnbd"].converged and model.warnings == ()  # a clean fit on CDNOW-like data
    # a dict written before diagnostics existed still loads
    old = BTYDModel.from_dict({k: v for k, v in d.items() if k != "diagnostics"})
    assert old.bgnbd == model.bgnbd and old.diagnostics == {} and old.warnings == ()
    a, b = model.predict(x, tx, T, m, 60), restored.predict(x, tx, T, m, 60)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(ValueError, match="time_unit"):
        BTYDModel.from_dict({**d, "time_unit": "weeks"})


# ----------------------------------------------------------------------------------------------------------
# invalid input
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "tx", "T", "match"),
    [
        ([], [], [], "empty"),
        ([1.0, -1.0], [1.0, 0.0], [5.0, 5.0], "frequency must be non-negative"),
        ([1.0], [-1.0], [5.0], "recency must be non-negative"),
        ([1.0], [1.0], [-5.0], "T must be non-negative"),
        ([1.0, np.nan], [1.0, 0.0], [5.0, 5.0], "frequency contains 1 NaN"),
        ([1.0], [np.nan], [5.0], "recency contains"),
        ([1.0], [1.0], [np.inf], "T contains"),
        ([2.0], [6.0], [5.0], "recency must be <= T"),
        ([0.0, 1.0], [3.0, 1.0], [5.0, 5.0], "recency must be 0"),
        ([1.0, 2.0], [1.0], [5.0, 5.0, 5.0], "same length"),
        ([0.0, 0.0], [0.0, 0.0], [5.0, 9.0], "no customer has a repeat purchase"),
        ([1.0, 2.5], [1.0, 2.0], [5.0, 5.0], "frequency must be integer-valued"),
    ],
)
def test_fit_bgnbd_rejects_invalid_input(x: list, tx: list, T: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_bgnbd(np.array(x), np.array(tx), np.array(T))


def test_other_invalid_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        fit_gamma_gamma([], [])
    with pytest.raises(ValueError, match="need >= 2 customers"):
        fit_gamma_gamma([0.0, 1.0, 3.0], [5.0, 0.0, -1.0])
    with pytest.raises(ValueError, match="same length"):
        fit_gamma_gamma([1.0, 2.0], [5.0])
    with pytest.raises(ValueError, match="integer-valued"):
        fit_gamma_gamma([1.0, 2.5], [5.0, 6.0])
    with pytest.raises(ValueError, match="penalizer"):
        fit_bgnbd([1.0], [1.0], [2.0], penalizer=-1.0)
    with pytest.raises(ValueError, match="penalizer"):
        fit_bgnbd([1.0], [1.0], [2.0], penalizer=float("nan"))
    with pytest.raises(ValueError, match="integer-valued"):
        probability_alive(CDNOW, [0.5], [0.0], [2.0])
    with pytest.raises(ValueError, match="recency must be <= T"):
        probability_alive(CDNOW, [1.0], [3.0], [2.0])
    with pytest.raises(ValueError, match="horizon"):
        expected_purchases(CDNOW, -1.0, [1.0], [1.0], [2.0])
    with pytest.raises(ValueError, match="empty"):
        BTYDModel.fit([], [], [], [])
    model = BTYDModel(CDNOW, CDNOW_GG)
    with pytest.raises(ValueError, match="horizon_days"):
        model.predict([1.0], [1.0], [2.0], [3.0], horizon_days=float("nan"))
    with pytest.raises(ValueError, match="monetary"):
        model.predict([1.0], [1.0], [2.0], [3.0, 4.0], horizon_days=10)


def test_penalizer_shrinks_shape_parameters() -> None:
    x, tx, T = simulate_bgnbd(OTHER, 5_000, _ages(5_000, 41), seed=42)
    free, pen = fit_bgnbd(x, tx, T), fit_bgnbd(x, tx, T, penalizer=0.1)
    assert pen.a + pen.b < free.a + free.b


@settings(max_examples=60, deadline=None)
@given(
    x=st.integers(0, 500),
    frac_tx=st.floats(0.0, 1.0),
    T=st.floats(0.0, 5000.0),
    t=st.floats(0.0, 5000.0),
)
def test_probabilities_are_valid(x: int, frac_tx: float, T: float, t: float) -> None:
    tx = 0.0 if x == 0 else frac_tx * T
    args = ([float(x)], [tx], [T])
    pa = probability_alive(CDNOW, *args)[0]
    churn = probability_no_purchase(CDNOW, t, *args)[0]
    n = expected_purchases(CDNOW, t, *args)[0]
    assert 0.0 <= pa <= 1.0 and 0.0 <= churn <= 1.0 + 1e-12
    assert np.isfinite(n) and n >= 0.0
    assert churn >= 1.0 - pa - 1e-12  # dead customers never buy


# ----------------------------------------------------------------------------------------------------------
# real-data robustness (issue 9): boundary optima, flat likelihoods, non-convergence -> parameters + warning
# ----------------------------------------------------------------------------------------------------------


def _no_dropout_data(n: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nobody ever drops out (a ~ 0) and short windows (30-200 days), as on the wholesaler log: the MLE is
    a -> 0 with b huge (the likelihood no longer depends on b there)."""
    ages = np.random.default_rng(5).integers(30, 200, n).astype(np.float64)
    x, tx, T = simulate_bgnbd(BGNBDParams(r=0.8, alpha=20.0, a=1e-9, b=1.0), n, ages, seed=6)
    return x, np.floor(tx), T


def test_boundary_optimum_returns_parameters_names_boundary_and_warns() -> None:
    x, tx, T = _no_dropout_data()
    with pytest.warns(BTYDFitWarning) as rec:
        params, diag = fit_bgnbd_with_diagnostics(x, tx, T)
    assert any("a -> 0: the fit says customers (almost) never drop out" in str(w.message) for w in rec)
    assert "a->0" in diag.boundary and diag.converged and diag.starts == 4
    assert params.a < 1e-4 and params.b > 1e3  # on the boundary, as on the wholesaler log
    assert params.r == pytest.approx(0.8, rel=0.1) and params.alpha == pytest.approx(20.0, rel=0.1)
    assert all("r=" in str(w.message) and "alpha=" in str(w.message) for w in rec)  # parameters in the message
    assert len(diag.warnings) == len(rec) and any("a -> 0" in w for w in diag.warnings)
    # predictions at the boundary: finite, nobody dead, expected purchases = the no-dropout limit
    model = BTYDModel(params, CDNOW_GG)
    m = simulate_gamma_gamma(CDNOW_GG, x, seed=1)
    pred = model.predict(x, tx, T, m, horizon_days=90)
    for k, v in pred.items():
        assert np.all(np.isfinite(v)), k
    assert np.all((pred["churn_probability"] >= 0) & (pred["churn_probability"] <= 1))
    assert pred["p_alive"].min() > 0.99
    limit = (params.r + x) * 90 / (params.alpha + T)  # E[lambda | data] x horizon with p = 0
    np.testing.assert_allclose(pred["expected_purchases"], pred["p_alive"] * limit, rtol=2e-3)
    # fit_bgnbd returns the same parameters (and warns)
    with pytest.warns(BTYDFitWarning):
        assert fit_bgnbd(x, tx, T) == params


def test_model_fit_carries_diagnostics_through_json() -> None:
    x, tx, T = _no_dropout_data(5_000)
    m = simulate_gamma_gamma(CDNOW_GG, x, seed=2)
    with pytest.warns(BTYDFitWarning):
        model = BTYDModel.fit(x, tx, T, m)
    assert "a->0" in model.diagnostics["bgnbd"].boundary and model.warnings
    d = json.loads(json.dumps(model.to_dict(), allow_nan=False))  # strict JSON
    assert d["diagnostics"]["bgnbd"]["boundary"] == list(model.diagnostics["bgnbd"].boundary)
    restored = BTYDModel.from_dict(d)
    assert restored.diagnostics == model.diagnostics and restored.warnings == model.warnings


@pytest.mark.parametrize(
    ("x", "tx", "T"),
    [
        (np.full(50, 2.0), np.full(50, 100.0), np.full(50, 200.0)),  # identical summaries: nothing identified
        ([0.0, 1.0, 3.0], [0.0, 10.0, 50.0], [20.0, 40.0, 60.0]),  # three customers
        ([1.0], [10.0], [40.0]),  # one customer
        ([0.0] * 99 + [1.0], [0.0] * 99 + [1.0], [300.0] * 100),  # one repeat purchase among 100
    ],
    ids=["identical", "three", "one", "one-repeat"],
)
def test_degenerate_bgnbd_fits_give_parameters_and_warning(x: list, tx: list, T: list) -> None:
    with pytest.warns(BTYDFitWarning) as rec:
        params, diag = fit_bgnbd_with_diagnostics(x, tx, T)
    assert diag.warnings and len(rec) == len(diag.warnings) and (diag.boundary or diag.flat or not diag.converged)
    lo, hi = PARAM_BOUNDS
    assert all(math.isfinite(v) and v > 0 for v in params.to_dict().values())
    assert lo <= params.r <= hi and lo <= params.a <= hi and lo <= params.b <= hi
    model = BTYDModel(params, CDNOW_GG)
    pred = model.predict(x, tx, T, np.full(len(x), 10.0), horizon_days=90)
    for k, v in pred.items():
        assert np.all(np.isfinite(v)), k
    assert np.all((pred["churn_probability"] >= 0) & (pred["churn_probability"] <= 1))


def test_degenerate_gamma_gamma_fits_give_parameters_and_warning() -> None:
    # identical spends: p, q -> inf, the optimiser stalls on the ridge -> boundary + non-convergence
    with pytest.warns(BTYDFitWarning, match="Gamma-Gamma fit") as rec:
        params, diag = fit_gamma_gamma_with_diagnostics(np.full(30, 2.0), np.full(30, 10.0))
    assert {"p->inf", "q->inf"} <= set(diag.boundary) and len(rec) == len(diag.warnings)
    assert conditional_expected_spend(params, [0.0, 2.0], [0.0, 10.0]) == pytest.approx([10.0, 10.0], rel=1e-3)
    # heavy-tailed spend (q < 1): the population mean is infinite, said so; spend falls back to sample means
    x = np.random.default_rng(3).geometric(0.3, 5_000).astype(np.float64)
    m = simulate_gamma_gamma(GammaGammaParams(p=2.0, q=0.7, v=10.0), x, seed=4)
    with pytest.warns(BTYDFitWarning, match="q <= 1"):
        heavy = fit_gamma_gamma(x, m)
    assert heavy.q <= 1.0 and np.isfinite(heavy.population_mean)


def test_gamma_gamma_failing_alone_degrades_the_model() -> None:
    """BG/NBD fits but only one repeat buyer has positive spend: no ValueError, a warning, no shrinkage."""
    x, tx, T = simulate_bgnbd(CDNOW, 2_000, _ages(2_000, 61), seed=62)
    m = np.where(x > 0, -5.0, 0.0)  # refunds exceed purchases for every repeat buyer ...
    m[np.flatnonzero(x > 0)[0]] = 40.0  # ... but one
    with pytest.raises(ValueError, match="need >= 2 customers"):
        fit_gamma_gamma(x, m)
    with pytest.warns(BTYDFitWarning, match="Gamma-Gamma not fitted"):
        model = BTYDModel.fit(x, tx, T, m)
    assert model.gamma_gamma.population_mean == 40.0 and not model.diagnostics["gamma_gamma"].converged
    pred = model.predict(x, tx, T, m, horizon_days=90)
    assert all(np.all(np.isfinite(v)) for v in pred.values())
    with pytest.raises(ValueError, match="no customer has a repeat purchase"):
        BTYDModel.fit(np.zeros(3), np.zeros(3), np.full(3, 9.0), np.zeros(3))


def test_multistart_keeps_the_best_likelihood() -> None:
    x, tx, T = simulate_bgnbd(OTHER, 5_000, _ages(5_000, 71), seed=72)
    params, diag = fit_bgnbd_with_diagnostics(x, tx, T)
    assert diag.converged and diag.boundary == () and diag.flat == () and diag.warnings == ()
    assert diag.starts == 2  # the first two starts agree: no more are needed
    finite = [v for v in diag.start_log_likelihoods if v is not None]
    assert diag.log_likelihood >= max(finite) - 1e-9
    # reported in the caller's units: the sum of the per-customer log-likelihood (days)
    assert diag.log_likelihood == pytest.approx(bgnbd_log_likelihood(params, x, tx, T).sum(), rel=1e-9)
    _, one = fit_bgnbd_with_diagnostics(x, tx, T, max_starts=1)
    assert one.starts == 1 and diag.log_likelihood >= one.log_likelihood - 1e-9

    # a double well: the first start falls into the worse well, the multi-start picks the global minimum
    def double_well(z: np.ndarray) -> tuple[float, np.ndarray]:
        u = z[0]
        return float((u * u - 1.0) ** 2 + 0.3 * u), np.array([4.0 * u * (u * u - 1.0) + 0.3])

    starts = [np.array([0.9]), np.array([-1.1])]
    best, runs = fitting.multistart(double_well, starts, n=1.0)
    assert runs[0].value > best.value and best.z[0] < 0 and best.value == min(r.value for r in runs)
    first_only, _ = fitting.multistart(double_well, starts[:1], n=1.0)
    assert first_only.value > best.value


def test_flat_likelihood_is_detected() -> None:
    """A ridge (the objective depends on z0 + z1 only): starts end at different points, equally good."""

    def ridge(z: np.ndarray) -> tuple[float, np.ndarray]:
        s = z[0] + z[1] - 1.0
        return float(s * s), np.array([2.0 * s, 2.0 * s])

    starts = [np.array([0.0, 0.0]), np.array([3.0, -3.0]), np.array([-2.0, 1.0])]
    best, runs = fitting.multistart(ridge, starts, n=100.0)
    with pytest.warns(BTYDFitWarning, match="flat likelihood: starts reached different u, w"):
        diag = fitting.diagnose("Toy", ridge, best, runs, ("u", "w"), 100.0, "u=.., w=..", {})
    assert diag.flat == ("u", "w") and diag.converged and diag.starts == 3 and diag.boundary == ()


def test_fit_diagnostics_dict_roundtrip() -> None:
    diag = FitDiagnostics(
        converged=False,
        boundary=("a->0",),
        flat=("b",),
        starts=4,
        log_likelihood=-12.5,
        start_log_likelihoods=(-12.5, None),
        warnings=("w",),
    )
    assert FitDiagnostics.from_dict(json.loads(json.dumps(diag.to_dict()))) == diag
    assert FitDiagnostics.from_dict({}) == FitDiagnostics()
    with pytest.raises(ValueError, match="max_starts"):
        fit_bgnbd([1.0], [1.0], [2.0], max_starts=0)


@pytest.mark.parametrize(
    "params",
    [
        BGNBDParams(r=0.8, alpha=20.0, a=1e-6, b=1e6),  # nobody drops out
        BGNBDParams(r=0.8, alpha=20.0, a=1e-6, b=2.5),
        BGNBDParams(r=0.8, alpha=20.0, a=2.0, b=1e6),
        BGNBDParams(r=0.8, alpha=20.0, a=1e6, b=1e6),  # everybody has p = 1/2
        BGNBDParams(r=0.8, alpha=20.0, a=1e6, b=2.5),  # everybody drops out after a purchase
        BGNBDParams(r=1e6, alpha=2e7, a=0.8, b=2.5),  # identical purchase rates (0.05 / day)
        BGNBDParams(r=1e-6, alpha=20.0, a=0.8, b=2.5),
        BGNBDParams(r=0.8, alpha=1e-4, a=0.8, b=2.5),
        BGNBDParams(r=0.8, alpha=1e8, a=0.8, b=2.5),
    ],
)
def test_predictions_are_valid_at_boundary_parameters(params: BGNBDParams) -> None:
    x = np.array([0.0, 1.0, 2.0, 5.0, 20.0, 100.0, 500.0])
    tx = np.array([0.0, 10.0, 50.0, 100.0, 300.0, 360.0, 364.0])
    T = np.full(7, 365.0)
    for h in (0.0, 1.0, 90.0, 1e4):
        n_buy = expected_purchases(params, h, x, tx, T)
        churn = probability_no_purchase(params, h, x, tx, T)
        alive = probability_alive(params, x, tx, T)
        assert np.all(np.isfinite(n_buy) & (n_buy >= 0)), (h, n_buy)
        assert np.all((churn >= 0) & (churn <= 1 + 1e-12) & (alive >= 0) & (alive <= 1)), h
    # against Monte Carlo over the posterior dropout probability p ~ Beta(a, b + x) given alive
    rng = np.random.default_rng(9)
    cond = expected_purchases(params, 90.0, x, tx, T) / probability_alive(params, x, tx, T)
    for i in (0, 2, 5):
        p = rng.beta(params.a, params.b + x[i], 400_000)
        k = (params.r + x[i]) * np.log1p(p * 90.0 / (params.alpha + T[i]))
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(p > 0, -np.expm1(-k) / p, (params.r + x[i]) * 90.0 / (params.alpha + T[i]))
        assert cond[i] == pytest.approx(g.mean(), rel=1e-3, abs=4 * g.std() / math.sqrt(g.size)), i
    spend = BTYDModel(params, GammaGammaParams(p=1e6, q=1e6, v=1e7)).predict(x, tx, T, np.full(7, 10.0), 90)
    assert all(np.all(np.isfinite(v)) for v in spend.values())
