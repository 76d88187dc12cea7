"""The alternative a user would otherwise write: the same pipeline behind plain FastAPI.

Same models, same feature snapshot, same request/response schemas, same
pipeline call; only the HTTP framework differs. Used by the serving
benchmark as a reference point::

    uvicorn benchmarks.fastapi_app:app --port 3100 --no-access-log --loop uvloop --http httptools
"""

from __future__ import annotations

from fastapi import FastAPI

from serving import heap
from serving.api_models import RecommendRequest, RecommendResponse
from serving.responses import answer
from serving.runtime import Runtime
from serving.settings import get_settings

runtime = Runtime.from_settings(get_settings())
heap.settle()  # as the BentoML workers do (serving/heap.py): the comparison is of the HTTP path, not of GC pauses
tags = runtime.tags
app = FastAPI(title="recsys (FastAPI reference)")


@app.post("/recommend", response_model=RecommendResponse)
async def recommend(request: RecommendRequest) -> RecommendResponse:
    return answer(runtime.pipeline, [request], tags)[0]


@app.get("/livez")
async def livez() -> dict[str, str]:
    """A probe as BentoML's: answered on the event loop, between requests."""
    return {"status": "ok"}
