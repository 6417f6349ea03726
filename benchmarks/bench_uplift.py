"""Issue 12's goal: the plan made from the uplift model against contacting as many customers by churn risk.

For each seed ``s`` (default 0, 1, 2):

1. ``generate_transactions(customers, 730, seed=s)`` and ``simulate_campaign(..., sent_at, seed=s)`` (H2's simulator:
   persuadables, sure things, lost causes and sleeping dogs, both potential outcomes known; half of the eligible
   customers contacted at ``--cost`` each);
2. the product's training run with the campaign log, ``fit_pipeline(prep, as_of, campaigns=...)`` (churn and value
   heads at the last day, uplift heads on the campaign's features at its send day; 30% of the campaign's customers
   held out of the uplift heads);
3. on the held-out customers (:func:`training.uplift.goal_figures`): the uplift plan contacts everyone whose benefit
   = uplift x expected value - cost is positive, best first; churn-risk and value-at-risk targeting contact as many
   customers; the TRUE incremental profit of each list from the potential outcomes; the sleeping dogs the model
   flags (uplift < 0, never contacted) and those the plan still contacts. Plus the held-out Qini coefficients.

The goal: the uplift plan earns at least 1.5x the true incremental profit of churn-risk targeting (a positive profit,
and at least 1.5x risk targeting's whatever its sign), and contacts none of the sleeping dogs it identifies.

    python benchmarks/bench_uplift.py           # seeds 0,1,2 at 20,000 customers (~3 min): results/uplift.md
    python benchmarks/bench_uplift.py --quick   # one seed at 5,000 customers: results/uplift-quick.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

AS_OF = "2024-12-30"
SENT_AT = "2024-09-01"
DAYS = 730
HORIZON = 90


def run_seed(seed: int, customers: int, cost: float) -> dict[str, Any]:
    """One seed's figures (module docstring, steps 1-3)."""
    import numpy as np

    from features.campaigns import campaign_training_frame
    from features.contract import prepare_transactions
    from features.kernel import index_transactions
    from features.synthetic import generate_transactions
    from features.synthetic_campaigns import simulate_campaign
    from training.pipeline import fit_pipeline
    from training.uplift import goal_figures

    started = time.perf_counter()
    sim = simulate_campaign(generate_transactions(customers, DAYS, seed=seed), SENT_AT, seed=seed, cost=cost)
    prep = index_transactions(prepare_transactions(sim.transactions)[0])
    result = fit_pipeline(prep, dt.date.fromisoformat(AS_OF), HORIZON, campaigns=sim.campaigns, seed=seed)
    X, outcomes = campaign_training_frame(prep, sim.campaigns, HORIZON)
    held = outcomes["customer_id"].isin(result.uplift.holdout["customer_id"]).to_numpy()
    columns = list(result.model.feature_columns)
    held_X, held_ids = X.loc[held, columns].to_numpy(np.float64), outcomes["customer_id"][held].to_numpy(object)
    goal = goal_figures(result.model, held_X, held_ids, sim.truth, contact_cost=cost)
    return {
        "plan": product_plan(result.model, held_X, held_ids, sim.truth, cost),
        "seed": seed,
        "learner": result.uplift.meta["learner"],
        "metrics": result.uplift.metrics,
        "goal": goal,
        "seconds": time.perf_counter() - started,
    }


def product_plan(model, X, ids, truth, cost: float) -> dict[str, Any]:
    """The product's own plan on the held-out customers (``serving.plan.make_plan``, one offer costing ``cost``, no
    budget limit, uplift from the model): how many it contacts and their TRUE incremental profit."""
    from features.synthetic_campaigns import true_incremental_profit
    from serving.plan import make_plan
    from serving.scoring import score_customers

    batch = score_customers(model, ids, X, reasons=0)
    plan = make_plan(batch, [f"call:fixed={cost:g},save=0.1"], budget=1e12, meta=model.meta)
    contacted = plan.rows["customer_id"].to_numpy(object)
    profit = true_incremental_profit(truth, contacted, margin=model.meta.margin, cost_per_contact=cost)
    return {"contacted": len(contacted), "profit": profit, "uplift_source": plan.totals["uplift_source"]}


def _ratio(value: float) -> str:
    return "inf (risk targeting loses money)" if math.isinf(value) else f"{value:.2f}x"


def _responses(counts: dict[str, int]) -> str:
    order = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
    return ", ".join(f"{k} {counts.get(k, 0):,}" for k in order if counts.get(k, 0))


def render(runs: list[dict[str, Any]], args: argparse.Namespace, started: dt.datetime, uptime_start: str) -> str:
    lines = common.run_header("Uplift: the plan from the uplift model vs churn-risk targeting", started, uptime_start)
    lines += [
        "",
        f"Data: `generate_transactions({args.customers:,}, {DAYS}, seed=s)`, `simulate_campaign(..., '{SENT_AT}',"
        f" seed=s, cost={args.cost:g})`, `fit_pipeline(prep, {AS_OF}, {HORIZON}, campaigns=..., seed=s)`;"
        " figures on the 30% of the campaign's customers held out of the uplift heads (LightGBM T- and X-learner"
        " fitted, the better held-out Qini kept).",
        "",
        "## Held-out Qini coefficient and uplift at 10% (retention points)",
        "",
    ]
    rows = [
        [
            r["seed"],
            r["learner"],
            f"{r['metrics']['uplift_qini_t_learner']:.3f}",
            f"{r['metrics']['uplift_qini_x_learner']:.3f}",
            f"{r['metrics']['uplift_qini_model']:.3f}",
            f"{r['metrics']['uplift_qini_risk']:.3f}",
            f"{r['metrics']['uplift_qini_random_p95']:.3f}",
            f"{r['metrics']['uplift_model_at_10']:.3f}",
            f"{r['metrics']['uplift_risk_at_10']:.3f}",
            f"{r['metrics']['uplift_ate']:.3f}",
            "yes" if r["goal"]["trusted"] else "no",
            f"{r['seconds']:.0f}",
        ]
        for r in runs
    ]
    headers = ["seed", "learner", "Qini T", "Qini X", "Qini model", "Qini risk", "Qini random p95"]
    headers += ["uplift@10 model", "uplift@10 risk", "ATE"]
    lines.append(common.markdown_table([*headers, "trusted", "run s"], rows))
    lines += ["", "## True incremental profit of the same number of contacts (currency units)", ""]
    rows = [
        [
            r["seed"],
            f"{r['goal']['held_out']:,}",
            f"{r['goal']['contacted']:,}",
            f"{r['goal']['profit_uplift']:,.0f}",
            f"{r['plan']['profit']:,.0f} ({r['plan']['contacted']:,}, uplift {r['plan']['uplift_source']})",
            f"{r['goal']['profit_risk']:,.0f}",
            f"{r['goal']['profit_value_at_risk']:,.0f}",
            _ratio(r["goal"]["ratio"]),
            "met" if r["goal"]["goal_met"] else "MISSED",
        ]
        for r in runs
    ]
    headers = ["seed", "held out", "contacted", "uplift plan", "make_plan (contacted)", "churn risk", "value at risk"]
    headers += ["plan / risk", "goal"]
    lines.append(common.markdown_table(headers, rows))
    lines += ["", "## Sleeping dogs (held-out customers)", ""]
    rows = [
        [
            r["seed"],
            f"{r['goal']['dogs']:,}",
            f"{r['goal']['flagged']:,}",
            f"{r['goal']['dogs_flagged']:,}",
            r["goal"]["contacted_flagged"],
            r["goal"]["dogs_contacted"],
        ]
        for r in runs
    ]
    headers = ["seed", "true dogs", "flagged (uplift < 0)", "true dogs flagged", "flagged contacted", "dogs contacted"]
    lines.append(common.markdown_table(headers, rows))
    lines += ["", "## Who each list contacts (true response types)", ""]
    for r in runs:
        for name, counts in r["goal"]["responses"].items():
            lines.append(f"- seed {r['seed']}, {name.replace('_', ' ')}: {_responses(counts)}")
    met = all(r["goal"]["goal_met"] for r in runs)
    lines += [
        "",
        "## Verdict",
        "",
        (
            f"Goal met on every seed ({', '.join(str(r['seed']) for r in runs)}): the uplift plan's true incremental"
            " profit is positive and at least 1.5x churn-risk targeting's, and no customer the model flags as a"
            " sleeping dog is contacted."
            if met
            else "Goal MISSED on seed(s) "
            + ", ".join(str(r["seed"]) for r in runs if not r["goal"]["goal_met"])
            + ": see the profit table."
        ),
        "",
        "Reading: churn-risk targeting contacts the highest P(no purchase) first; in this simulator those are the lost"
        " causes (long silent, no effect either way), so as many contacts by risk earn nothing and pay the contact"
        " cost: the ratio is then infinite, not a measure of precision. Value at risk (churn probability x expected"
        " value, the product's default ranking) is a second baseline shown beside it. 'dogs contacted' are true"
        " sleeping dogs the model did not flag (its uplift estimate was positive). 'make_plan' is the product's plan"
        " (serving.plan, one offer at the contact cost, no budget limit) on the same customers: the same rule, made by"
        " the code a retention manager runs.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--cost", type=float, default=2.0, help="contact cost per treated customer")
    parser.add_argument("--quick", action="store_true", help="seed 0 at 5,000 customers (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.customers = "0", 5_000
    started, uptime_start = dt.datetime.now(dt.UTC), common.uptime()
    runs = [run_seed(int(s), args.customers, args.cost) for s in args.seeds.split(",")]
    text = render(runs, args, started, uptime_start)
    print(text)
    path = common.RESULTS / f"uplift{'-quick' if args.quick else ''}.md"
    path.write_text(text)
    print(f"(written to {path.relative_to(common.REPO)})", file=sys.stderr)


if __name__ == "__main__":
    main()
