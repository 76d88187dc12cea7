"""Prometheus counters served on /metrics next to BentoML's own."""

from __future__ import annotations

import bentoml

COLD_STARTS = bentoml.metrics.Counter(
    name="recsys_cold_start_total",
    documentation="Answers from the popularity fallback for users the model has not seen",
)
FILTERED_ITEMS = bentoml.metrics.Counter(
    name="recsys_filtered_items_total",
    documentation="Catalogue items kept out of answers: already seen, excluded, outside the filters or hidden",
)
FEEDBACK = bentoml.metrics.Counter(
    name="recsys_feedback_total",
    documentation=(
        "Feedback events by whether the item was in the list its request_id names "
        "(recommended, not_recommended; unknown: no request_id, or a list this worker did not serve recently)"
    ),
    labelnames=["outcome"],
)
