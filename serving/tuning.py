"""Start-up tuning of the BentoML worker for the latency tail (``benchmarks/bench_service.py``, results in
``benchmarks/results/service.md``).

With BentoML's defaults every request left objects alive for ``traffic.timeout`` seconds (the timeout middleware's
timer is never cancelled and holds the request's context, with its OpenTelemetry spans), so they were promoted to
the oldest GC generation and set off full collections of the whole heap (bentoml + mlflow + pandas + lightgbm,
~300k objects) every few thousand requests: pauses of 100-800 ms that every in-flight request waited out.
:func:`tune_runtime` cancels that timer when the request is done (:mod:`serving.bento_patches`: every change to
BentoML internals, behind a version guard) and freezes the start-up heap (:func:`freeze_heap`) so a collection
never walks it again.
"""

from __future__ import annotations

import gc
from typing import Any

from serving import bento_patches
from serving.http_errors import log_client_error

__all__ = ["freeze_heap", "tune_runtime"]


def tune_runtime(service: Any) -> None:
    """Latency fixes for the BentoML worker, the one call at service start (``__init__``; also the benchmark's
    no-op service): :func:`serving.bento_patches.apply` (BentoML internals behind a version guard: the timeout
    timer, client errors as one :func:`~serving.http_errors.log_client_error` line, ``service``'s API methods bound
    once), then :func:`freeze_heap` of the start-up heap (modules, classes, the service), so the cyclic GC only walks
    objects created after start-up. The model is frozen the same way once loaded (``ModelHolder(on_loaded=...)``)."""
    bento_patches.apply(service, log_client_error)
    freeze_heap()


def freeze_heap() -> None:
    """Move every object alive now to the GC's permanent generation (never scanned, never collected)."""
    gc.freeze()
