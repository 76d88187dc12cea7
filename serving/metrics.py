"""Prometheus counters served on /metrics next to BentoML's own.

``bentoml.metrics`` warns that it is deprecated in favour of
``prometheus_client``, but in BentoML 1.4.40 it is still the safe way: a
worker sets ``PROMETHEUS_MULTIPROC_DIR`` after it imported the service
module, and ``bentoml.metrics`` defers importing ``prometheus_client`` until
a metric is created; imported here directly, it would start in
single-process mode and these metrics would never reach ``/metrics``
(see the docstring of ``bentoml/metrics.py``).
"""

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
EVENTS_DROPPED = bentoml.metrics.Counter(
    name="recsys_events_dropped_total",
    documentation=(
        "Event log rows lost: impressions past the buffer while the log cannot be written, rows the schema "
        "cannot hold, rows left at shutdown (feedback is refused with 503 instead of dropped)"
    ),
    labelnames=["kind"],
)
EXPERIMENT_ANSWERS = bentoml.metrics.Counter(
    name="recsys_experiment_answers_total",
    documentation="Answers by experiment and arm (forced: the request named its arm); names come from the file",
    labelnames=["experiment", "arm", "forced"],
)
SHADOW_DROPPED = bentoml.metrics.Counter(
    name="recsys_shadow_dropped_total",
    documentation="Requests an experiment's shadow did not score: its queue was full (the shadow goes first)",
)
