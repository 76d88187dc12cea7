"""The API page and the OpenAPI description name this API and load nothing from another site."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

from bentoml._internal import server as bentoml_server

from serving.api_page import CONTENT_SECURITY_POLICY, DESCRIPTION, PAGE, TAG_DESCRIPTIONS, VERSION, info, send_page
from serving.openapi import conform
from tests.support import REPO

LINKS = re.compile(rb'(?:src|href)="([^"]+)"')


def test_the_version_is_the_packages():
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == VERSION


def test_every_file_the_page_loads_is_one_this_server_serves():
    links = [link.decode() for link in LINKS.findall(PAGE)]
    assert len(links) == 6
    static = Path(bentoml_server.__file__).parent / "static_content"
    for link in links:
        assert link.startswith("./static_content/"), link
        assert (static / link.removeprefix("./static_content/")).is_file(), link
    assert b"://" not in PAGE and b"googletagmanager" not in PAGE


def test_the_description_names_this_api_and_links_nowhere():
    assert "://" not in DESCRIPTION and "BentoML" not in DESCRIPTION
    for route in ("/recommend", "/recommend_batch", "/similar_items", "/feedback", "/model_info"):
        assert f"`POST {route}`" in DESCRIPTION


def test_the_served_spec_carries_this_apis_info_not_bentomls():
    bentoml_like = {
        "info": {"title": "recsys", "version": "None", "description": "[![x](https://img.shields.io)]"},
        "tags": [
            {"name": "Service APIs", "description": "BentoML Service API endpoints for inference."},
            {"name": "Infrastructure", "description": "Common infrastructure endpoints for observability."},
        ],
    }
    spec = conform({**bentoml_like, "paths": {}}, frozenset())
    assert spec["info"] == info() == {"title": "recsys", "version": VERSION, "description": DESCRIPTION}
    assert [tag["description"] for tag in spec["tags"]] == list(TAG_DESCRIPTIONS.values())


def test_the_page_is_sent_with_a_policy_that_allows_only_this_server():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(send_page(send, "GET"))
    asyncio.run(send_page(send, "HEAD"))
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 200 and headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"content-security-policy"] == CONTENT_SECURITY_POLICY.encode()
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY
    assert sent[1]["body"] == PAGE and sent[3]["body"] == b""
    assert int(headers[b"content-length"]) == len(PAGE)
    assert sent[2]["status"] == 200 and dict(sent[2]["headers"]) == headers  # HEAD: the same head, no body
