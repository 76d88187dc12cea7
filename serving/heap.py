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


def settle() -> None:
    """Collect the garbage, freeze every surviving object (see the module docstring), and give what loading
    freed back to the system (:func:`stages.memory.give_back_memory`)."""
    start = time.perf_counter()
    gc.unfreeze()
    give_back_memory()
    gc.freeze()
    logger.info(
        "heap settled: %d objects frozen in %.0f ms", gc.get_freeze_count(), (time.perf_counter() - start) * 1000
    )
