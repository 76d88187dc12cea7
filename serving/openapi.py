"""The OpenAPI document as the server really answers: nullable fields, the error envelope, every status.

BentoML's generator (OpenAPI 3.0) turns pydantic's ``anyOf [..., null]`` into
the non-null type alone (``message`` a string, though null is sent) and
documents errors as ``{"error": str, "detail": str}``, though ``detail`` is a
list; statuses the edge sends (401, 408, 413, 415, 431, 503) are not listed;
schemas are named after the IO classes it generates (``…IODescriptor``).
:func:`conform` fixes the document BentoML builds; the service serves it at
``/docs.json`` (see :func:`serving.edge.serve_behind_edge`).
"""

from __future__ import annotations

import copy
from typing import Any

from serving.api_page import TAG_DESCRIPTIONS, info

ERROR = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "title": ERROR,
    "description": "Every error the server sends: the edge's, validation errors and server faults.",
    "required": ["status", "error", "message"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "error": {"type": "string", "description": "the HTTP status as a code: bad_request, not_found, ..."},
        "message": {"type": "string", "description": "what went wrong, naming the field"},
        "detail": {
            "type": "array",
            "description": "400 only: one entry per invalid field",
            "items": {"type": "object", "additionalProperties": True},
        },
    },
}
# Statuses the API routes can answer besides 200, and why.
ERROR_STATUSES = {
    "400": "Invalid request: not JSON, a duplicate key, NaN, or a field out of range",
    "401": "Missing, wrong or conflicting API key (when one is set)",
    "404": "Not found",
    "408": "Request body not received in time",
    "413": "Request body too large",
    "415": "Not application/json, or a Content-Encoding",
    "431": "Request headers too large or too many",
    "500": "Server fault",
    "503": "Overloaded",
}
BODY_REQUIRED = ("/recommend", "/recommend_batch", "/similar_items")
IO_SUFFIX = "IODescriptor"  # what BentoML appends to the models it wraps
SCHEMAS = "#/components/schemas/"


def _nullable(schema: Any) -> None:
    """OpenAPI 3.0 spelling of "or null", everywhere in ``schema``: ``nullable: true``."""
    if isinstance(schema, list):
        for item in schema:
            _nullable(item)
        return
    if not isinstance(schema, dict):
        return
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            schema[key] = [option for option in options if option != {"type": "null"}]
            schema["nullable"] = True
    if schema.get("default", "") is None and "$ref" in schema:
        # A $ref ignores its siblings in 3.0: wrap it so "nullable" counts.
        schema["allOf"] = [{"$ref": schema.pop("$ref")}]
        schema["nullable"] = True
    elif schema.get("default", "") is None and ("type" in schema or "enum" in schema):
        schema["nullable"] = True
    for value in schema.values():
        _nullable(value)


def _exclusive_bounds(schema: Any) -> None:
    """OpenAPI 3.0 spelling of exclusive bounds: ``minimum: x, exclusiveMinimum: true`` (pydantic writes 3.1's)."""
    if isinstance(schema, list):
        for item in schema:
            _exclusive_bounds(item)
        return
    if not isinstance(schema, dict):
        return
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = schema.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            schema[bound], schema[exclusive] = value, True
    for value in schema.values():
        _exclusive_bounds(value)


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(path: str, operation: dict) -> None:
    # BentoML's asdict() keys statuses by int; JSON would then hold both 404 and "404".
    responses = {str(status): answer for status, answer in operation.get("responses", {}).items()}
    operation["responses"] = responses
    success = responses.get("200", {}).get("content", {}).get("application/json", {}).get("schema")
    for status, description in ERROR_STATUSES.items():
        schema: dict = {"$ref": f"{SCHEMAS}{ERROR}"}
        if status == "404" and path == "/similar_items" and success:
            schema = success  # an unknown item: the answer's own envelope, status "error"
        responses[status] = _json(schema, description)
    if path in BODY_REQUIRED and "requestBody" in operation:
        operation["requestBody"]["required"] = True
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if body.get("type") == "object" and not body.get("properties") and "$ref" not in body:
        # An API without arguments (/model_info) reads no field: `{}` is its body, as the document now says.
        body["additionalProperties"] = False


def _public_names(spec: dict) -> None:
    """Schemas under the names of our models: ``RecommendRequest``, not ``RecommendRequestIODescriptor``.

    BentoML documents each API's body as the IO class it generates around the
    model (the same fields, no description, its own ``root_input`` flag, which
    its client reads from ``/schema.json``, not from here). Where the model has
    a schema of its own already (nested in a batch), references go to that one;
    should the two ever differ in more than their labels, both stay as they are.
    """
    schemas = spec["components"]["schemas"]
    renamed, titles = {}, set()
    for name in [n for n in schemas if n.endswith(IO_SUFFIX)]:
        public = name.removesuffix(IO_SUFFIX)
        if public in schemas and _fields(schemas[public]) != _fields(schemas[name]):
            continue
        schema = schemas.pop(name)
        schemas.setdefault(public, schema)
        renamed[f"{SCHEMAS}{name}"] = f"{SCHEMAS}{public}"
        titles.add(name)

    def point(node: Any) -> None:
        """References to the public names; schemas inlined in operations titled by them too."""
        if isinstance(node, dict):
            if node.get("$ref") in renamed:
                node["$ref"] = renamed[node["$ref"]]
            title = node.get("title")
            if isinstance(title, str) and title in titles:  # not a property named "title"
                node["title"] = title.removesuffix(IO_SUFFIX)
                node.pop("root_input", None)
            for value in node.values():
                point(value)
        elif isinstance(node, list):
            for item in node:
                point(item)

    point(spec)


def _fields(schema: dict) -> dict:
    """A schema without its labels (title, description, example, BentoML's root_input): what a body must be."""
    return {k: v for k, v in schema.items() if k not in ("title", "description", "example", "root_input")}


def conform(spec: dict, api_routes: frozenset[str] | set[str]) -> dict:
    """A copy of BentoML's OpenAPI document that matches what the server sends."""
    spec = copy.deepcopy(spec)
    spec["info"] = info()  # BentoML's names its own project, its links and badges, and version None
    for tag in spec.get("tags", []):  # BentoML's say "BentoML Service API endpoints for inference"
        tag["description"] = TAG_DESCRIPTIONS.get(tag.get("name"), tag.get("description"))
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    _public_names(spec)
    _nullable(schemas)
    _exclusive_bounds(schemas)
    schemas[ERROR] = ERROR_SCHEMA
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        if name in schemas:
            schemas[name] = ERROR_SCHEMA
    for path, item in spec.get("paths", {}).items():
        _nullable(item)
        _exclusive_bounds(item)
        if path in api_routes and "post" in item:
            _operation(path, item["post"])
    return spec


class ConformingSpec:
    """BentoML's spec object with :func:`conform` applied to ``asdict()``, the form ``/docs.json`` serves."""

    def __init__(self, spec: Any, api_routes: frozenset[str]) -> None:
        self._spec = spec
        self._api_routes = api_routes

    def asdict(self) -> dict:
        return conform(self._spec.asdict(), self._api_routes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)
