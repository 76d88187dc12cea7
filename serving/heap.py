"""The loaded models and features kept out of the garbage collector's full collections.

Measured in one worker at 32 connections (``gc.callbacks`` timing each
generation-2 collection): a full collection every 1.5-2 s, 125-210 ms each,
freeing nothing. It rescans the ~133,000 container objects of the models and
the feature snapshot, which live as long as the worker, and it holds the GIL
throughout, so the event loop, the pipeline thread and the probe thread all
stop. :func:`settle` collects once and then freezes what survived
(:func:`gc.freeze`): frozen objects are never scanned again, so full
collections only look at what requests create.

A swapped-out snapshot is frozen too, and frozen objects in reference cycles
are never freed: after a swap, :func:`settle` unfreezes first, so the old
snapshot's cycles are collected (one full collection, in the refresh thread,
once per new snapshot).
"""

from __future__ import annotations

import gc
import logging
import time

from stages.memory import give_back_memory

logger = logging.getLogger(__name__)


def settle(give_back: bool = False) -> None:
    """Collect the garbage, then freeze every surviving object (see the module docstring).

    ``give_back`` also returns what loading freed to the system (:func:`stages.memory.give_back_memory`): at a
    worker's start only, before it serves. Trimming glibc's heap takes locks request threads allocate under,
    so it is not done on a snapshot swap while requests run (its cost to p99 there is not measured).
    """
    start = time.perf_counter()
    gc.unfreeze()
    if give_back:
        give_back_memory()
    else:
        gc.collect()
    gc.freeze()
    logger.info(
        "heap settled: %d objects frozen in %.0f ms", gc.get_freeze_count(), (time.perf_counter() - start) * 1000
    )
