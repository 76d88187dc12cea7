"""serving.openapi.conform on the shapes BentoML's generator produces."""

from __future__ import annotations

from serving.openapi import ERROR, ERROR_STATUSES, conform

ITEM = {
    "type": "object",
    "properties": {
        "message": {"default": None, "title": "Message", "type": "string"},
        "model": {"default": None, "$ref": "#/components/schemas/ModelTags"},
        "status": {"default": "success", "enum": ["success", "error"], "type": "string"},
    },
}
SPEC = {
    "openapi": "3.0.2",
    "components": {
        "schemas": {
            "Answer": {"properties": {"message": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}}},
            "InvalidArgument": {"properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
        }
    },
    "paths": {
        "/similar_items": {
            "post": {
                "requestBody": {"content": {"application/json": {"schema": {}}}},
                "responses": {200: {"content": {"application/json": {"schema": ITEM}}}},  # int, as BentoML has it
            }
        },
        "/livez": {"get": {"responses": {"200": {"description": "ok"}}}},
    },
}


def test_null_is_documented_where_it_is_sent():
    fixed = conform(SPEC, {"/similar_items"})
    answer = fixed["components"]["schemas"]["Answer"]["properties"]["message"]
    assert answer["nullable"] is True and {"type": "null"} not in answer["anyOf"]
    inline = fixed["paths"]["/similar_items"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert inline["properties"]["message"]["nullable"] is True
    assert inline["properties"]["model"] == {
        "default": None,
        "allOf": [{"$ref": "#/components/schemas/ModelTags"}],
        "nullable": True,
    }
    assert "nullable" not in inline["properties"]["status"]


def test_errors_are_the_envelope_with_every_status_and_detail_a_list():
    fixed = conform(SPEC, {"/similar_items"})
    schemas = fixed["components"]["schemas"]
    assert schemas["InvalidArgument"] == schemas[ERROR]
    assert schemas[ERROR]["properties"]["detail"]["type"] == "array"
    operation = fixed["paths"]["/similar_items"]["post"]
    assert set(operation["responses"]) == {"200", *ERROR_STATUSES}
    assert operation["responses"]["404"]["content"]["application/json"]["schema"]["properties"]["status"]
    assert operation["requestBody"]["required"] is True
    assert fixed["paths"]["/livez"] == SPEC["paths"]["/livez"] and "nullable" not in str(SPEC)  # a copy


def test_exclusive_bounds_are_spelled_the_openapi_3_0_way():
    spec = {
        "components": {"schemas": {"E": {"properties": {"w": {"type": "number", "exclusiveMinimum": 0}}}}},
        "paths": {},
    }
    weight = conform(spec, set())["components"]["schemas"]["E"]["properties"]["w"]
    assert weight == {"type": "number", "minimum": 0, "exclusiveMinimum": True}


def test_schemas_carry_our_model_names_not_bentomls_io_classes():
    title_field = {"title": {"type": "string"}}  # a property called "title" is not a schema's title
    wrapped = {"type": "object", "title": "AskIODescriptor", "root_input": True, "properties": title_field}
    spec = {
        "components": {
            "schemas": {
                "AskIODescriptor": wrapped,
                "ReplyIODescriptor": {"title": "ReplyIODescriptor", "properties": {"x": {"type": "integer"}}},
                "Reply": {"title": "Reply", "description": "ours", "properties": {"x": {"type": "integer"}}},
            }
        },
        "paths": {
            "/ask": {
                "post": {
                    "requestBody": {"content": {"application/json": {"schema": dict(wrapped)}}},
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ReplyIODescriptor"}}
                            }
                        }
                    },
                }
            }
        },
    }
    fixed = conform(spec, set())
    schemas = fixed["components"]["schemas"]
    assert set(schemas) == {"Ask", "Reply", ERROR}
    assert schemas["Ask"] == {"type": "object", "title": "Ask", "properties": title_field}  # no BentoML-only flag
    assert schemas["Reply"]["description"] == "ours"  # the model's own schema wins over the IO class's
    operation = fixed["paths"]["/ask"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["title"] == "Ask"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Reply"
    }
    assert "IODescriptor" not in str(fixed) and "IODescriptor" in str(spec)  # a copy


def test_an_io_class_that_differs_from_the_model_of_its_name_keeps_its_own_name():
    spec = {
        "components": {
            "schemas": {
                "ReplyIODescriptor": {"title": "ReplyIODescriptor", "properties": {"x": {"type": "integer"}}},
                "Reply": {"title": "Reply", "properties": {"x": {"type": "string"}}},
            }
        },
        "paths": {"/r": {"post": {"responses": {"200": {"$ref": "#/components/schemas/ReplyIODescriptor"}}}}},
    }
    fixed = conform(spec, set())
    assert fixed["components"]["schemas"]["ReplyIODescriptor"] == spec["components"]["schemas"]["ReplyIODescriptor"]
    assert fixed["components"]["schemas"]["Reply"]["properties"]["x"] == {"type": "string"}
    assert fixed["paths"]["/r"]["post"]["responses"]["200"] == {"$ref": "#/components/schemas/ReplyIODescriptor"}


def test_an_api_without_arguments_documents_a_body_without_fields():
    # /model_info: the fuzzer read BentoML's open object as "any fields", sent {"": 10**19}, and the edge's
    # integer limit refused it. The document now says what the route reads: nothing.
    spec = {
        "openapi": "3.0.2",
        "paths": {
            "/model_info": {
                "post": {
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"type": "object", "title": "Input", "properties": {}}}
                        }
                    },
                    "responses": {},
                }
            },
            "/similar_items": SPEC["paths"]["/similar_items"],
        },
    }
    fixed = conform(spec, {"/model_info", "/similar_items"})
    body = fixed["paths"]["/model_info"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    other = fixed["paths"]["/similar_items"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "additionalProperties" not in other  # a schema with fields (or none given) is left as it is
