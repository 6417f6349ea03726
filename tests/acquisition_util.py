"""A hand-made transaction log for the new-customer forecast (``training.acquisition``): each customer's figures
are worked out in the comments and checked by the unit and CLI tests."""

from __future__ import annotations

import datetime as dt

import pandas as pd

AS_OF = dt.date(2024, 6, 30)
# H = 30, cohort_days = 30: the cohort is acquired 2024-05-02 .. 2024-05-31 (as_of - 30 = May 31, 30 days back)
ROWS = [
    # A: first purchase day May 10 = 100 (web) + 50 (app): acquisition channel web (the larger); window (May 10, Jun 9]
    ("A", "2024-05-10T09:00", 100.0, "web"),
    ("A", "2024-05-10T18:00", 50.0, "app"),
    ("A", "2024-05-20", 30.0, "web"),
    ("A", "2024-06-05", -10.0, "web"),  # a refund inside the window counts (net value)
    ("A", "2024-06-15", 99.0, "web"),  # after Jun 9: outside the window
    # B: acquired on the cohort's last day; Jun 30 = May 31 + 30 is the window's last day
    ("B", "2024-05-31", 40.0, "web"),
    ("B", "2024-06-30", 60.0, "web"),
    # C: the cohort's first day, never again
    ("C", "2024-05-02", 20.0, "app"),
    # D: a refund before any purchase acquires nobody; acquired May 15, a refund that day nets the first basket
    ("D", "2024-04-20", -5.0, "store"),
    ("D", "2024-05-15", 10.0, "store"),
    ("D", "2024-05-15T20:00", -3.0, "store"),
    # G: no channel on its purchase
    ("G", "2024-05-05", 8.0, ""),
    # E, F: acquired after / before the cohort's days: not in it
    ("E", "2024-06-05", 500.0, "app"),
    ("F", "2024-04-25", 1000.0, "web"),
    # H: acquired 2023-06-15, in the 365-day cohort (2023-06-02 .. 2023-07-01); Jun 20, 2024 is after its 365 days
    ("H", "2023-06-15", 10.0, "web"),
    ("H", "2024-06-10", 5.0, "web"),
    ("H", "2024-06-20", 100.0, "web"),
    ("late", "2024-07-02", 1e6, "web"),  # after the as-of date: ignored
]


def acquisition_log() -> pd.DataFrame:
    """:data:`ROWS` as input rows (``customer_id``, ``timestamp``, ``amount``, ``channel``)."""
    return pd.DataFrame(ROWS, columns=["customer_id", "timestamp", "amount", "channel"])
