"""What the candidate stage says about a pair: its scores and its rank in each source."""

from __future__ import annotations

import numpy as np

from features.families.base import Column, FeatureFamily, PairCompute, Pairs

SOURCES = ("als", "popular", "cooc")  # the candidate sources (stages/candidates.py), each a rank feature


class CandidatePair(FeatureFamily):
    """``als_score``, ``cooc_score`` and ``<source>_rank`` (1 = best, NaN: that source did not propose it)."""

    name = "candidate"

    def columns(self) -> list[Column]:
        return [
            Column("als_score", "pair", compute=lambda pairs: pairs.als_scores),
            Column("cooc_score", "pair", compute=lambda pairs: pairs.cooc_scores),
            *(Column(f"{source}_rank", "pair", compute=_rank_of(source)) for source in SOURCES),
        ]


def _rank_of(source: str) -> PairCompute:
    def compute(pairs: Pairs) -> np.ndarray:
        return pairs.source_ranks[source]

    return compute
