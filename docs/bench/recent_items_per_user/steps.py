"""Where 10 recent items' cost goes: each pipeline step wrapped with a timer, plain requests then requests with
10 recent items (3,000 known MovieLens users, one request per call, two rounds each), mean microseconds per request.

Blocks, not interleaved: read the "added" column within one run, as an indication; the ratio that counts is
benchmarks.recent_items (interleaved). Run from a work tree (PYTHONPATH=<tree> to measure another one):

    RECSYS_FEATURE_STORE=feature_store python docs/bench/recent_items_per_user/steps.py
"""
import time, functools, collections
import numpy as np
from threadpoolctl import threadpool_limits
from serving import heap
from serving.runtime import Runtime
from serving.settings import get_settings
from stages.pipeline import Query, RecentEvent
import stages.pipeline as P, stages.candidates as C, stages.feature_view as FV, stages.ranker as R
from features.families import FAMILIES
threadpool_limits(1)
rt = Runtime.from_settings(get_settings()); heap.settle()
acc = collections.defaultdict(float)
def wrap(cls, name, label=None):
    f = getattr(cls, name)
    lab = label or f"{cls.__name__}.{name}"
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); acc[lab] += time.perf_counter() - t; return r
    setattr(cls, name, g)
for cls, n in [(P.TwoStageRecommender, "_user"), (P.TwoStageRecommender, "_fresh_batch"), (P.TwoStageRecommender, "_candidate_lists"),
               (P.TwoStageRecommender, "_score_rows"), (C.CandidateModel, "user_vectors"), (C.CandidateModel, "_seeds"), (C.CandidateModel, "_top_n"),
               (P.TwoStageRecommender, "pair_rows"), (FV.FeatureView, "rows"), (P.TwoStageRecommender, "recommend")]:
    try: wrap(cls, n)
    except AttributeError as e: print("skip", cls, n, e)
for fam in FAMILIES:
    if "fresh" in fam.__dict__: wrap(fam, "fresh")
rng = np.random.default_rng(0)
users = rng.choice(np.asarray(rt.candidates.user_ids, dtype=str), 3000)
items = np.asarray(rt.candidates.item_ids, dtype=str)
plain = [Query(str(u), 10) for u in users]
rec = [Query(str(u), 10, recent_items=[RecentEvent(str(i), None, 1.0) for i in rng.choice(items, 10, replace=False)]) for u in users]
for q in plain[:200] + rec[:200]: rt.pipeline.recommend([q])
res = {}
for name, qs in (("plain", plain), ("recent", rec), ("plain2", plain), ("recent2", rec)):
    acc.clear()
    for q in qs: rt.pipeline.recommend([q])
    res[name] = {k: v / len(qs) * 1e6 for k, v in acc.items()}
keys = sorted(set(res["recent"]) | set(res["plain"]), key=lambda k: -res["recent"].get(k, 0))
print(f"{'step':45s} {'plain us':>9s} {'recent us':>9s} {'added':>8s}")
for k in keys:
    p = (res["plain"].get(k, 0) + res["plain2"].get(k, 0)) / 2; r = (res["recent"].get(k, 0) + res["recent2"].get(k, 0)) / 2
    print(f"{k:45s} {p:9.1f} {r:9.1f} {r-p:+8.1f}")
