"""What is true about a customer at a cutoff: the transaction contract, point-in-time features and labels.

Time semantics used everywhere in this package:
- Timestamps are UTC. Timezone-aware inputs are converted to UTC; naive ones are taken as UTC.
- A *cutoff* (or *as-of date*) ``D`` is a calendar date. Features at ``D`` use every transaction whose
  UTC calendar day is ``<= D`` (the whole as-of day included) and nothing later.
- Labels for a horizon of ``H`` days use the days ``D+1 .. D+H`` (the window ``(D, D+H]``).
- All durations are in days; money is in the input's currency unit.
- Customer events (:mod:`features.events`: complaints, ratings, contacts, e-mails) follow the same rules: UTC, and a
  feature at ``D`` reads only events whose UTC day is ``<= D`` (:mod:`features.event_features`).
"""
