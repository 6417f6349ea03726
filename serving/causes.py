"""Churn-cause families and plain-language facts: reasons a retention agent can act on.

Every kernel feature belongs to one documented *cause family* (:data:`FEATURE_FAMILY`), the kind of reason a customer
leaves that the feature measures; a reason then says its family and a *fact* written from the feature's value
("2 unresolved complaints", "no purchase for 143 days") instead of ``tx_30d = 1``.

Families (:data:`FAMILIES`, in report order):

- ``service`` -- *service dissatisfaction*: the product or service did not meet the customer's needs or the company
  treated them badly: complaints and whether they were resolved, ratings / satisfaction, support contacts, refunds
  and returns (``refund_count``, ``refund_share``: money sent back is the clearest trace of a disappointment in a
  transaction log);
- ``value`` -- *value / price*: what the customer spends and how that moves: basket size and spread, spend in each
  window and its trend, the first basket, the breadth of categories bought (a competitor's offer or a price change
  shows first as smaller or narrower baskets);
- ``engagement`` -- *engagement fading*: the relationship cooling: recency and how overdue the next purchase is, the
  purchase rate in each window and its trends, the purchase rhythm, the repeat purchase days, the channels used,
  email opens and clicks, days since the last engagement, an unsubscribe;
- ``lapse`` -- *natural lapse*: what the customer is rather than what happened: tenure and age (BTYD ``T``), a
  one-time buyer's first purchase (days to the second purchase, the acquisition category and channel), the time of
  year (seasonal buyers lapse and return).

A feature this module does not name (a later kernel feature, a new event type) gets its family from its name
(:func:`family_of`: ``complaint``, ``rating``, ``support``, ``return`` -> service; ``email``, ``engage``,
``unsubscribe``, ``click``, ``open`` -> engagement; ``spend``, ``amount``, ``basket`` -> value) and otherwise
``other`` (*other*), which reports show as such. The customer-event features of issue 15 part 1
(:data:`EVENT_FEATURE_FAMILY`, :mod:`features.event_features`) are named here so that a model trained with events
explains them in the same terms; a model trained without them simply never shows them.

Facts (:func:`fact`): a per-feature template over the value (counts as whole numbers with plurals, days as whole
days, money with two decimals, ratios as ``2.1x``, shares as percentages, a sentence for a missing value where
missing means something, e.g. "no purchase yet"); any other feature: ``"<description>: <value:g>"`` (``missing``
for a missing value). A fact describes the value only: the reason's ``effect`` says whether it raises or lowers
churn risk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from features.kernel import FEATURE_DESCRIPTIONS, WINDOWS_DAYS

__all__ = [
    "EVENT_FEATURE_FAMILY",
    "FAMILIES",
    "FAMILY_LABELS",
    "FEATURE_FAMILY",
    "NO_CAUSE",
    "OTHER",
    "fact",
    "facts",
    "family_of",
    "family_text",
]

FAMILIES = ("service", "value", "engagement", "lapse")
"""The documented cause families, in report order (see the module doc)."""
OTHER = "other"
"""The family of a feature neither named here nor recognised by its name."""
NO_CAUSE = "none"
"""A customer none of whose reasons raises churn risk (summaries only)."""
FAMILY_LABELS = {
    "service": "service dissatisfaction",
    "value": "value / price",
    "engagement": "engagement fading",
    "lapse": "natural lapse",
    OTHER: "other",
    NO_CAUSE: "no reason raising risk",
}
"""What reports and text reasons call each family."""

FEATURE_FAMILY: dict[str, str] = {
    "recency_days": "engagement",
    "tenure_days": "lapse",
    "n_purchase_days": "engagement",
    "n_transactions": "engagement",
    "net_spend": "value",
    "gross_spend": "value",
    "mean_amount": "value",
    "max_amount": "value",
    "std_amount": "value",
    **{f"tx_{w}d": "engagement" for w in WINDOWS_DAYS},
    **{f"spend_{w}d": "value" for w in WINDOWS_DAYS},
    "trend_tx_30_365": "engagement",
    "trend_tx_90_365": "engagement",
    "trend_spend_90_365": "value",
    "ipt_mean_days": "engagement",
    "ipt_std_days": "engagement",
    "days_overdue": "engagement",
    "overdue_ratio": "engagement",
    "refund_count": "service",
    "refund_share": "service",
    "btyd_frequency": "engagement",
    "btyd_recency": "engagement",
    "btyd_T": "lapse",
    "btyd_monetary": "value",
    "season_sin": "lapse",
    "season_cos": "lapse",
    "first_basket_value": "value",
    "days_to_second_purchase": "lapse",
    "n_categories": "value",
    "n_channels": "engagement",
    "first_category_code": "lapse",
    "first_channel_code": "lapse",
    "first_basket_items": "value",
}
"""The family of every transaction feature of :data:`features.kernel.FEATURE_DESCRIPTIONS`."""
EVENT_FEATURE_FAMILY: dict[str, str] = {
    "complaints_30d": "service",
    "complaints_90d": "service",
    "unresolved_complaints": "service",
    "days_since_last_complaint": "service",
    "last_rating": "service",
    "mean_rating": "service",
    "rating_trend": "service",
    "support_contacts_90d": "service",
    "email_opens_90d": "engagement",
    "email_clicks_90d": "engagement",
    "days_since_last_engagement": "engagement",
    "unsubscribed": "engagement",
}
"""The family of every customer-event feature (:data:`features.event_features.EVENT_FEATURE_DESCRIPTIONS`): present
only in models trained with events."""
_NAME_HINTS = (
    (("complaint", "rating", "support", "return", "refund", "nps", "satisf"), "service"),
    (("email", "engage", "unsubscri", "click", "open"), "engagement"),
    (("spend", "amount", "basket", "monetary"), "value"),
)


def family_of(feature: str) -> str:
    """The cause family of a feature: :data:`FEATURE_FAMILY` / :data:`EVENT_FEATURE_FAMILY`, else by its name
    (see the module doc), else :data:`OTHER`."""
    known = FEATURE_FAMILY.get(feature) or EVENT_FEATURE_FAMILY.get(feature)
    if known is not None:
        return known
    name = feature.lower()
    for hints, family in _NAME_HINTS:
        if any(h in name for h in hints):
            return family
    return OTHER


def family_text(family: str) -> str:
    """The family as reports and text reasons say it (:data:`FAMILY_LABELS`; the key itself when unknown)."""
    return FAMILY_LABELS.get(family, family)


# --- facts -------------------------------------------------------------------------------------------------------


def _plural(v: float, word: str) -> str:
    """``"1 complaint"``, ``"2 complaints"`` (``word`` may hold ``{s}``)."""
    n = round(v)
    return f"{n:,} " + word.format(s="" if n == 1 else "s")


def _money(v: float) -> str:
    return f"{v:,.2f}"


def _ratio(v: float) -> str:
    return f"{v:.1f}x"


def _share(v: float) -> str:
    return f"{v:.0%}"


def _trend(v: float, doing: str, nothing: str, days: int) -> str:
    """``buying at 0.4x the yearly rate in the last 90 days``; ``no purchase in the last 90 days`` at 0."""
    if v == 0:
        return f"{nothing} in the last {days} days (some earlier in the year)"
    return f"{doing} at {_ratio(v)} the yearly rate in the last {days} days"


def _window_facts() -> dict[str, Callable[[float], str]]:
    out: dict[str, Callable[[float], str]] = {}
    for w in WINDOWS_DAYS:
        out[f"tx_{w}d"] = lambda v, w=w: f"{_plural(v, 'purchase{s}')} in the last {w} days"
        out[f"spend_{w}d"] = lambda v, w=w: f"net spend {_money(v)} in the last {w} days"
    return out


_FACTS: dict[str, Callable[[float], str]] = {
    "recency_days": lambda v: f"no purchase for {_plural(v, 'day{s}')}" if round(v) else "bought on the as-of day",
    "tenure_days": lambda v: f"customer for {_plural(v, 'day{s}')}",
    "n_purchase_days": lambda v: f"bought on {_plural(v, 'day{s}')} so far",
    "n_transactions": lambda v: f"{_plural(v, 'purchase{s}')} so far",
    "net_spend": lambda v: f"net spend {_money(v)} to date",
    "gross_spend": lambda v: f"spend {_money(v)} on purchases to date",
    "mean_amount": lambda v: f"average purchase {_money(v)}",
    "max_amount": lambda v: f"largest purchase {_money(v)}",
    "std_amount": lambda v: f"purchase amounts vary by {_money(v)}",
    **_window_facts(),
    "trend_tx_30_365": lambda v: _trend(v, "buying", "no purchase", 30),
    "trend_tx_90_365": lambda v: _trend(v, "buying", "no purchase", 90),
    "trend_spend_90_365": lambda v: _trend(v, "spending", "no net spend", 90),
    "ipt_mean_days": lambda v: f"usually buys every {_plural(v, 'day{s}')}",
    "ipt_std_days": lambda v: f"purchase interval varies by {_plural(v, 'day{s}')}",
    "days_overdue": lambda v: (
        f"{_plural(v, 'day{s}')} past the usual purchase interval"
        if v >= 0
        else f"next purchase due in {_plural(-v, 'day{s}')}"
    ),
    "overdue_ratio": lambda v: f"no purchase for {_ratio(v)} the usual interval",
    "refund_count": lambda v: f"{_plural(v, 'refund{s}')} to date",
    "refund_share": lambda v: f"{_share(v)} of spend refunded",
    "btyd_frequency": lambda v: f"{_plural(v, 'repeat purchase day{s}')}",
    "btyd_recency": lambda v: f"last purchase {_plural(v, 'day{s}')} after the first",
    "btyd_T": lambda v: f"first purchase {_plural(v, 'day{s}')} ago",
    "btyd_monetary": lambda v: f"average repeat purchase day {_money(v)}",
    "first_basket_value": lambda v: f"first basket {_money(v)}",
    "days_to_second_purchase": lambda v: f"second purchase {_plural(v, 'day{s}')} after the first",
    "n_categories": lambda v: f"bought in {round(v):,} categor{'y' if round(v) == 1 else 'ies'}",
    "n_channels": lambda v: f"uses {_plural(v, 'channel{s}')}",
    "first_basket_items": lambda v: f"{_plural(v, 'item{s}')} in the first basket",
    "complaints_30d": lambda v: f"{_plural(v, 'complaint{s}')} in the last 30 days",
    "complaints_90d": lambda v: f"{_plural(v, 'complaint{s}')} in the last 90 days",
    "unresolved_complaints": lambda v: f"{_plural(v, 'unresolved complaint{s}')}",
    "days_since_last_complaint": lambda v: f"last complaint {_plural(v, 'day{s}')} ago",
    "last_rating": lambda v: f"last rating {v:g}",
    "mean_rating": lambda v: f"average rating {v:.1f}",
    "rating_trend": lambda v: f"ratings moving by {v:+.1f}",
    "support_contacts_90d": lambda v: f"{_plural(v, 'support contact{s}')} in the last 90 days",
    "email_opens_90d": lambda v: f"{_plural(v, 'e-mail{s}')} opened in the last 90 days",
    "email_clicks_90d": lambda v: f"{_plural(v, 'e-mail click{s}')} in the last 90 days",
    "days_since_last_engagement": lambda v: f"no engagement for {_plural(v, 'day{s}')}",
    "unsubscribed": lambda v: "unsubscribed from emails" if v > 0 else "subscribed to emails",
}
"""Fact templates over a finite value, per feature."""
_MISSING_FACTS = {
    "recency_days": "no purchase yet",
    "days_to_second_purchase": "one-time buyer: no second purchase day yet",
    "ipt_mean_days": "no repeat purchase yet",
    "days_overdue": "no usual purchase interval yet (one purchase day)",
    "overdue_ratio": "no usual purchase interval yet (one purchase day)",
    "last_rating": "never rated",
    "mean_rating": "never rated",
    "rating_trend": "fewer than two days with a rating",
    "complaints_30d": "no complaint on record",
    "complaints_90d": "no complaint on record",
    "unresolved_complaints": "no complaint on record",
    "days_since_last_complaint": "never complained",
    "support_contacts_90d": "no support contact on record",
    "email_opens_90d": "no e-mail activity on record",
    "email_clicks_90d": "no e-mail activity on record",
    "days_since_last_engagement": "never opened or clicked an e-mail",
}
"""Facts for a missing value where missing says something."""
_SEASON = ("season_sin", "season_cos")


def facts(feature: str, values: Sequence[float], description: str | None = None) -> list[str]:
    """:func:`fact` of each value of one feature (the template looked up once)."""
    template = _FACTS.get(feature)
    if template is None:
        return [fact(feature, v, description) for v in values]
    return [template(v) if math.isfinite(v) else fact(feature, v, description) for v in values]


def fact(feature: str, value: float, description: str | None = None) -> str:
    """The plain-language fact of a feature's value (see the module doc); ``description`` (default: the kernel's,
    else the name) for the generic ``"<description>: <value:g>"`` fallback."""
    finite = value is not None and math.isfinite(value)
    if not finite:
        if feature in _MISSING_FACTS:
            return _MISSING_FACTS[feature]
    elif feature in _FACTS:
        return _FACTS[feature](float(value))
    if feature in _SEASON:
        return "the time of year"
    label = description or FEATURE_DESCRIPTIONS.get(feature, feature)
    return f"{label}: {f'{round(float(value), 4):g}' if finite else 'missing'}"
