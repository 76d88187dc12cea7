"""What the candidate stage says about a pair: its ALS score and rank."""

from __future__ import annotations

from features.families.base import Column, FeatureFamily


class CandidatePair(FeatureFamily):
    """``als_score`` and ``als_rank`` (1 = best) of each candidate for its user."""

    name = "candidate"

    def columns(self) -> list[Column]:
        return [
            Column("als_score", "pair", compute=lambda pairs: pairs.als_scores),
            Column("als_rank", "pair", compute=lambda pairs: pairs.als_ranks),
        ]
