"""The answer for a user the two stages cannot rank (no stored history, no usable recent items).

Recent popularity, reordered by the user's segments when the backtest gave
them weight; training's baselines and the backtest's cold-start options use
the same functions, so what is evaluated is what is served.
"""

from __future__ import annotations

import numpy as np

from stages.candidates import ranking
from stages.feature_view import FeatureView


def cold_start_scores(
    view: FeatureView, share: np.ndarray, segment_weight: float, attributes: dict[str, object]
) -> tuple[np.ndarray, list[str]]:
    """Popularity shares plus ``segment_weight`` times the mean share within the user's segments."""
    segment = view.segment_scores(attributes) if attributes and segment_weight > 0 else None
    if segment is None:
        return share, []
    scores, used = segment
    return share + segment_weight * scores / len(used), used


def first_k_not_in(order: np.ndarray, k: int, excluded: set[int]) -> np.ndarray:
    """The first ``k`` entries of a ranking that are not excluded (popularity lists, cold start)."""
    return np.array([i for i in order[: k + len(excluded)] if i not in excluded][:k], dtype=np.int64)


def popular_page(
    scores: np.ndarray, allowed: np.ndarray | None, excluded: np.ndarray, offset: int, k: int
) -> np.ndarray:
    """Item indices of one page of the ranking by ``scores``, keeping to ``allowed`` (None: all) minus ``excluded``."""
    order = ranking(scores)
    if allowed is None and not offset:
        return first_k_not_in(order, k, set(excluded.tolist()))
    keep = np.ones(len(order), dtype=bool) if allowed is None else allowed.copy()
    keep[excluded] = False
    return order[keep[order]][offset : offset + k]
