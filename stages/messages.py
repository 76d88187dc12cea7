"""The English of an answer's ``message`` and a cold start's reasons: every sentence a response can carry.

Kept apart from the pipeline so the steps that rank items never build
strings, and what a client reads can be changed (or translated) in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.families.segments import bucket_label


@dataclass(frozen=True)
class RecentUse:
    """What became of a query's recent items: how many were used, ignored, and whether the user is unknown."""

    used: int
    ignored: int
    unknown_user: bool


def recent_note(recent: RecentUse) -> str:
    """What happened to a query's recent items."""
    note = f"{recent.used} recent items used"
    if recent.unknown_user and recent.used:
        note = f"unknown user: ranked from {recent.used} recent items"
    if recent.ignored:
        note += f", {recent.ignored} ignored (not in the model's catalogue)"
    return note


def rule_notes(
    allowed: np.ndarray | None, found: int, k: int, offset: int, ruled: bool, pool: int | None = None
) -> list[str]:
    """What the filters left (``allowed``: their mask, None without filters) and why a page is short.

    ``ruled``: filters or hidden items took items out. ``pool``: how many candidates the ranking holds when its
    depth, not the catalogue, ended it (None otherwise). Nothing for a plain full answer: never silent otherwise.
    """
    notes = []
    if allowed is not None:
        notes.append(f"filters allow {int(allowed.sum())} of {len(allowed)} items")
    if found < k:
        notes.append(shortfall(found) if not (ruled or offset) else short_page(found, offset, ruled, pool))
    return notes


def shortfall(found: int) -> str:
    """Why a known user got fewer items than asked, so an empty or short list is never silent."""
    if found == 0:
        return "nothing left to recommend: the user has already taken (or excluded) every item in the catalogue"
    return f"only {found} items left to recommend: the rest are seen or excluded"


def short_page(found: int, offset: int, ruled: bool, pool: int | None = None) -> str:
    """Why a page with rules or an offset is short: the candidate pool's depth (``pool``) or the rules left no more."""
    removed = "seen, excluded, filtered out or hidden" if ruled else "seen or excluded"
    where = f" from position {offset + 1}" if offset else ""
    if pool is not None:
        return (
            f"only {found} items left to recommend{where}: the ranking ends with its {pool} candidates "
            f"({removed} items are never candidates; RECSYS_N_CANDIDATES sets the pool)"
        )
    return f"only {found} items left to recommend{where}: the rest are {removed}"


def popularity_window(days: int | None) -> str:
    return "all time" if days is None else f"the last {days} days"


def cold_start_message(
    known_without_history: bool,
    days: int | None,
    used: list[str],
    attributes_unused: bool,
    notes: list[str],
    baseline: bool = False,
) -> str:
    """The message of a cold-start answer: who the user is, which list they got, and what reordered it.

    ``baseline``: the list an online experiment's popularity arm gives every user, known or not.
    """
    who = "popularity baseline of an experiment" if baseline else None
    who = who or ("no interactions yet" if known_without_history else "unknown user")
    among = f", reordered by what users with {', '.join(used)} take" if used else ""
    if attributes_unused:
        among = " (attributes not used: segments got no weight in the backtest)"
    return f"{who}: most popular in {popularity_window(days)}{among}" + "".join(f"; {note}" for note in notes)


def cold_start_reasons(days: int | None, used: list[str], buckets: dict[str, list[float]]) -> list[str]:
    """A cold-start item's reasons: the popularity window, then each segment that reordered it."""
    segments = [segment_phrase(u, buckets.get(u.split("=", 1)[0])) for u in used]
    return [f"most popular in {popularity_window(days)}", *segments]


def segment_phrase(used: str, edges: list[float] | None) -> str:
    """``age=30`` as "popular among users with age 25–34" (numeric attributes by their segment's range)."""
    attribute, raw = used.split("=", 1)
    if not edges:
        return f"popular among users with {attribute} {raw}"
    label = bucket_label(float(raw), edges)
    assert label is not None  # ``used`` names only segments a value fell into, never a NaN one
    slot = int(label[1:])
    low = f"{edges[slot - 1]:g}" if slot > 0 else None
    high = f"{edges[slot]:g}" if slot < len(edges) else None
    span = f"{low}–{high}" if low and high else (f"under {high}" if high else f"{low} and over")
    return f"popular among users with {attribute} {span}"
