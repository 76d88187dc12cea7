import sys, time, numpy as np
from threadpoolctl import threadpool_limits
from serving.runtime import Runtime
from serving.settings import get_settings
from serving import heap
from stages.pipeline import Query, RecentEvent
threadpool_limits(1)
rt = Runtime.from_settings(get_settings()); heap.settle(); p = rt.pipeline; cm = p.candidates
rng = np.random.default_rng(0)
users = rng.choice(np.asarray(cm.user_ids, dtype=str), 2000)
items = np.asarray(cm.item_ids, dtype=str)
n = int(sys.argv[1])
qs = [Query(str(u), 10, recent_items=[RecentEvent(str(i), None, 1.0) for i in rng.choice(items, n, replace=False)] if n else []) for u in users]
for q in qs[:300]: p.recommend([q])
print("ready", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    for q in qs: p.recommend([q])
