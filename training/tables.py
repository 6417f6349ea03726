"""Tables of metrics for people: models side by side, and any frame as a GitHub-flavoured Markdown table.

Used by the model card and backtest report (:mod:`training.report`) and the notebooks; the metrics themselves
are :mod:`training.metrics`'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def comparison_table(metrics_by_model: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> pd.DataFrame:
    """Rows = metric ``keys`` (in the given order), columns = models; a metric a model lacks is NaN."""
    return pd.DataFrame(
        {model: [float(m.get(k, math.nan)) for k in keys] for model, m in metrics_by_model.items()},
        index=pd.Index(list(keys), name="metric"),
    )


def _cell(value: object, floatfmt: str) -> str:
    """One cell as Markdown text: ``floatfmt`` for floats, ``nan`` for NaN, pipes escaped, newlines flattened."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "nan"
        return format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """GitHub-flavoured Markdown table of ``df``. A named or non-default index becomes the first column;
    floats use ``floatfmt``, integers are printed as is, NaN as ``nan``; numeric columns are right-aligned."""
    frame = df
    if frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    headers = [_cell(str(c), floatfmt) for c in frame.columns]
    rows = [[_cell(v, floatfmt) for v in row] for row in frame.itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame]
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True))
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
