"""Interleaving: two models' lists merged into one by team draft, each item saying whose it is."""

from __future__ import annotations

import random

from serving.api_models import RecommendResponse


def team_draft(first: list[str], second: list[str], k: int, coin: random.Random) -> list[tuple[str, str]]:
    """Two rankings merged by team draft (Radlinski, Kurup and Joachims, 2008): ``(item, team)``, at most ``k``.

    The team with fewer picks picks next (a coin decides a tie) and adds its
    highest-ranked item not yet in the list, so each model's items keep its
    order, and a position's team is as likely one as the other. A team whose
    list runs out leaves the rest to the other.
    """
    lists, picks, merged, chosen = {"a": first, "b": second}, {"a": 0, "b": 0}, [], set()
    places = {"a": 0, "b": 0}
    while len(merged) < k:
        left = {t: [i for i in lists[t][places[t] :] if i not in chosen] for t in lists}
        teams = [t for t in ("a", "b") if left[t]]
        if not teams:
            break
        if len(teams) == 2:
            team = "a" if picks["a"] < picks["b"] else "b" if picks["b"] < picks["a"] else coin.choice("ab")
        else:
            team = teams[0]
        item = left[team][0]
        places[team] = lists[team].index(item) + 1
        picks[team] += 1
        chosen.add(item)
        merged.append((item, team))
    return merged


def interleaved(a: RecommendResponse, b: RecommendResponse, k: int) -> RecommendResponse:
    """``a``'s answer with its items replaced by ``a``'s and ``b``'s merged by team draft, each item's team said.

    The coin is seeded by the answer's ``request_id``: the same list for the same id. Scores stay each
    model's own (not comparable across teams); ``model`` names team a, ``/model_info`` both.
    """
    found = {("a", item.item_id): item for item in a.recommendations} | {
        ("b", item.item_id): item for item in b.recommendations
    }
    coin = random.Random(a.request_id)  # nosec B311: a fair coin, not a secret
    order = team_draft([i.item_id for i in a.recommendations], [i.item_id for i in b.recommendations], k, coin)
    first = min((i.rank for i in [*a.recommendations, *b.recommendations]), default=1)  # past an offset's items
    items = [
        found[(team, item)].model_copy(update={"rank": rank, "team": team})
        for rank, (item, team) in enumerate(order, start=first)
    ]
    return a.model_copy(update={"recommendations": items})
