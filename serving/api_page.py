"""The page a user opens first (``/``) and the description ``/docs.json`` carries: this API's, all from this server.

BentoML's own page loads Google Tag Manager from googletagmanager.com, and
the description it writes into the OpenAPI document ("This is a Machine
Learning Service created with BentoML") shows badges from four other sites
and a version of ``None``. The edge answers ``/`` with :data:`PAGE` instead
(Swagger UI from the server's ``/static_content/``, the spec from
``/docs.json``, a Content-Security-Policy that allows nothing else), and
:func:`serving.openapi.conform` puts :func:`info` in the document.
"""

from __future__ import annotations

import re
from typing import Any

VERSION = "0.4.2"  # pyproject.toml's; tests/unit/serving/test_api_page.py keeps the two equal

DESCRIPTION = """\
A two-stage recommender: candidates from ALS, recent popularity and
co-consumption, re-ranked by CatBoost, with business rules, explanations and
fresh activity in the request. Every answer is JSON; every error has the same
envelope (`status`, `error`, `message`, and `detail` on a 400).

- `POST /recommend`: the top `k` items for one user (`user_id`, optional
  `recent_items`, `filters`, `offset`, `diversity`, `explain`). Users the
  model does not know are ranked from their `recent_items` when they send
  some, and get the popularity list the backtest chose when they do not.
- `POST /recommend_batch`: several such requests, answered in order.
- `POST /similar_items`: the items closest to one item.
- `POST /feedback`: what the user did with an answer (joined by `request_id`).
- `POST /model_info`: the models served, their training and backtest, the
  feature snapshot.
- `GET /livez`, `GET /readyz`: probes; `GET /metrics`: Prometheus.

```
curl -s -X POST localhost:3000/recommend -H 'content-type: application/json' -d '{"user_id": "196", "k": 3}'
```
"""

# What the page says above each group of operations (BentoML's tags, described as this API's).
TAG_DESCRIPTIONS = {
    "Service APIs": "Recommendations, similar items, feedback and the model card.",
    "Infrastructure": "Probes and Prometheus metrics.",
}

PAGE = b"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>recsys: recommendations over HTTP</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-initializer.js" charset="UTF-8"></script>
  </body>
</html>
"""

# The files of BentoML's ``/static_content/`` the page loads: the only ones the edge lets through (edge.PAGES).
STATIC_FILES = frozenset(re.findall(r'"\./static_content/([^"/]+)"', PAGE.decode()))

# Only this server: Swagger UI styles elements inline and draws its icons from data: URIs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def info() -> dict[str, Any]:
    """The OpenAPI ``info`` object: this API's title, version and description, no links elsewhere."""
    return {"title": "recsys", "version": VERSION, "description": DESCRIPTION}


async def send_page(send: Any, method: str) -> None:
    """Answer ``GET /`` (or ``HEAD``) with :data:`PAGE`."""
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(PAGE)).encode()),
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-cache"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else PAGE})
