"""The edge's body limits over real HTTP, served from the repo and from the Bento.

The edge itself is unit-tested in tests/unit/serving/test_edge.py and over real
HTTP in test_edge.py; here it is checked that the Bento serves behind it too.
The API key is in test_security.py.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow
LIMIT = 1024 * 1024


def test_oversized_body(client):
    response = client.post(
        "/recommend", content=b"{" + b" " * LIMIT + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "status": "error",
        "error": "request_entity_too_large",
        "message": f"request body too large: {LIMIT + 2} bytes, the limit is {LIMIT}",
    }


def test_oversized_chunked_body(client):
    chunks = iter([b'{"user_id": "196", "pad": "', b"x" * 600_000, b"x" * 600_000, b'"}'])
    response = client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["message"].startswith("request body too large")


def test_chunked_body_within_limit_is_served(client):
    chunks = iter([b'{"user_id": ', b'"196", "k": 2}'])
    response = client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["recommendations"]) == 2


def test_unknown_path_is_the_edges_json_404(client):
    response = client.get("/no-such-route")
    assert response.status_code == 404 and response.json()["status"] == "error"
