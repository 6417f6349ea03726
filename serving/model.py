"""The scoring bundle: the churn and value heads plus everything needed to score, in one directory.

Layout of a bundle directory (written by ``training``, read here; serving never imports training)::

    churn.txt     LightGBM booster, native text format (absent when the churn head is ``btyd``)
    value.txt     LightGBM booster, native text format (absent when the value head is ``btyd``)
    bundle.json   feature list, horizon, training as-of date, head kinds, BG/NBD + Gamma-Gamma parameters at the
                  training as-of date, calibrator, value level factor and its source, margin, discount rate, tier
                  and segment thresholds, feature descriptions, the scorecard's reference quantiles
    uplift_*.txt  the uplift heads (format 4, only in a version trained with a campaign log), LightGBM boosters,
                  native text, on the bundle's feature list (:data:`UPLIFT_ROLES`): ``uplift_treated.txt`` and
                  ``uplift_control.txt`` (T-learner: ``binary`` on ``retained``, a purchase within the horizon, of the
                  contacted and of the held-out control customers) or ``uplift_tau_treated.txt`` and
                  ``uplift_tau_control.txt`` (X-learner: ``regression`` on the imputed effects of each arm)
    manifest.json sha256 and size of every file above, and each booster's role: its file, LightGBM objective
                  (``binary`` for churn, ``tweedie`` for value, see :data:`BOOSTER_OBJECTIVES` for the uplift heads)
                  and number of features (= the feature list)

Integrity (:func:`verify_bundle`, called by :meth:`ScoringModel.load` before LightGBM parses anything): a
truncated or edited file can crash the process that parses it (LightGBM segfaults or aborts), so every file's
digest is checked against the manifest first, and each booster's header (objective, feature names) is read as
text and checked against its role, which catches a churn/value swap even when the digests were recomputed. A
bundle saved before manifests existed (no ``manifest.json``) passes the header checks only;
:func:`serving.loader.load_model` parses every bundle in a child process first, so such a bundle (or anything
the checks miss) can only crash the child.

Each head is one of three kinds (:data:`HEAD_KINDS`), chosen per head on the validation window at training time:

- ``lightgbm``: the booster alone;
- ``hybrid``: the booster was trained with the BTYD prediction as its offset (LightGBM ``init_score``), so its trees
  are corrections to the BTYD prior: churn log-odds = logit(BTYD P(no purchase)) + trees; value =
  exp(log(BTYD expected value) + trees) (Tweedie's log link);
- ``btyd``: BG/NBD + Gamma-Gamma alone (no booster; a version trained on a history too short to label a cutoff
  has two ``btyd`` heads).

The BTYD inputs are the kernel's ``btyd_*`` features at the scoring cutoff, so online, batch and Spark scoring need
nothing but the feature row. Scores for a feature matrix ``X`` (rows = customers, columns = ``feature_columns``):

- ``churn_probability`` = isotonic calibrator(raw churn head(X)): P(no purchase in the next ``horizon_days``);
- ``expected_value`` = max(raw value head(X), 0) x level_factor x margin x discount_factor: expected net revenue
  (or, with a margin < 1, gross profit) over the next ``horizon_days``, discounted to the as-of date at the
  mid-horizon point with the annual ``discount_rate``;
- ``value_at_risk`` = churn_probability x expected_value;
- intervals (format 3, ``intervals`` in ``bundle.json``): ``value_p10/p50/p90`` and the 80% interval
  ``value_low``/``value_high`` of future value, in ``expected_value``'s units, and ``purchases_p50/low/high`` of the
  number of purchase days, from the churn probability, the expected value and the tier (see :mod:`serving.intervals`).
  A bundle without ``intervals`` (saved before format 3) scores every interval field as None;
- timing (any bundle with BG/NBD parameters, :mod:`serving.timing`): P(a purchase within d days) for the days of
  :data:`serving.timing.TIMING_DAYS` up to the horizon and the expected days to the next purchase given one within
  the horizon, BG/NBD's shape at the level of ``churn_probability``;
- ``uplift`` (format 4, ``uplift`` in ``bundle.json`` with ``trusted`` true): P(a purchase within the horizon |
  contacted, X) - P(a purchase within the horizon | not contacted, X), in [-1, 1], from the two uplift heads
  (:func:`uplift_from_heads`; a T- or X-learner, :mod:`training.uplift`). None for a bundle without uplift heads, and
  for one whose heads did not beat both random and churn-risk targeting on the held-out customers' Qini coefficient
  (``trusted`` false: a plan then falls back to the assumed save rate). Negative = a "sleeping dog": the contact makes
  a purchase less likely.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from serving.btyd import BTYDModel
from serving.btyd.counts import positive_count_quantiles
from serving.intervals import IntervalCalibration, Intervals, count_intervals, value_intervals
from serving.timing import TimingScores, timing_scores

BUNDLE_FILE = "bundle.json"
CHURN_FILE = "churn.txt"
VALUE_FILE = "value.txt"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
UPLIFT_ROLES: dict[str, dict[str, str]] = {
    "t_learner": {"uplift_treated": "uplift_treated.txt", "uplift_control": "uplift_control.txt"},
    "x_learner": {"uplift_tau_treated": "uplift_tau_treated.txt", "uplift_tau_control": "uplift_tau_control.txt"},
}
"""Per uplift learner, its heads' roles and files (:func:`uplift_from_heads` says how they combine):

- ``t_learner``: P(retained | X) of the contacted (``uplift_treated``) and of the control customers
  (``uplift_control``), LightGBM ``binary``;
- ``x_learner``: the effect imputed on the contacted customers, retained - the control head's P(retained | X)
  (``uplift_tau_treated``), and on the control customers, the treated head's P(retained | X) - retained
  (``uplift_tau_control``), LightGBM ``regression``, weighted by the campaigns' treated share (``propensity``)."""
UPLIFT_LEARNERS = tuple(UPLIFT_ROLES)
BOOSTER_OBJECTIVES = {
    "churn": ("binary",),
    "value": ("tweedie",),
    **dict.fromkeys(UPLIFT_ROLES["t_learner"], ("binary",)),
    **dict.fromkeys(UPLIFT_ROLES["x_learner"], ("regression",)),
}
"""The LightGBM objectives a booster may have in each role (the first word of its ``objective=`` line)."""
FORMAT_VERSION = 4
READABLE_FORMATS = (1, 2, 3, 4)
"""Format 1 (before hybrid heads) loads as two ``lightgbm`` heads; formats 1 and 2 (before intervals) load without
``intervals``: their interval outputs are None. Format 3 adds ``intervals``, format 4 the optional ``uplift`` heads
(formats 1-3 load with ``uplift`` None; older readers refuse format 4 by number)."""
HEAD_KINDS = ("lightgbm", "hybrid", "btyd")
BTYD_COLUMNS = ("btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary")
"""The BTYD summary features (days, currency units) that BG/NBD + Gamma-Gamma score from."""
BUYER_COLUMN = "n_purchase_days"
"""Customers with no purchase day yet (refunds only) get churn 1 and value 0 from BTYD."""
CHURN_OFFSET_CLIP = 1e-4
"""BTYD churn probabilities are clipped to [1e-4, 1 - 1e-4] before the logit of a hybrid head's offset."""
VALUE_OFFSET_FLOOR = 0.01
"""BTYD expected values below one cent become one cent before the log of a hybrid head's offset."""


def churn_offset(p_churn: np.ndarray) -> np.ndarray:
    """Log-odds offset of a hybrid churn head from BTYD's P(no purchase in the horizon)."""
    p = np.clip(p_churn, CHURN_OFFSET_CLIP, 1.0 - CHURN_OFFSET_CLIP)
    return np.log(p) - np.log1p(-p)


def value_offset(expected_value: np.ndarray) -> np.ndarray:
    """Log offset of a hybrid value head from BTYD's expected value (currency units)."""
    return np.log(np.maximum(expected_value, VALUE_OFFSET_FLOOR))


CALIBRATION_TIE_BREAK = 1e-6
"""Slope added to the isotonic calibrator, so customers inside one isotonic step keep the head's order."""


def calibrate(raw_churn: np.ndarray, knots_x: np.ndarray, knots_y: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """Isotonic calibration (``np.interp`` over the knots) that keeps the raw ranking: an isotonic fit is flat
    between knots, and those ties would cost AUC and top-k order for nothing (+1e-6 x raw breaks them). ``shift``
    (log-odds) then moves every probability so that their mean follows the churn rate expected at the as-of date."""
    p = np.clip(np.interp(raw_churn, knots_x, knots_y) + CALIBRATION_TIE_BREAK * raw_churn, 0.0, 1.0)
    if shift == 0.0:
        return p
    q = np.clip(p, 1e-9, 1.0 - 1e-9)
    return 1.0 / (1.0 + np.exp(-(np.log(q) - np.log1p(-q) + shift)))


def hybrid_churn(p_btyd: np.ndarray, trees: np.ndarray) -> np.ndarray:
    """A hybrid churn head's probability: sigmoid(logit(BTYD churn) + the trees' raw score)."""
    return 1.0 / (1.0 + np.exp(-(churn_offset(p_btyd) + trees)))


def hybrid_value(v_btyd: np.ndarray, trees: np.ndarray) -> np.ndarray:
    """A hybrid value head's expected value: exp(log(BTYD expected value) + the trees' raw score)."""
    return np.exp(value_offset(v_btyd) + trees)


def btyd_scores(
    btyd: BTYDModel, X: np.ndarray, columns: tuple[str, ...] | list[str], horizon_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(P(no purchase in the next horizon_days), expected value in currency units)`` per row of ``X``.

    ``X``'s columns follow ``columns`` and include :data:`BTYD_COLUMNS` and :data:`BUYER_COLUMN`. This is the one
    place BTYD predictions are made from feature rows: the baselines, the hybrid offsets at training time and the
    bundle at scoring time all call it.
    """
    index = {c: j for j, c in enumerate(columns)}
    churn = np.ones(len(X))
    value = np.zeros(len(X))
    buyers = np.nan_to_num(X[:, index[BUYER_COLUMN]]) > 0
    if buyers.any():
        summary = [X[buyers, index[c]] for c in BTYD_COLUMNS]
        pred = btyd.predict(*summary, horizon_days=horizon_days)
        churn[buyers] = pred["churn_probability"]
        value[buyers] = pred["expected_value"]
    return churn, value


@dataclasses.dataclass(frozen=True)
class BundleMeta:
    """Everything besides the boosters that a model version needs to score (JSON-serialisable).

    ``churn_head``/``value_head``: one of :data:`HEAD_KINDS`. ``btyd``: BG/NBD + Gamma-Gamma parameters fitted at
    ``trained_as_of`` (``BTYDModel.to_dict()``), needed by ``hybrid`` and ``btyd`` heads and by the BTYD reasons.
    ``btyd_reference``: the population median of each :data:`BTYD_COLUMNS` feature at ``trained_as_of`` (the point
    BTYD reasons are measured from).
    ``calibrator_x``/``calibrator_y``: isotonic calibration knots (raw -> calibrated churn probability).
    ``level_factor``: multiplies the raw value head so that its total at ``trained_as_of`` equals the total of the
    level estimator ``level_source`` (``btyd``, ``run_rate`` or ``seasonal_run_rate``, see ``training.level``;
    ``validation`` in format-1 bundles: the validation window's factor carried forward).
    ``tier_thresholds``: expected-value lower bounds per tier, highest tier first (currency units).
    ``segment_current_threshold``/``segment_future_value_threshold``: split points of the current x future
    value matrix (current value = net spend in the last 365 days).
    ``validation_scheme``: how the heads were chosen and validated (``temporal``, ``customer_grouped`` or ``none``).
    ``intervals``: :meth:`serving.intervals.IntervalCalibration.to_dict` (None: no interval outputs).
    ``uplift``: the uplift heads (format 4; None: no uplift output), :func:`training.uplift.uplift_meta`: ``learner``
    (:data:`UPLIFT_LEARNERS`), ``files`` (role -> file, :data:`UPLIFT_ROLES` of the learner), ``propensity`` (the
    treated share the X-learner weighs its heads with), ``campaign_ids``, ``horizon_days`` (the outcome window, =
    ``horizon_days``), ``trusted`` (the heads beat random and churn-risk targeting on the held-out Qini: only then is
    ``uplift`` scored) and the held-out ``metrics``.
    ``scorecard``: the contribution x loyalty x potential scorecard's reference (:mod:`serving.scorecard`), optional in
    any format (None: no scorecard outputs).
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
    churn_head: str = "lightgbm"
    value_head: str = "lightgbm"
    btyd: dict[str, Any] | None = None
    btyd_reference: dict[str, float] = dataclasses.field(default_factory=dict)
    level_source: str = "validation"
    churn_shift: float = 0.0
    """Log-odds added to every calibrated churn probability (0 unless ``churn_rate_source`` moved the mean)."""
    churn_rate_source: str = "recent"
    validation_scheme: str = "temporal"
    intervals: dict[str, Any] | None = None
    uplift: dict[str, Any] | None = None
    scorecard: dict[str, Any] | None = None
    """The scorecard's training reference (:meth:`serving.scorecard.ScorecardReference.to_dict`: quantiles of the
    training population at ``trained_as_of`` and the composite's tier bounds); None (a bundle trained before the
    scorecard): every scorecard output is None."""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("churn_head", "value_head"):
            if getattr(self, name) not in HEAD_KINDS:
                raise ValueError(f"bundle {name} '{getattr(self, name)}' is not one of {', '.join(HEAD_KINDS)}")
        if "btyd" in (self.churn_head, self.value_head) or "hybrid" in (self.churn_head, self.value_head):
            if self.btyd is None:
                raise ValueError("bundle has a BTYD or hybrid head but no BTYD parameters")
            missing = [c for c in (*BTYD_COLUMNS, BUYER_COLUMN) if c not in self.feature_columns]
            if missing:
                raise ValueError(f"bundle has a BTYD or hybrid head but no feature {', '.join(missing)}")
        if self.intervals is not None:
            calibration = IntervalCalibration.from_dict(self.intervals)
            knots = calibration.ratio_knots
            if knots is not None and len(knots) != len(self.tier_names):
                raise ValueError(f"bundle intervals have {len(knots)} tiers of ratios, not {len(self.tier_names)}")
        if self.uplift is not None:
            learner = self.uplift.get("learner")
            if learner not in UPLIFT_LEARNERS:
                raise ValueError(f"bundle uplift learner '{learner}' is not one of {', '.join(UPLIFT_LEARNERS)}")
            if self.uplift.get("files") != UPLIFT_ROLES[learner]:
                raise ValueError(f"bundle uplift files {self.uplift.get('files')} are not {UPLIFT_ROLES[learner]}")
            if learner == "x_learner" and not 0 < float(self.uplift.get("propensity") or 0) < 1:
                raise ValueError(f"bundle x_learner propensity {self.uplift.get('propensity')} is not in (0, 1)")
            if self.uplift.get("horizon_days") != self.horizon_days:
                raise ValueError(
                    f"bundle uplift horizon {self.uplift.get('horizon_days')} is not the bundle's {self.horizon_days}"
                )

    @property
    def uplift_trusted(self) -> bool:
        """The bundle has uplift heads and they beat random and churn-risk targeting when held out."""
        return self.uplift is not None and bool(self.uplift.get("trusted"))

    @property
    def discount_factor(self) -> float:
        """Mid-horizon discount factor ``(1 + rate) ** -(horizon_days / 365 / 2)``."""
        return float((1.0 + self.discount_rate) ** (-(self.horizon_days / 365.0) / 2.0))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BundleMeta:
        raw: dict[str, Any] = json.loads(text)
        if raw.get("format_version") not in READABLE_FORMATS:
            raise ValueError(
                f"bundle format {raw.get('format_version')} is not supported (expected one of {READABLE_FORMATS})"
            )
        raw["format_version"] = FORMAT_VERSION
        for key in ("feature_columns", "calibrator_x", "calibrator_y", "tier_names", "tier_thresholds"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


class BundleIntegrityError(ValueError):
    """A bundle file does not match its manifest or its role; the message names the file."""


def file_digest(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def booster_header(path: Path) -> dict[str, Any]:
    """``objective``, ``feature_names`` and ``complete`` of a LightGBM text model, read as text (never parsed
    by LightGBM). ``complete``: the file holds the ``end of trees`` marker that LightGBM writes after the trees."""
    text = path.read_bytes()
    if not text.startswith(b"tree\n"):
        raise BundleIntegrityError(f"{path.name} is not a LightGBM text model (no 'tree' header)")
    header: dict[str, Any] = {"objective": None, "feature_names": None}
    for raw in text[: 1 << 20].split(b"\n"):
        if raw.startswith(b"Tree="):
            break
        line = raw.decode("utf-8", "replace")
        if line.startswith("objective="):
            header["objective"] = line[len("objective=") :].strip()
        elif line.startswith("feature_names="):
            header["feature_names"] = tuple(line[len("feature_names=") :].split())
    header["complete"] = b"\nend of trees\n" in text
    return header


def booster_role(name: str, file: str, header: dict[str, Any], feature_columns: tuple[str, ...]) -> dict[str, Any]:
    """Check a booster header against its role (``churn``, ``value`` or an uplift role of :data:`UPLIFT_ROLES`);
    returns the role's manifest entry."""
    objective = (header["objective"] or "").split()
    kind = objective[0] if objective else "none"
    if kind not in BOOSTER_OBJECTIVES[name]:
        raise BundleIntegrityError(
            f"{file} has objective '{kind}' but the {name} head needs {' or '.join(BOOSTER_OBJECTIVES[name])}"
            " (are churn.txt and value.txt swapped?)"
        )
    if header["feature_names"] != tuple(feature_columns):
        count = len(header["feature_names"] or ())
        raise BundleIntegrityError(
            f"{file} has {count} features that do not match the bundle's {len(feature_columns)} features"
        )
    if not header["complete"]:
        raise BundleIntegrityError(f"{file} is truncated (no 'end of trees' marker)")
    return {"file": file, "objective": kind, "num_features": len(feature_columns)}


def _booster_files(meta: BundleMeta) -> list[tuple[str, str]]:
    """``(role, file)`` of every booster the metadata needs: the churn and value heads unless ``btyd``, then the
    uplift heads when the bundle has them."""
    heads = [
        (n, f)
        for n, f, k in (("churn", CHURN_FILE, meta.churn_head), ("value", VALUE_FILE, meta.value_head))
        if k != "btyd"
    ]
    return heads + (list(meta.uplift["files"].items()) if meta.uplift is not None else [])


def _needed_because(meta: BundleMeta, name: str) -> str:
    """Why a booster role is needed (for the message about its missing file)."""
    if name in BOOSTER_OBJECTIVES and name not in ("churn", "value"):
        return f"the bundle has {meta.uplift['learner']} uplift heads"  # type: ignore[index]
    return f"the {name} head is '{getattr(meta, name + '_head')}'"


def write_manifest(directory: Path, meta: BundleMeta) -> dict[str, Any]:
    """Write ``manifest.json``: digests of the bundle files and the boosters' roles (after the files)."""
    files = [BUNDLE_FILE, *(f for _, f in _booster_files(meta))]
    manifest = {
        "manifest_format": MANIFEST_FORMAT,
        "files": {f: {"sha256": file_digest(directory / f), "bytes": (directory / f).stat().st_size} for f in files},
        "boosters": {
            n: booster_role(n, f, booster_header(directory / f), meta.feature_columns) for n, f in _booster_files(meta)
        },
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def verify_bundle(directory: str | Path) -> BundleMeta:
    """Check a bundle directory before anything in it is parsed by LightGBM; returns its metadata.

    With a manifest: every listed file exists with its recorded size and sha256, the manifest lists every
    booster the metadata needs, and each booster's header matches its recorded role. Without one (a bundle
    saved before manifests): the boosters' headers are checked against their roles only.
    Raises :class:`BundleIntegrityError` naming the file.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    manifest: dict[str, Any] | None = None
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            listed = manifest["files"]
            roles: dict[str, Any] = manifest["boosters"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleIntegrityError(f"{MANIFEST_FILE} is not a valid manifest ({exc})") from exc
        for file, entry in listed.items():
            path = directory / file
            if not path.is_file():
                raise BundleIntegrityError(f"{file} is listed in {MANIFEST_FILE} but missing")
            if path.stat().st_size != entry.get("bytes") or file_digest(path) != entry.get("sha256"):
                raise BundleIntegrityError(
                    f"{file} does not match its sha256 in {MANIFEST_FILE} (changed or truncated)"
                )
        if BUNDLE_FILE not in listed:
            raise BundleIntegrityError(f"{MANIFEST_FILE} does not list {BUNDLE_FILE}")
    meta = BundleMeta.from_json((directory / BUNDLE_FILE).read_text())
    for name, file in _booster_files(meta):
        path = directory / file
        if not path.is_file():
            raise BundleIntegrityError(f"{file} is missing: {_needed_because(meta, name)}")
        if manifest is not None and (file not in manifest["files"] or name not in roles):
            raise BundleIntegrityError(f"{file} ({name} head) is not listed in {MANIFEST_FILE}")
        role = booster_role(name, file, booster_header(path), meta.feature_columns)
        if manifest is not None and roles[name] != role:
            raise BundleIntegrityError(
                f"{file} does not have the role recorded in {MANIFEST_FILE}: {role} vs {roles[name]}"
            )
    return meta


def tier_index(expected_value: np.ndarray, thresholds: tuple[float, ...]) -> np.ndarray:
    """Tier number per customer (0 = highest): the first tier whose lower bound (``thresholds``, descending,
    currency units) the expected value reaches; the last tier below every bound."""
    bounds = np.asarray(thresholds, dtype=np.float64)
    index = np.searchsorted(-bounds, -np.asarray(expected_value, dtype=np.float64), side="left")
    return np.minimum(index, len(bounds) - 1)


@dataclasses.dataclass
class Scores:
    """Per-customer model outputs, aligned with the input rows.

    ``intervals``: quantiles and 80% intervals (:class:`serving.intervals.Intervals`); None when the bundle has
    no interval calibration (saved before format 3). ``timing``: purchase timing (:class:`serving.timing.TimingScores`);
    None when the bundle has no BG/NBD parameters. ``uplift``: the change in P(a purchase within the horizon) that
    contacting the customer causes (treated minus control, in [-1, 1]); None when the bundle has no uplift heads."""

    churn_probability: np.ndarray
    expected_value: np.ndarray
    value_at_risk: np.ndarray
    intervals: Intervals | None = None
    timing: TimingScores | None = None
    uplift: np.ndarray | None = None


class ScoringModel:
    """The heads and their metadata, loaded once; ``score`` is safe to call from many threads.

    ``churn_booster``/``value_booster`` are ``None`` for a ``btyd`` head. ``uplift_boosters``: role
    (:data:`UPLIFT_ROLES` of the bundle's learner) -> booster when ``meta.uplift`` is set, else None.
    """

    def __init__(
        self,
        churn_booster: Any,
        value_booster: Any,
        meta: BundleMeta,
        version: str | None = None,
        uplift_boosters: dict[str, Any] | None = None,
    ):
        if (uplift_boosters is None) != (meta.uplift is None) or (
            uplift_boosters is not None and set(uplift_boosters) != set(meta.uplift["files"])  # type: ignore[index]
        ):
            raise ValueError(
                f"the bundle's uplift heads ({'none' if meta.uplift is None else meta.uplift['learner']}) do not match"
                f" the uplift boosters given ({', '.join(uplift_boosters or ()) or 'none'})"
            )
        self.uplift_boosters = uplift_boosters
        for name, booster, kind in (
            ("churn", churn_booster, meta.churn_head),
            ("value", value_booster, meta.value_head),
        ):
            if (booster is None) != (kind == "btyd"):
                raise ValueError(
                    f"the {name} head is '{kind}' but the bundle {'lacks' if booster is None else 'has'}"
                    " a booster for it"
                )
        self.churn_booster = churn_booster
        self.value_booster = value_booster
        self.meta = meta
        self.version = version
        self.btyd = BTYDModel.from_dict(meta.btyd) if meta.btyd is not None else None
        self._calib_x = np.asarray(meta.calibrator_x, dtype=np.float64)
        self._calib_y = np.asarray(meta.calibrator_y, dtype=np.float64)
        self._value_scale = meta.level_factor * meta.margin * meta.discount_factor
        self._btyd_index = [meta.feature_columns.index(c) for c in BTYD_COLUMNS] if self.btyd is not None else []
        self._buyer_index = meta.feature_columns.index(BUYER_COLUMN) if BUYER_COLUMN in meta.feature_columns else None
        self.intervals = IntervalCalibration.from_dict(meta.intervals) if meta.intervals is not None else None

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.meta.feature_columns

    @classmethod
    def load(cls, directory: str | Path, version: str | None = None) -> ScoringModel:
        directory = Path(directory)
        meta = verify_bundle(directory)  # before LightGBM parses anything: a damaged file can crash the process
        boosters = {}
        for name, file, kind in (("churn", CHURN_FILE, meta.churn_head), ("value", VALUE_FILE, meta.value_head)):
            if kind == "btyd":
                boosters[name] = None
                continue
            boosters[name] = _load_booster(directory / file, name, meta)
        uplift = None
        if meta.uplift is not None:
            uplift = {name: _load_booster(directory / file, name, meta) for name, file in meta.uplift["files"].items()}
        return cls(boosters["churn"], boosters["value"], meta, version, uplift)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        roles = self.meta.uplift["files"] if self.meta.uplift is not None else {}
        uplift = [(self.uplift_boosters[n], f) for n, f in roles.items()] if self.uplift_boosters else []
        for booster, file in ((self.churn_booster, CHURN_FILE), (self.value_booster, VALUE_FILE), *uplift):
            if booster is not None:
                booster.save_model(str(directory / file))
        (directory / BUNDLE_FILE).write_text(self.meta.to_json())
        write_manifest(directory, self.meta)
        return directory

    def calibrate(self, raw_churn: np.ndarray) -> np.ndarray:
        return calibrate(raw_churn, self._calib_x, self._calib_y, self.meta.churn_shift)

    def btyd_scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BTYD's ``(P(no purchase), expected value)`` at the bundle's horizon (requires BTYD parameters)."""
        if self.btyd is None:
            raise ValueError("this bundle holds no BTYD parameters")
        return btyd_scores(self.btyd, X, self.meta.feature_columns, self.meta.horizon_days)

    def raw_churn(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The churn head before calibration: a probability of no purchase in the horizon."""
        kind = self.meta.churn_head
        if kind == "lightgbm":
            return self.churn_booster.predict(X, num_threads=num_threads)
        p_btyd = self.btyd_scores(X)[0]
        if kind == "btyd":
            return p_btyd
        return hybrid_churn(p_btyd, self.churn_booster.predict(X, raw_score=True, num_threads=num_threads))

    def raw_value(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The value head before level, margin and discount: expected net revenue over the horizon."""
        kind = self.meta.value_head
        if kind == "lightgbm":
            return self.value_booster.predict(X, num_threads=num_threads)
        v_btyd = self.btyd_scores(X)[1]
        if kind == "btyd":
            return v_btyd
        return hybrid_value(v_btyd, self.value_booster.predict(X, raw_score=True, num_threads=num_threads))

    def score(self, X: np.ndarray, num_threads: int = 0) -> Scores:
        """Score a float64 matrix whose columns follow :attr:`feature_columns`.

        ``num_threads=1`` for single rows online (LightGBM's thread start-up dominates), 0 = all cores in batch.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        churn = self.calibrate(self.raw_churn(X, num_threads))
        value = np.maximum(self.raw_value(X, num_threads), 0.0) * self._value_scale
        uplift = self.raw_uplift(X, num_threads) if self.meta.uplift_trusted else None
        return Scores(
            churn,
            value,
            churn * value,
            self.score_intervals(X, churn, value),
            self.score_timing(X, churn),
            uplift,
        )

    def raw_uplift(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The uplift heads' estimate whether or not they are trusted (:func:`uplift_from_heads`). Raises without
        uplift heads."""
        if self.uplift_boosters is None or self.meta.uplift is None:
            raise ValueError("this bundle holds no uplift heads")
        u = self.meta.uplift
        return uplift_from_heads(u["learner"], self.uplift_boosters, X, u.get("propensity"), num_threads)

    def score_timing(self, X: np.ndarray, churn: np.ndarray) -> TimingScores | None:
        """Purchase timing (:func:`serving.timing.timing_scores`) from the rows' BTYD summary and their scored churn
        probabilities; customers without a purchase day get no BTYD shape (a constant hazard). None without
        BG/NBD parameters."""
        if self.btyd is None:
            return None
        summary = X[:, self._btyd_index]  # a copy (fancy indexing)
        if self._buyer_index is not None:
            summary[~(np.nan_to_num(X[:, self._buyer_index]) > 0)] = np.nan
        return timing_scores(self.btyd, summary, churn, self.meta.horizon_days)

    def score_intervals(self, X: np.ndarray, churn: np.ndarray, value: np.ndarray) -> Intervals | None:
        """Quantiles and 80% intervals of future value and purchase days (:mod:`serving.intervals`) from the scored
        churn probabilities and expected values (after level, margin and discount, so the intervals carry the
        same scale); None without an interval calibration, value fields NaN when it holds no ratios (BTYD-only
        version), purchase fields None without BG/NBD."""
        calibration = self.intervals
        if calibration is None:
            return None
        if calibration.ratio_knots is not None:
            tiers = tier_index(value, self.meta.tier_thresholds)
            value_fields = value_intervals(churn, value, tiers, calibration)
        else:
            value_fields = (np.full(len(X), np.nan),) * 5
        counts: tuple[np.ndarray | None, ...] = (None, None, None)
        if calibration.purchases and self.btyd is not None:
            j_freq, _, j_age = self._btyd_index[:3]
            frequency, age, horizon = np.nan_to_num(X[:, j_freq]), np.nan_to_num(X[:, j_age]), self.meta.horizon_days
            bgnbd = self.btyd.bgnbd
            counts = count_intervals(churn, lambda b: positive_count_quantiles(bgnbd, frequency, age, horizon, b))
        return Intervals(*value_fields, *counts)

    def churn_contributions(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """``[n, k]`` log-odds contributions of each feature to the raw churn head (columns = features).

        Trees: LightGBM ``pred_contrib`` (bias column dropped). The BTYD part of a ``btyd`` or ``hybrid`` head: for
        each BTYD summary feature, logit(BTYD churn at the customer's summary) - logit(BTYD churn with that feature
        set to the population median at the training as-of date): how far this feature alone moves the prior.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.zeros((len(X), len(self.meta.feature_columns)))
        if self.meta.churn_head != "btyd":
            contrib = self.churn_booster.predict(X, pred_contrib=True, num_threads=num_threads)
            out += np.asarray(contrib)[:, :-1]
        if self.meta.churn_head != "lightgbm":
            out += self._btyd_contributions(X)
        return out

    def _btyd_contributions(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), len(self.meta.feature_columns)))
        base = churn_offset(self.btyd_scores(X)[0])
        j_freq, j_rec, j_age = self._btyd_index[:3]  # monetary does not move P(no purchase)
        for j in (j_freq, j_rec, j_age):
            column = self.meta.feature_columns[j]
            if column not in self.meta.btyd_reference:
                continue
            moved = X.copy()
            moved[:, j] = self.meta.btyd_reference[column]
            # keep the summary valid: recency 0 without a repeat purchase, and never beyond the age T
            moved[:, j_rec] = np.where(moved[:, j_freq] > 0, np.minimum(moved[:, j_rec], moved[:, j_age]), 0.0)
            out[:, j] = base - churn_offset(self.btyd_scores(moved)[0])
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "model_version": self.version,
            "horizon_days": self.meta.horizon_days,
            "trained_as_of": self.meta.trained_as_of,
            "features": len(self.meta.feature_columns),
            "churn_head": self.meta.churn_head,
            "value_head": self.meta.value_head,
            "level_source": self.meta.level_source,
            "churn_rate_source": self.meta.churn_rate_source,
            "validation_scheme": self.meta.validation_scheme,
            "intervals": self._describe_intervals(),
            "uplift": self._describe_uplift(),
            "margin": self.meta.margin,
            "discount_rate": self.meta.discount_rate,
            "tiers": dict(zip(self.meta.tier_names, self.meta.tier_thresholds, strict=True)),
        }

    def _describe_uplift(self) -> dict[str, Any] | None:
        """What ``/model`` says about the uplift heads: None without them; ``scored`` = whether ``uplift`` is
        filled (the heads are trusted)."""
        u = self.meta.uplift
        if u is None:
            return None
        keys = ("learner", "campaign_ids", "horizon_days", "trusted", "metrics")
        return {**{k: u.get(k) for k in keys}, "scored": self.meta.uplift_trusted}

    def _describe_intervals(self) -> dict[str, Any] | None:
        """What ``/model`` says about the intervals: None for a bundle without them (saved before format 3)."""
        c = self.intervals
        if c is None:
            return None
        return {
            "level": c.level,
            "method": c.method,
            "value": c.ratio_knots is not None,
            "purchases": c.purchases and self.btyd is not None,
            "calibration_rows": dict(zip(self.meta.tier_names, c.calibration_rows, strict=False)),
        }


def uplift_from_heads(
    learner: str, boosters: dict[str, Any], X: np.ndarray, propensity: float | None = None, num_threads: int = 0
) -> np.ndarray:
    """P(retained | contacted, X) - P(retained | control, X) per row of ``X``, in [-1, 1], from an uplift learner's
    heads (:data:`UPLIFT_ROLES`): ``t_learner`` = treated head - control head; ``x_learner`` = propensity x the
    control arm's effect head + (1 - propensity) x the treated arm's (Kunzel et al. 2019), clipped to [-1, 1]. The one
    place uplift is computed from heads: training's evaluation and the bundle's scores both call it."""

    def head(role: str) -> np.ndarray:
        return boosters[role].predict(X, num_threads=num_threads)

    if learner == "t_learner":
        return head("uplift_treated") - head("uplift_control")
    if learner == "x_learner" and propensity is not None:
        g = float(propensity)
        return np.clip(g * head("uplift_tau_control") + (1.0 - g) * head("uplift_tau_treated"), -1.0, 1.0)
    raise ValueError(f"uplift learner '{learner}' (propensity {propensity}) is not one of {', '.join(UPLIFT_LEARNERS)}")


def _load_booster(path: Path, name: str, meta: BundleMeta) -> Any:
    """A booster of the bundle (native text, checked by :func:`verify_bundle` first) whose features must be the
    bundle's feature list."""
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(path))
    if tuple(booster.feature_name()) != meta.feature_columns:
        raise ValueError(f"{name} booster features do not match the bundle's feature list")
    return booster


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
