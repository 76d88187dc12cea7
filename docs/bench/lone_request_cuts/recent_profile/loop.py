"""Lone requests in a loop for a profiler: ``python loop.py <recent items per request> <seconds>``.

Known users at random, k = 10, one request per call as a worker makes them; with a number above 0 each request
brings that many recent items. Run under ``py-spy record -r 2000 -f raw`` from the repository root with
``RECSYS_FEATURE_STORE`` set, then compare two profiles with ``attribute.py``.
"""

import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from serving import heap
from serving.runtime import Runtime
from serving.settings import get_settings
from stages.pipeline import Query, RecentEvent

threadpool_limits(1)
runtime = Runtime.from_settings(get_settings())
heap.settle()
pipeline = runtime.pipeline
rng = np.random.default_rng(0)
users = rng.choice(np.asarray(pipeline.candidates.user_ids, dtype=str), 2000)
items = np.asarray(pipeline.candidates.item_ids, dtype=str)
n = int(sys.argv[1])
queries = [
    Query(str(u), 10, recent_items=[RecentEvent(str(i), None, 1.0) for i in rng.choice(items, n, replace=False)])
    for u in users
]
for query in queries[:300]:
    pipeline.recommend([query])
end = time.time() + float(sys.argv[2])
while time.time() < end:
    for query in queries:
        pipeline.recommend([query])
