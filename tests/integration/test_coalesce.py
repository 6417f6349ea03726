"""Natural batching of concurrent by-id requests: merged for scoring, each answered exactly as if alone."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from cli_util import run_cli

from serving.coalesce import RequestCoalescer
from serving.online import UNKNOWN_CUSTOMER, ModelHolder, OnlineAnswer, OnlineScorer
from serving.store import open_store


@pytest.fixture(scope="module")
def scorer(workspace, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('coalesce') / 'online.db'}"
    result = run_cli(
        "materialize", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--store", url, env=workspace.env
    )
    assert result.returncode == 0, result.stderr
    os.environ["MLFLOW_TRACKING_URI"] = workspace.tracking_uri
    holder = ModelHolder("models:/retention@champion")
    holder.load()
    store = open_store(url)
    yield OnlineScorer(holder, store)
    store.close()


@pytest.fixture(scope="module")
def ids(workspace) -> list[str]:
    return sorted(pd.read_parquet(workspace.transactions)["customer_id"].unique())[:30]


def run_concurrently(coalescer: RequestCoalescer, requests: list[tuple[list[dict], dt.date | None]]) -> list:
    async def main():
        return await asyncio.gather(*(coalescer.predict(c, a) for c, a in requests), return_exceptions=True)

    return asyncio.run(main())


def test_concurrent_requests_are_scored_in_one_call_and_answered_as_if_alone(scorer, ids) -> None:
    requests = [([{"customer_id": ids[i]}, {"customer_id": ids[i + 10]}], None) for i in range(10)]
    requests.append(([{"customer_id": "nobody"}, {"customer_id": ids[0]}], None))
    with ThreadPoolExecutor(1) as pool:
        coalescer = RequestCoalescer(scorer, pool)
        answers = run_concurrently(coalescer, requests)
    assert coalescer.batches == 1 and coalescer.requests == len(requests)
    for (customers, _), answer in zip(requests, answers, strict=True):
        assert answer.predict_body() == scorer.predict(customers)
    assert answers[-1].predict_body()["predictions"][0] == {"customer_id": "nobody", "error": UNKNOWN_CUSTOMER}


def test_requests_with_another_as_of_or_over_the_batch_size_are_scored_apart(scorer, ids) -> None:
    day = dt.date(2024, 12, 30)
    requests = [
        ([{"customer_id": ids[0]}], None),
        ([{"customer_id": ids[1]}], day),
        ([{"customer_id": c} for c in ids[:5]], None),
        ([{"customer_id": ids[2]}], day),
    ]
    with ThreadPoolExecutor(1) as pool:
        coalescer = RequestCoalescer(scorer, pool, max_customers=5)
        answers = run_concurrently(coalescer, requests)
    # [0] alone (the next one with its as_of would pass 5 customers), then [1]+[3] (same as_of), then [2]
    assert coalescer.batches == 3
    for (customers, as_of), answer in zip(requests, answers, strict=True):
        assert answer.predict_body() == scorer.predict(customers, str(as_of) if as_of else None)


def test_a_failed_scoring_call_fails_every_request_of_its_batch(workspace, ids) -> None:
    holder = ModelHolder("models:/retention@champion")  # never loaded: scoring raises
    with ThreadPoolExecutor(1) as pool:
        coalescer = RequestCoalescer(OnlineScorer(holder, None), pool)
        answers = run_concurrently(coalescer, [([{"customer_id": c}], None) for c in ids[:3]])
    assert all(isinstance(a, RuntimeError) for a in answers)


def test_split_keeps_the_header_and_each_requests_slice() -> None:
    header = {"model_version": "3", "as_of": "2024-12-30", "horizon_days": 90}
    rows = [{"customer_id": str(i), "value_at_risk": 1.0} for i in range(5)]
    merged = OnlineAnswer(header, rows, [1.0, None, 2.0, 3.0, 0.5])
    parts = merged.split([2, 0, 3])
    assert [[p["customer_id"] for p in part.rows] for part in parts] == [["0", "1"], [], ["2", "3", "4"]]
    assert [part.risk for part in parts] == [[1.0, None], [], [2.0, 3.0, 0.5]]
    assert all(part.header == header for part in parts)
