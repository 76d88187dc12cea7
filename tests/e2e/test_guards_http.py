"""The body-size guard over real HTTP, served from the repo and from the Bento.

The guard itself is unit-tested in tests/unit/serving/test_guards.py; here a
real HTTP parser and BentoML sit behind it. The API key is in test_security.py.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_oversized_body(client):
    response = client.post("/recommend", content=b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large: 70002 bytes, the limit is 65536"}


def test_oversized_chunked_body(client):
    chunks = iter([b'{"user_id": "196", "pad": "', b"x" * 40_000, b"x" * 40_000, b'"}'])
    response = client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"].startswith("request body too large")


def test_chunked_body_within_limit_is_served(client):
    chunks = iter([b'{"user_id": ', b'"196", "k": 2}'])
    response = client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["recommendations"]) == 2
