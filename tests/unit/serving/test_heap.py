"""serving.heap: what survives is frozen, and a second settle frees what the first froze and was dropped since."""

from __future__ import annotations

import gc
import weakref

from serving import heap


class Node:
    """Something that can sit in a reference cycle and be watched through a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_freezes_survivors_and_a_later_settle_frees_dropped_cycles():
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        watch = weakref.ref(a)
        heap.settle()
        assert gc.get_freeze_count() > 0
        del a, b
        gc.collect()
        assert watch() is not None  # frozen: not even a full collection frees it (why a swap settles again)
        heap.settle()
        assert watch() is None  # unfrozen, collected, the rest frozen again
    finally:
        gc.unfreeze()
