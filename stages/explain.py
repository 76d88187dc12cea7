"""Why an item was recommended, in the user's items and in plain words.

- ``because``: the user's own items (stored history and the request's recent
  items) closest to the recommended item by cosine of ALS item factors, the
  similarity the ALS candidate stage ranks by.
- ``reasons``: the ranker's largest positive per-row contributions (tree
  path contributions for the rows shown, see
  :meth:`stages.ranker.Ranker.path_contributions`), each feature put in words through
  :data:`PHRASES`. Features of the user alone (their activity, their
  attributes) are left out: they add the same to every item of a list and so
  do not say why this item.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from features.families.affinity import Affinity
from stages.feature_view import FeatureView

MAX_BECAUSE = 3
MAX_REASONS = 3

# Feature -> phrase. Names not listed fall back to the prefix rules in :func:`phrase`.
PHRASES = {
    "pop_1d": "popular today",
    "pop_7d": "popular this week",
    "pop_30d": "popular this month",
    "pop_all": "popular all time",
    "pop_trend": "trending this week",
    "mean_weight": "rated highly by those who watched it",
    "item_age_days": "how long it has been in the catalogue",
    "item_days_since_last": "others watched it recently",
    "als_score": "fits your taste: people with similar taste liked it",
    "als_rank": "fits your taste: people with similar taste liked it",
    "cooc_score": "often watched together with what you watched last",
    "cooc_rank": "often watched together with what you watched last",
    "popular_rank": "popular lately",
    "recent_sim_max": "similar to what you watched last",
    "recent_sim_mean": "similar to what you watched last",
    "days_since_similar": "similar to what you watched last",
}


def because(unit_vectors: np.ndarray, history: np.ndarray, items: np.ndarray, n: int = MAX_BECAUSE) -> list[np.ndarray]:
    """Per recommended item, up to ``n`` history items most similar to it (positive cosine only), best first.

    ``history`` sorted ascending (ties go to the lower index). One matrix
    product over the history, then ``n`` passes of ``argmax`` (which returns
    the first of equal values, so ties fall as a stable sort would order them)
    instead of sorting every row: a long history costs a product, not a sort.
    """
    if len(history) == 0:
        return [np.empty(0, np.int64) for _ in items]
    sims = np.take(unit_vectors, items, axis=0) @ np.take(unit_vectors, history, axis=0).T
    sims[np.isnan(sims)] = -np.inf  # a sort puts NaN last; never picked, as it is not positive
    flat, starts = sims.ravel(), np.arange(len(items)) * len(history)  # flat indices: cheaper than [rows, cols]
    picked = np.empty((len(items), min(n, len(history))), dtype=np.int64)
    positive = np.empty(picked.shape, dtype=bool)
    for rank in range(picked.shape[1]):
        best = sims.argmax(axis=1)
        picked[:, rank] = best
        positive[:, rank] = flat[starts + best] > 0
        flat[starts + best] = -np.inf
    # Picked best first, so the positive ones are a prefix of each row.
    return [near[:count] for near, count in zip(history[picked], positive.sum(axis=1).tolist(), strict=True)]


class Reasons:
    """Turns a ranker row's contributions into phrases (built once per feature view and ranker)."""

    def __init__(self, view: FeatureView, names: list[str]) -> None:
        self.view = view
        self.names = names
        self.candidate = np.array([view.columns[n].scope != "user" for n in names])
        # Phrases that do not depend on the item or user, worked out once.
        self._phrases = {j: phrase(n, lambda _: None) for j, n in enumerate(names) if not n.startswith("aff_")}
        # Item attributes worth naming with the item's value ("release year 1996").
        self._valued = {
            j: view.columns[n].values
            for j, n in enumerate(names)
            if n in view.catalogue.numbers and view.columns[n].scope == "item"
        }
        affinity = next((f for f in view.families if isinstance(f, Affinity)), None)
        self.affinity = {}
        if affinity is not None:
            self.affinity = {a: (s, m, affinity.view.item_values(a)[0]) for a, (s, m) in affinity.shares.items()}

    def of(self, contributions: np.ndarray, items: np.ndarray, user_row: int) -> list[list[str]]:
        """Per row (one per item), up to :data:`MAX_REASONS` distinct phrases, largest contribution first."""
        scored = np.where(self.candidate, contributions, -np.inf)
        top = np.argsort(-scored, axis=1, kind="stable")[:, : 2 * MAX_REASONS]  # room for phrases that repeat
        # Plain Python numbers from here: the loop below reads a few per row, and numpy scalars are slow to compare.
        values = np.take_along_axis(scored, top, axis=1).tolist()
        out = []
        for item, columns, row in zip(items.tolist(), top.tolist(), values, strict=True):
            phrases: list[str] = []
            for j, value in zip(columns, row, strict=True):
                if value <= 0 or len(phrases) == MAX_REASONS:
                    break
                text = self._text(j, item, user_row)
                if text not in phrases:
                    phrases.append(text)
            out.append(phrases)
        return out

    def _text(self, j: int, item: int, user_row: int) -> str:
        values = self._valued.get(j)
        if values is not None and values[item] == values[item]:
            return f"{self.names[j].replace('_', ' ')} {float(values[item]):g}"
        return self._phrases.get(j) or phrase(self.names[j], self._value(item, user_row))

    def _value(self, item: int, user_row: int) -> Callable[[str], str | None]:
        """For ``aff_<attribute>``: the item's value of it the user gives the largest share to."""

        def top(attribute: str) -> str | None:
            found = self.affinity.get(attribute)
            if found is None:
                return None
            shares, onehot, values = found
            weighted = shares[user_row] * onehot[item]
            return values[int(np.argmax(weighted))] if weighted.max() > 0 else None

        return top


def phrase(name: str, top_value: Callable[[str], str | None]) -> str:
    """One feature in words (see :data:`PHRASES`); ``top_value`` names the user's favourite value of an attribute."""
    if name in PHRASES:
        return PHRASES[name]
    if name.startswith("aff_"):
        attribute = name.removeprefix("aff_").removesuffix("_max")
        value = top_value(attribute)
        return f"you watch a lot of {value}" if value else f"matches the {attribute} you watch"
    if name.startswith("seg_"):
        return f"popular among users with your {name.removeprefix('seg_')}"
    if name.startswith("diff_"):
        return f"its {name.removeprefix('diff_')} is close to what you usually pick"
    if "=" in name:
        return f"it is {name.split('=', 1)[1]}"
    return f"its {name.removeprefix('cat_')}"
