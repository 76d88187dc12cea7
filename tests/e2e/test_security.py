"""API key, TLS with a self-signed certificate, served for real."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import pytest

from tests.support import serve

pytestmark = pytest.mark.slow
KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def keyed(movielens_run):
    env = {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_API_KEY": KEY, "RECSYS_REFRESH_SECONDS": "0"}
    with serve("service:Recommender", env) as live:
        yield live


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}, {"Authorization": KEY}],
    ids=["none", "wrong-bearer", "wrong-header", "no-bearer-prefix"],
)
def test_missing_or_wrong_key_is_401(keyed, headers):
    response = httpx.post(f"{keyed.url}/recommend", json={"user_id": "196"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["message"].startswith("missing or wrong API key")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}])
def test_right_key_is_served(keyed, headers):
    response = httpx.post(f"{keyed.url}/recommend", json={"user_id": "196", "k": 2}, headers=headers)
    assert response.status_code == 200 and len(response.json()["recommendations"]) == 2


def test_probes_stay_open_everything_else_is_closed(keyed):
    assert httpx.get(f"{keyed.url}/livez").status_code == 200
    assert httpx.get(f"{keyed.url}/readyz").status_code == 200
    for path in ("/metrics", "/docs.json"):
        assert httpx.get(f"{keyed.url}{path}").status_code == 401
    for path in ("/similar_items", "/model_info", "/recommend_batch"):
        assert httpx.post(f"{keyed.url}{path}", json={}).status_code == 401


def test_tls_with_self_signed_certificate(movielens_run, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {
        "RECSYS_RANKER_TAG": movielens_run[0].ranker_tag,
        "RECSYS_SSL_CERTFILE": str(cert),
        "RECSYS_SSL_KEYFILE": str(key),
        "RECSYS_REFRESH_SECONDS": "0",
    }
    trust = ssl.create_default_context(cafile=str(cert))
    with serve("service:Recommender", env, scheme="https", verify=trust) as live:
        response = httpx.post(f"{live.url}/recommend", json={"user_id": "196", "k": 3}, verify=trust)
        assert response.status_code == 200 and response.json()["status"] == "success"
        assert response.http_version == "HTTP/1.1"
        with pytest.raises(httpx.ConnectError):  # an unknown CA is refused
            httpx.post(f"{live.url}/recommend", json={"user_id": "196"}, verify=ssl.create_default_context())
        plain = live.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{plain}/recommend", json={"user_id": "196"}).raise_for_status()
