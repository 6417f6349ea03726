"""The run report: one self-contained HTML file a retention manager opens after a ``score`` or ``plan`` run.

:func:`render_report` turns a run summary (``JobSummary.to_dict()`` of :mod:`serving.batch`) and, for a plan run,
the plan (``Plan.to_dict()`` of ``serving.plan``: ``totals``, ``budget_curve``, ``offers``) into one HTML page:

- the header: as-of date, model version, horizon, customers scored, customer equity with its 80% interval, data
  quality and the run's warnings;
- the value pyramid: customers, expected value, expected profit and value at risk per tier, best tier on top;
- why value is at risk: value at risk by churn-cause family (``population["at_risk_by_cause"]``: service
  dissatisfaction, value / price, engagement fading, natural lapse, see :mod:`serving.causes`), each customer's
  whole value at risk under the family of their largest reason that raises churn risk, largest first, with the
  customers scored without reasons counted apart;
- value concentration: the Pareto (gains) curve of expected value and the cumulative expected-profit curve by
  customer rank (most profitable first), with how many customers are unprofitable and what they cost (the
  "80/20/30" view: the top 20% make the profit, the bottom destroys part of it);
- the tier x segment matrix (customers and expected value, heat-coloured by expected value);
- drift against the training reference: PSI per feature, features above :data:`serving.drift.PSI_WARNING`
  highlighted;
- for a plan: its totals, the customers per offer and the budget vs expected saved value curve.

Amounts are in the model's currency over its horizon (``horizon_days``), as the summary gives them; customer shares
are of the customers scored. The population blocks are read from ``summary["population"]`` (interfaces of issue
12); a block an older summary lacks (or no drift reference) leaves its section saying so in words, never failing.

The page is self-contained: inline CSS, charts as inline PNG (matplotlib, Agg, no pyplot state) and no URL to
fetch; a Content-Security-Policy forbids every fetch but inline images, so the browser confirms it. One inline
script (allowed by its hash, the only script that can run) writes on ``<body>`` how many images the browser decoded
and laid out (``data-images-total``, ``data-images-decoded``), how many network requests the page attempted, blocked
or not (``data-external-requests``), and the section headings that have a box on the page (``data-headings``,
JSON): what the headless-browser test reads back. Every text and number is HTML-escaped.

Where it goes (:func:`report_path_for`, :func:`write_run_report`): beside a file output (``list.parquet`` ->
``list.report.html``), or for a SQL URL output under the work folder, ``$RETENTION_HOME/reports/``; MLflow keeps a
copy with each score and plan run (:mod:`serving.runs`, artifact ``report.html``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.drift import PSI_WARNING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "REPORT_SUFFIX",
    "SECTION_HEADINGS",
    "render_report",
    "report_path_for",
    "report_title",
    "write_report",
    "write_run_report",
]

REPORT_SUFFIX = ".report.html"
"""A file output's report: the output's name with its suffix replaced (``list.parquet`` -> ``list.report.html``)."""
SECTION_HEADINGS = {
    "plan": "Retention plan",
    "pyramid": "Customer value pyramid",
    "causes": "Why value is at risk",
    "concentration": "Value concentration and profit",
    "matrix": "Tier × segment matrix",
    "drift": "Drift against the training reference",
}
"""The heading of each section, in page order (the plan section, first, only in a plan run's report)."""
GRID_ALPHA = 0.3
"""Opacity of the charts' grid lines (as in :mod:`training.plots`)."""
DPI = 110
BAR_PX = 220
"""Width in pixels of a PSI bar at :data:`PSI_BAR_MAX` in the drift table."""
PSI_BAR_MAX = 0.5
"""The drift bars' fixed scale (0 to 0.5: the warning threshold halfway; larger PSI clipped, its value shown)."""
PSI_STABLE = 0.1
"""Below this PSI a feature reads as stable (:mod:`serving.drift`: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major)."""
log = logging.getLogger("retention.report")

_CHECK_SCRIPT = (
    'addEventListener("load",()=>{const d=document.body.dataset,i=[...document.images],'
    "shown=e=>e.getBoundingClientRect().width>0&&e.getBoundingClientRect().height>0;"
    "d.imagesTotal=i.length;d.imagesDecoded=i.filter(x=>x.complete&&x.naturalWidth>0&&shown(x)).length;"
    'd.externalRequests=performance.getEntriesByType("resource").filter(r=>/^(https?|wss?|ftp):/.test(r.name)).length;'
    'd.headings=JSON.stringify([...document.querySelectorAll("h2")].filter(shown).map(h=>h.textContent));'
    "});"
)
_CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
main{max-width:1080px;margin:0 auto;padding:4px 28px 48px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.25em;margin:0 0 12px;color:#23395d}
header{background:#23395d;color:#fff;padding:22px 28px}header .sub{opacity:.85}
header dl{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:10px 18px;margin:16px 0 0}
header dt{font-size:.78em;text-transform:uppercase;letter-spacing:.04em;opacity:.75}
header dd{margin:2px 0 0;font-size:1.12em;font-weight:600}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:18px 22px;margin:18px 0}
img{max-width:100%;height:auto;display:block;margin:8px auto}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{padding:5px 10px;border-bottom:1px solid #e3e6eb;text-align:right}
th{background:#eef1f5;font-weight:600}th:first-child,td:first-child{text-align:left}
tr.warn td{background-color:#fde2df;font-weight:600}
.bar{display:inline-block;height:10px;background:#4c78a8;vertical-align:middle}
tr.warn .bar{background:#c0392b}
td.bars{text-align:left;width:240px;background-image:linear-gradient(to right,transparent calc(var(--mark) + 10px),
#c0392b calc(var(--mark) + 10px),#c0392b calc(var(--mark) + 11px),transparent calc(var(--mark) + 11px))}
.tables{display:flex;flex-wrap:wrap;gap:0 32px;align-items:flex-start}
.note{color:#555}.missing{color:#8a5a00;background:#fff6e0;padding:8px 12px;border-radius:4px}
.warnings{background:#fde2df;color:#7b1d12;padding:8px 12px;border-radius:4px}
.cell small{display:block}
summary{cursor:pointer;color:#23395d;margin:8px 0}
"""


# --- formatting ----------------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    """``value`` as escaped HTML text (quotes too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, None when it is missing, not a number or not finite."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _count(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:,.0f}"


def _customers(value: Any) -> str:
    """``1 customer``, ``1,234 customers``."""
    return f"{_count(value)} customer{'' if _number(value) == 1 else 's'}"


def _money(value: Any) -> str:
    """An amount to whole currency units with thousands separators (``1,234,567``; ``-4,321``)."""
    return _count(value)


def _short(value: Any) -> str:
    """An amount to three significant digits with a k / M / B suffix (:func:`serving.batch.short_amount`)."""
    from serving.batch import short_amount

    number = _number(value)
    return "n/a" if number is None else short_amount(number)


def _share(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.1%}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; ``head`` is plain text (escaped here), ``rows`` are cells of ready HTML."""
    heads = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{_e(row_classes[i])}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><thead><tr>{heads}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


# --- charts --------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _amount_ticks() -> Any:
    """A matplotlib tick formatter writing amounts like :func:`_short` (``190k``, ``1.2M``)."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: _short(value))


def _image(fig: Figure, alt: str) -> str:
    """``fig`` as an inline PNG ``<img>`` (base64 data URI; Agg canvas, nothing global touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _pyramid_chart(tiers: Sequence[Mapping[str, Any]]) -> Figure:
    """The tiers as the layers of a pyramid (best on top, equal heights), each labelled with its customers and
    expected value and their shares of the totals."""
    from matplotlib import colormaps
    from matplotlib.patches import Polygon

    n = len(tiers)
    customers = sum(_number(t["customers"]) or 0.0 for t in tiers)
    value = sum(_number(t["expected_value"]) or 0.0 for t in tiers)
    fig = _figure(9.0, 0.85 * n + 0.9)
    ax = fig.add_subplot()
    cmap = colormaps["Blues"]

    def half_width(y: float) -> float:  # a truncated pyramid: the top layer keeps room for its name
        return 0.18 + 0.82 * (n - y) / n

    for i, tier in enumerate(tiers):
        top, bottom = n - i, n - i - 1
        shade = 0.85 - 0.55 * i / max(n - 1, 1)
        corners = [(-half_width(bottom), bottom), (half_width(bottom), bottom), (half_width(top), top)]
        corners.append((-half_width(top), top))
        ax.add_patch(Polygon(corners, closed=True, facecolor=cmap(shade), edgecolor="white", linewidth=2))
        ax.text(0, bottom + 0.5, str(tier["tier"]), ha="center", va="center", fontsize=11, weight="bold",
                color="white" if shade > 0.55 else "#1d2330", parse_math=False)  # a name, never mathtext  # fmt: skip
        n_customers, ev = _number(tier["customers"]) or 0.0, _number(tier["expected_value"]) or 0.0
        label = (
            f"{_customers(n_customers)} ({n_customers / customers:.1%})\nexpected value {_short(ev)} ({ev / value:.1%})"
            if customers > 0 and value > 0
            else f"{_customers(n_customers)}\nexpected value {_short(ev)}"
        )
        ax.text(1.08, bottom + 0.5, label, ha="left", va="center", fontsize=10)
    ax.set(xlim=(-1.02, 2.45), ylim=(-0.05, n + 0.05), title="Customers and expected value per tier")
    ax.axis("off")
    return fig


def _concentration_chart(population: Mapping[str, Any], show_profit: bool) -> Figure:
    """Left: the Pareto curve of expected value (share of value held by the top x% of customers, the top 20%
    marked). Right (``show_profit``): the cumulative expected profit by customer rank, its peak and the cost of
    the unprofitable tail."""
    import numpy as np

    fig = _figure(11.0, 4.4)
    left, right = fig.subplots(1, 2) if show_profit else (fig.add_subplot(), None)
    pareto = population["pareto"]
    x = 100 * np.asarray(pareto["customer_share"], dtype=np.float64)
    y = 100 * np.asarray(pareto["value_share"], dtype=np.float64)
    left.plot(x, y, color="tab:blue", linewidth=2, label="expected value, highest first")
    left.plot([0, 100], [0, 100], color="grey", linestyle="--", linewidth=1, label="equal value per customer")
    top20 = float(np.interp(20, x, y))
    if math.isfinite(top20):
        left.plot([20, 20, 0], [0, top20, top20], color="tab:orange", linestyle=":", linewidth=1.2)
        left.annotate(f"top 20% hold {top20:.0f}%", (20, top20), xytext=(26, top20 - 12), fontsize=10)
    left.set(xlim=(0, 100), ylim=(0, 101), xlabel="customers, highest expected value first (%)",
             ylabel="expected value held (% of total)", title="Pareto curve: expected value")  # fmt: skip
    left.legend(loc="lower right")
    left.grid(alpha=GRID_ALPHA)
    if right is not None:
        curve = population["profit_curve"]
        px = 100 * np.asarray(curve["customer_share"], dtype=np.float64)
        py = np.asarray(curve["cumulative_profit"], dtype=np.float64)
        right.plot(px, py, color="tab:green", linewidth=2, label="cumulative expected profit")
        right.axhline(0, color="grey", linewidth=1)
        peak = int(np.nanargmax(py)) if np.isfinite(py).any() else 0
        unprofitable = population.get("unprofitable") or {}
        if peak < len(px) - 1:  # the curve falls after its peak: the unprofitable customers
            right.plot([px[peak]], [py[peak]], "o", color="tab:green",
                       label=f"peak {_short(py[peak])} at {px[peak]:.0f}% of customers")  # fmt: skip
            tail = "unprofitable tail"
            if _number(unprofitable.get("customers")):
                cost = _short(-(_number(unprofitable.get("expected_profit")) or 0.0))
                tail = f"{_customers(unprofitable['customers'])} unprofitable, cost {cost}"
            right.fill_between(px[peak:], py[peak:], py[peak], color="tab:red", alpha=0.18, label=tail)
        right.yaxis.set_major_formatter(_amount_ticks())
        right.set(xlim=(0, 100), xlabel="customers, highest expected profit first (%)",
                  ylabel="cumulative expected profit", title="Cumulative expected profit by customer rank")  # fmt: skip
        right.legend(loc="best")
        right.grid(alpha=GRID_ALPHA)
    return fig


def _budget_chart(curve: Mapping[str, Sequence[float]], budget: float | None) -> Figure:
    """Expected saved value and expected net benefit against the spend, cumulative along the plan's order (the plan
    at every smaller budget); the break-even diagonal (saved value = spend) and the budget, drawn when the plan
    spends close to it (a budget far above what the candidates can take is named in the legend only)."""
    import numpy as np

    spend = np.asarray(curve["spend"], dtype=np.float64)
    saved = np.asarray(curve["expected_saved_value"], dtype=np.float64)
    fig = _figure(8.0, 4.4)
    ax = fig.add_subplot()
    ax.plot(spend, saved, color="tab:green", linewidth=2, label="expected saved value")
    if "expected_net_benefit" in curve:
        net = np.asarray(curve["expected_net_benefit"], dtype=np.float64)
        ax.plot(spend, net, color="tab:blue", linewidth=2, label="expected net benefit")
    end = float(np.nanmax(spend)) if spend.size and np.isfinite(spend).any() else 0.0
    ax.plot([0, end], [0, end], color="grey", linestyle="--", linewidth=1, label="break-even (saved = spend)")
    if budget is not None and budget <= 1.25 * end:
        ax.axvline(budget, color="tab:orange", linestyle=":", linewidth=1.5, label=f"budget {_short(budget)}")
    elif budget is not None:
        ax.plot([], [], " ", label=f"budget {_short(budget)}: not reached (every customer worth it is in)")
    ax.xaxis.set_major_formatter(_amount_ticks())
    ax.yaxis.set_major_formatter(_amount_ticks())
    ax.set(xlabel="spend (cumulative, best customers first)", ylabel="expected value",
           title="Budget vs expected saved value")  # fmt: skip
    ax.legend(loc="upper left")
    ax.grid(alpha=GRID_ALPHA)
    return fig


# --- sections ------------------------------------------------------------------------------------------------------


def _header(summary: Mapping[str, Any], title: str, plan: Mapping[str, Any] | None) -> str:
    horizon = summary.get("horizon_days")
    equity = _money(summary.get("equity"))
    low, high = _number(summary.get("equity_low")), _number(summary.get("equity_high"))
    interval = f"80% interval {_short(low)}–{_short(high)}" if low is not None and high is not None else "no interval"
    facts = [
        ("As of", summary.get("as_of", "n/a")),
        ("Model version", summary.get("model_version") or "n/a"),
        ("Horizon", f"{horizon} days" if horizon is not None else "n/a"),
        ("Customers scored", _count(summary.get("customers_scored"))),
        ("Customer equity", f"{equity} ({interval})"),
        ("Top 20% hold", f"{_share(summary.get('top20_value_share'))} of expected value"),
    ]
    quality = summary.get("report")
    if isinstance(quality, Mapping) and "rows_read" in quality:
        facts.append(("Rows valid", f"{_count(quality.get('rows_valid'))} of {_count(quality['rows_read'])}"))
    if plan is not None:
        totals = plan.get("totals") or {}
        facts.append(("Plan", f"{_customers(totals.get('customers_contacted'))}, spend {_money(totals.get('spend'))}"))
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    output = summary.get("output")
    sub = f"amounts over the next {horizon} days" if horizon is not None else ""
    sub += f" · output {output}" if output else ""
    return f'<header><h1>{_e(title)}</h1><div class="sub">{_e(sub)}</div><dl>{items}</dl></header>'


def _warnings(summary: Mapping[str, Any]) -> str:
    """The run's drift and input warnings in a red box; nothing when there are none."""
    warnings = [f"drift: {w}" for w in summary.get("drift_warnings") or []]
    warnings += [f"input: {w}" for w in summary.get("input_warnings") or []]
    listed = "".join(f"<li>{_e(w)}</li>" for w in warnings)
    return f'<div class="warnings"><strong>Warnings</strong><ul>{listed}</ul></div>' if warnings else ""


def _population(summary: Mapping[str, Any]) -> Mapping[str, Any] | None:
    population = summary.get("population")
    return population if isinstance(population, Mapping) else None


NO_POPULATION = "This run summary has no population block (an older summary or engine): nothing to draw here."


def _pyramid_section(summary: Mapping[str, Any]) -> str:
    population = _population(summary)
    tiers = population.get("tiers") if population else None
    if not tiers:
        counts = summary.get("tier_counts")
        if isinstance(counts, Mapping) and counts:
            rows = [[_e(t), _count(c)] for t, c in counts.items()]
            return _missing(NO_POPULATION + " Customers per tier:") + _table(["tier", "customers"], rows)
        return _missing(NO_POPULATION)
    customers = sum(_number(t["customers"]) or 0.0 for t in tiers)
    value = sum(_number(t["expected_value"]) or 0.0 for t in tiers)
    rows = []
    for t in tiers:
        n, ev = _number(t["customers"]) or 0.0, _number(t["expected_value"]) or 0.0
        rows.append([
            _e(t["tier"]), _e(_count(n)), _e(_share(n / customers if customers else None)), _e(_money(ev)),
            _e(_share(ev / value if value else None)), _e(_money(t.get("expected_profit"))),
            _e(_money(t.get("value_at_risk"))),
        ])  # fmt: skip
    head = ["tier", "customers", "share", "expected value", "share", "expected profit", "value at risk"]
    return _image(_pyramid_chart(tiers), "value pyramid by tier") + _table(head, rows)


NO_CAUSES = (
    "This run summary has no value at risk by cause (a run before cause families were reported): nothing to show."
)
BAR_CAUSE_PX = 260
"""Width in pixels of a cause's bar at 100% of the value at risk."""


def _causes_section(summary: Mapping[str, Any]) -> str:
    """Value at risk by churn-cause family (largest first; the customers scored without reasons last, apart)."""
    population = _population(summary)
    entries = population.get("at_risk_by_cause") if population else None
    if not entries:
        return _missing(NO_CAUSES)
    unexplained = [e for e in entries if e["cause"] == "unexplained"]
    shown = sorted(
        (e for e in entries if e["cause"] != "unexplained"), key=lambda e: -(_number(e["value_at_risk"]) or 0)
    )
    rows = []
    for e in shown:
        share = _number(e.get("share")) or 0.0
        bar = f'<span class="bar" style="width:{max(share, 0.0) * BAR_CAUSE_PX:.0f}px"></span>'
        rows.append([_e(e.get("label") or e["cause"]), _e(_count(e["customers"])), _e(_money(e["value_at_risk"])),
                     _e(_share(share)), bar])  # fmt: skip
    parts = [
        '<p class="note">Each customer\'s value at risk (churn probability × expected value) counts under the cause '
        "family of their largest reason that raises churn risk: what a retention agent would act on first.</p>",
        _table(["cause", "customers", "value at risk", "share", ""], rows),
    ]
    if unexplained and _number(unexplained[0]["customers"]):
        e = unexplained[0]
        parts.append(
            f'<p class="note">{_e(_customers(e["customers"]))} scored without reasons ({_e(_money(e["value_at_risk"]))}'
            f" value at risk, {_e(_share(e.get('share')))}) have no cause here: score with --reasons all to explain"
            " every customer.</p>"
        )
    return "".join(parts)


def _concentration_section(summary: Mapping[str, Any]) -> str:
    population = _population(summary)
    if population is None or "pareto" not in population:
        return _missing(NO_POPULATION)
    has_profit = "profit_curve" in population
    parts = [_image(_concentration_chart(population, has_profit), "Pareto curve and cumulative profit curve")]
    unprofitable = population.get("unprofitable")
    if isinstance(unprofitable, Mapping):
        n, cost = _number(unprofitable.get("customers")), _number(unprofitable.get("expected_profit"))
        scored = _number(summary.get("customers_scored"))
        share = f" ({_share(n / scored)} of the customers scored)" if n is not None and scored else ""
        text = (
            f"{_customers(n)}{share} {'is' if n == 1 else 'are'} unprofitable: their expected profit sums to "
            f"{_money(cost)} over the horizon."
            if n
            else "No customer is unprofitable: every expected profit is zero or more."
        )
        parts.append(f'<p class="note">{_e(text)}</p>')
    if has_profit:
        parts.append(_profit_split(population["profit_curve"]))
    else:
        parts.append(_missing("This run summary has no profit curve."))
    return "".join(parts)


def _profit_split(curve: Mapping[str, Sequence[float]]) -> str:
    """The 80/20/30 sentence, read off the cumulative profit curve (linear interpolation): what the most profitable
    20% of customers make and what the least profitable 30% add (negative: destroy) to the total."""
    import numpy as np

    x = np.asarray(curve["customer_share"], dtype=np.float64)
    y = np.asarray(curve["cumulative_profit"], dtype=np.float64)
    total = float(y[-1])
    top20, first70 = float(np.interp(0.2, x, y)), float(np.interp(0.7, x, y))
    if not (math.isfinite(total) and total > 0):
        return f'<p class="note">Total expected profit: {_e(_money(total))}.</p>'
    return (
        f'<p class="note">The most profitable 20% of customers make {_e(_share(top20 / total))} of the total expected '
        f"profit ({_e(_money(total))}); the least profitable 30% add {_e(_money(total - first70))} "
        f"({_e(_share((total - first70) / total))} of the total).</p>"
    )


def _matrix_section(summary: Mapping[str, Any]) -> str:
    population = _population(summary)
    cells = population.get("matrix") if population else None
    if not cells:
        return _missing(NO_POPULATION if population is None else "No tier × segment counts in this run summary.")
    tiers = [t["tier"] for t in population.get("tiers") or []]
    tiers += [c["tier"] for c in cells if c["tier"] not in tiers]
    segments = list(dict.fromkeys(c["segment"] for c in cells))
    by_cell = {(c["tier"], c["segment"]): c for c in cells}
    top = max((_number(c["expected_value"]) or 0.0 for c in cells), default=0.0)
    rows = []
    for tier in tiers:
        row = [_e(tier)]
        for segment in segments:
            cell = by_cell.get((tier, segment))
            if cell is None:
                row.append("")
                continue
            ev = max(_number(cell["expected_value"]) or 0.0, 0.0)
            heat = 0.06 + 0.8 * ev / top if top > 0 else 0.06
            colour = "#fff" if heat > 0.55 else "#1d2330"
            row.append(
                f'<div class="cell" style="background:rgba(35,57,93,{heat:.2f});color:{colour};padding:4px 8px">'
                f'{_e(_customers(cell["customers"]))}<small style="color:{colour}">'
                f"value {_e(_short(ev))}</small></div>"
            )
        rows.append(row)
    note = '<p class="note">Customers and expected value per cell; darker = more expected value.</p>'
    return note + _table(["tier \\ segment", *map(str, segments)], rows)


def _drift_table(items: Sequence[tuple[str, float]]) -> str:
    """PSI per feature: value, a bar on a fixed scale (0 to :data:`PSI_BAR_MAX`, longer values clipped; the line is
    :data:`PSI_WARNING`) and the reading; rows above the warning threshold highlighted."""
    rows, classes = [], []
    for name, value in items:
        width = BAR_PX * min(max(value, 0.0), PSI_BAR_MAX) / PSI_BAR_MAX
        reading = "major shift" if value > PSI_WARNING else "moderate shift" if value >= PSI_STABLE else "stable"
        rows.append([_e(name), _e(f"{value:.3f}"), f'<span class="bar" style="width:{width:.0f}px"></span>', reading])
        classes.append("warn" if value > PSI_WARNING else "")
    head = ["feature", "PSI", f"PSI 0-{PSI_BAR_MAX} (line: {PSI_WARNING})", "reading"]
    mark = f"{BAR_PX * PSI_WARNING / PSI_BAR_MAX:.0f}px"
    return _table(head, rows, classes).replace("<td><span", f'<td class="bars" style="--mark:{mark}"><span')


def _drift_section(summary: Mapping[str, Any]) -> str:
    psi = summary.get("psi")
    if not isinstance(psi, Mapping) or not psi:
        return _missing("No drift figures: the model has no training reference or the summary holds no PSI.")
    ordered = sorted(((str(k), _number(v) or 0.0) for k, v in psi.items()), key=lambda kv: -kv[1])
    shifted = [kv for kv in ordered if kv[1] >= PSI_STABLE]
    stable = ordered[len(shifted) :]
    over = sum(v > PSI_WARNING for _, v in ordered)
    summary_text = (
        f"{over} of {len(ordered)} features above the warning threshold PSI {PSI_WARNING} (highlighted); "
        f"{len(shifted) - over} with a moderate shift (PSI {PSI_STABLE} to {PSI_WARNING}); "
        f"{len(stable)} stable (below {PSI_STABLE})."
        if shifted
        else f"No drift: every feature stable (PSI below {PSI_STABLE}), {len(ordered)} in all."
    )
    parts = [f'<p class="note">{_e(summary_text)}</p>']
    if shifted:
        parts.append(_drift_table(shifted))
    if stable:
        parts.append(
            f"<details><summary>{len(stable)} stable feature{'' if len(stable) == 1 else 's'} "
            f"(PSI below {PSI_STABLE})</summary>{_drift_table(stable)}</details>"
        )
    return "".join(parts)


_TOTAL_LABELS = {
    "budget": ("Budget", _money),
    "customers_contacted": ("Customers contacted", _count),
    "spend": ("Spend", _money),
    "expected_saved_value": ("Expected saved value", _money),
    "expected_net_benefit": ("Expected net benefit", _money),
    "roi": ("ROI (expected net benefit / spend)", lambda v: "n/a" if _number(v) is None else f"{_number(v):.2f}"),
    "customers_scored": ("Customers scored", _count),
    "candidates": ("Customers worth contacting (positive expected benefit)", _count),
    "sleeping_dogs": ("Sleeping dogs (negative uplift, never contacted)", _count),
    "uplift_source": ("Uplift from", lambda v: {"model": "the uplift model", "assumed": "the assumed save rate"}
                      .get(str(v), str(v))),
}  # fmt: skip


def _plan_section(plan: Mapping[str, Any]) -> str:
    totals = plan.get("totals")
    tables = []
    if isinstance(totals, Mapping) and totals:
        rows = []
        for key, value in totals.items():
            label, show = _TOTAL_LABELS.get(key, (str(key).replace("_", " "), str))
            rows.append([_e(label), _e(show(value))])
        tables.append(_table(["plan total", "value"], rows))
    else:
        tables.append(_missing("The plan has no totals."))
    offers = plan.get("offers")
    if isinstance(offers, Mapping) and offers:
        tables.append(_table(["offer", "customers"], [[_e(k), _e(_count(v))] for k, v in offers.items()]))
    parts = [f'<div class="tables">{"".join(tables)}</div>']
    curve = plan.get("budget_curve")
    if isinstance(curve, Mapping) and curve.get("spend"):
        budget = _number((totals or {}).get("budget")) if isinstance(totals, Mapping) else None
        parts.append(_image(_budget_chart(curve, budget), "budget vs expected saved value"))
    else:
        parts.append(_missing("The plan contacts nobody: no budget curve to draw."))
    return "".join(parts)


def _section(key: str, build: Callable[[], str]) -> str:
    """One ``<section>`` with its heading; a summary the section cannot read (a malformed block) leaves a sentence
    saying so instead of failing the run that writes the report."""
    try:
        body = build()
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        log.warning("report section %r could not be drawn: %r", key, exc)
        body = _missing(f"This section could not be drawn from the run summary ({type(exc).__name__}: {exc}).")
    return f'<section id="{_e(key)}"><h2>{_e(SECTION_HEADINGS[key])}</h2>{body}</section>'


def report_title(summary: Mapping[str, Any], *, plan: Mapping[str, Any] | None = None) -> str:
    """The report's title: ``Retention plan, as of 2024-12-30, model version 7`` (``Retention scores`` without a
    plan; the parts the summary lacks left out)."""
    parts = ["Retention plan" if plan is not None else "Retention scores"]
    if summary.get("as_of"):
        parts.append(f"as of {summary['as_of']}")
    if summary.get("model_version"):
        parts.append(f"model version {summary['model_version']}")
    return ", ".join(parts)


def render_report(summary: Mapping[str, Any], *, plan: Mapping[str, Any] | None = None, title: str) -> str:
    """The run report as one self-contained HTML page (see the module docstring for its sections).

    ``summary``: a run summary dict (``JobSummary.to_dict()``, with ``population`` when the engine gave it);
    ``plan``: a plan's dict (``totals``, ``budget_curve``, ``offers``) for a plan run, None for a score run;
    ``title``: the page title (escaped like everything else).
    """
    builders: dict[str, Callable[[], str]] = {
        "plan": lambda: _plan_section(plan or {}),
        "pyramid": lambda: _pyramid_section(summary),
        "causes": lambda: _causes_section(summary),
        "concentration": lambda: _concentration_section(summary),
        "matrix": lambda: _matrix_section(summary),
        "drift": lambda: _drift_section(summary),
    }
    sections = [_section(key, build) for key, build in builders.items() if key != "plan" or plan is not None]
    digest = base64.b64encode(hashlib.sha256(_CHECK_SCRIPT.encode()).digest()).decode()
    policy = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(policy)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + _header(summary, title, plan)
        + f"<main>{_warnings(summary)}{''.join(sections)}</main>"
        + f"<script>{_CHECK_SCRIPT}</script></body></html>\n"
    )


# --- files ---------------------------------------------------------------------------------------------------------


def write_report(html_text: str, path: str | os.PathLike[str]) -> Path:
    """Write the report atomically (temporary file in the same folder, then rename); the folder is created.

    Raises :class:`~features.contract.ContractError` (one sentence) when it cannot be written.
    """
    from features.contract import ContractError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(html_text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ContractError(f"cannot write the report '{path}': {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def report_path_for(output: str) -> Path | None:
    """Where the report of a run that wrote ``output`` goes.

    A file (or Parquet folder) output: beside it, its suffix replaced by :data:`REPORT_SUFFIX`
    (``out/list.parquet`` -> ``out/list.report.html``). A SQL URL output: ``<RETENTION_HOME>/reports/<table>-<key>
    .report.html`` in the settings' work folder (:attr:`retention.settings.Settings.home`), ``<key>`` = 12 hex
    digits of the URL's SHA-1, so two databases with one table name do not share a report (and no password shows
    in the name). None for an empty output.
    """
    from features.sources import is_sql_url, split_sql_url
    from retention.settings import get_settings

    if not output:
        return None
    if is_sql_url(output):
        _, table, _ = split_sql_url(output, default_table="retention_scores")
        key = hashlib.sha1(output.encode()).hexdigest()[:12]
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(table))
        return get_settings().home / "reports" / f"{name}-{key}{REPORT_SUFFIX}"
    path = Path(output)
    return path.with_name(path.stem + REPORT_SUFFIX) if path.suffix else path.with_name(path.name + REPORT_SUFFIX)


def write_run_report(
    summary: Mapping[str, Any], output: str, *, plan: Mapping[str, Any] | None = None
) -> tuple[str, Path | None]:
    """Render a run's report and write it where :func:`report_path_for` puts the report of ``output``; the HTML
    (to log with the run: ``serving.runs.record_run(..., report_html=)``) and the path written (None: nowhere).

    ``summary``: the run's summary dict; its ``output`` is replaced by ``output`` (a plan run scores into a
    temporary file: the report names the plan's output). ``plan``: the plan's dict for a plan run.
    """
    data = {**summary, "output": output}
    html_text = render_report(data, plan=plan, title=report_title(data, plan=plan))
    path = report_path_for(output)
    return html_text, write_report(html_text, path) if path is not None else None
