"""API key, TLS with a self-signed certificate, served for real."""

from __future__ import annotations

import socket
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


@pytest.fixture(scope="module")
def tls(movielens_run, tmp_path_factory):
    """A server on HTTPS with a self-signed certificate: the server and a context that trusts it."""
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
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
        yield live, cert


def test_tls_with_self_signed_certificate(tls):
    live, cert = tls
    trust = ssl.create_default_context(cafile=str(cert))
    response = httpx.post(f"{live.url}/recommend", json={"user_id": "196", "k": 3}, verify=trust)
    assert response.status_code == 200 and response.json()["status"] == "success"
    assert response.http_version == "HTTP/1.1"


def test_tls_offers_only_aead_suites(tls):
    live, cert = tls
    host, port = live.url.removeprefix("https://").rsplit(":", 1)

    def handshake(cipher: str) -> str:
        context = ssl.create_default_context(cafile=str(cert))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls_socket,
        ):
            return tls_socket.cipher()[0]

    assert handshake("ECDHE-RSA-AES128-GCM-SHA256") == "ECDHE-RSA-AES128-GCM-SHA256"
    assert handshake("ECDHE-RSA-CHACHA20-POLY1305") == "ECDHE-RSA-CHACHA20-POLY1305"
    for cbc in ("ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA", "AES128-SHA"):
        with pytest.raises(ssl.SSLError):
            handshake(cbc)
        with pytest.raises(httpx.ConnectError):  # an unknown CA is refused
            httpx.post(f"{live.url}/recommend", json={"user_id": "196"}, verify=ssl.create_default_context())
        plain = live.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{plain}/recommend", json={"user_id": "196"}).raise_for_status()
