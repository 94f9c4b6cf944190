"""The hand-written OpenAPI 3 schema of the API (served at ``/api/openapi.json``).

Kept next to the routes; ``tests/test_server.py`` checks that every route is listed here.
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _q(name: str, schema: dict[str, Any], description: str, required: bool = False):
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


_ID = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "string"}}
_MODE = {"type": "string", "enum": ["unsupervised", "supervised"]}
_AUTH = [{"bearer": []}]
_NUM = {"type": "number"}
_BOX4 = {
    "type": "object",
    "required": ["left", "top", "right", "bottom"],
    "properties": {k: _NUM for k in ("left", "top", "right", "bottom")},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
            "current": {"oneOf": [_ref("Box"), {"type": "null"}]},
        },
    },
    "Box": {
        "type": "object",
        "properties": {
            "image_id": {"type": "string"},
            **{k: _NUM for k in ("left", "top", "right", "bottom")},
            "version": {"type": "integer"},
        },
    },
    "ImageItem": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "box": {
                "nullable": True,
                "type": "object",
                "properties": {
                    **{k: _NUM for k in ("left", "top", "right", "bottom")},
                    "version": {"type": "integer"},
                },
            },
            "detection": {
                "nullable": True,
                "type": "object",
                "properties": {
                    **{k: _NUM for k in ("left", "top", "right", "bottom")},
                    "score": _NUM,
                    "fallback": {"type": "boolean"},
                },
            },
        },
    },
    "Hit": {"type": "object", "properties": {"id": {"type": "string"}, "score": _NUM}},
    "Triplet": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            **{k: {"type": "string"} for k in ("reference", "positive", "negative")},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
}


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI 3.0 document; paths are relative to the server root."""
    hits = {"type": "array", "items": _ref("Hit")}
    paths: dict[str, Any] = {
        "/api/health": {"get": {"summary": "Liveness", "responses": {"200": _json({})}}},
        "/api/stats": {
            "get": {
                "summary": "Counts and index age",
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/api/images": {
            "get": {
                "summary": "A page of the catalog, sorted by id",
                "parameters": [
                    _q("offset", {"type": "integer", "minimum": 0}, "first image"),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "total": {"type": "integer"},
                                "offset": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "images": {"type": "array", "items": _ref("ImageItem")},
                            },
                        }
                    ),
                    "400": _err("bad offset/limit"),
                },
            }
        },
        "/api/images/{image_id}": {
            "get": {
                "summary": "One image",
                "parameters": [_ID],
                "responses": {"200": _json(_ref("ImageItem")), "404": _err("unknown id")},
            }
        },
        "/api/images/{image_id}/file": {
            "get": {
                "summary": "The original image file",
                "parameters": [_ID],
                "responses": {
                    "200": {"description": "image bytes", "content": {"image/*": {}}},
                    "404": _err("unknown id or missing file"),
                },
            }
        },
        "/api/images/{image_id}/thumb": {
            "get": {
                "summary": "A cached JPEG thumbnail",
                "parameters": [
                    _ID,
                    _q("size", {"type": "integer", "enum": [128, 256, 512]}, "longest side"),
                ],
                "responses": {
                    "200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                    "400": _err("size not allowed"),
                    "404": _err("unknown id"),
                },
            }
        },
        "/api/images/{image_id}/similar": {
            "get": {
                "summary": "Precomputed nearest catalog images",
                "parameters": [
                    _ID,
                    _q("mode", _MODE, "which index"),
                    _q("k", {"type": "integer", "minimum": 1, "maximum": 50}, "how many"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "mode": _MODE,
                                "hits": hits,
                            },
                        }
                    ),
                    "404": _err("unknown id or no index"),
                },
            }
        },
        "/api/search": {
            "post": {
                "summary": "Search by an uploaded photo (locates the product first)",
                "parameters": [
                    _q("mode", _MODE, "which index"),
                    _q("k", {"type": "integer", "minimum": 1, "maximum": 50}, "how many"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {"image": {"type": "string", "format": "binary"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "width": {"type": "integer"},
                                "height": {"type": "integer"},
                                "box": _BOX4,
                                "probability": _NUM,
                                "fallback": {"type": "boolean"},
                                "mode": _MODE,
                                "hits": hits,
                            },
                        }
                    ),
                    "400": _err("bad form"),
                    "413": _err("too many bytes or pixels"),
                    "415": _err("not JPEG/PNG/WebP"),
                    "422": _err("corrupt image"),
                },
            }
        },
        "/api/images/{image_id}/box": {
            "get": {
                "summary": "The annotated box",
                "parameters": [_ID],
                "responses": {"200": _json(_ref("Box")), "404": _err("no box or unknown id")},
            },
            "put": {
                "summary": "Save the box (optimistic concurrency by version)",
                "security": _AUTH,
                "parameters": [_ID],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                **_BOX4,
                                "required": [*_BOX4["required"], "version"],
                                "properties": {
                                    **_BOX4["properties"],
                                    "version": {"type": "integer", "minimum": 0},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("Box")),
                    "401": _err("token"),
                    "404": _err("unknown id"),
                    "409": _err("stale version; body has current"),
                    "422": _err("box outside the image"),
                },
            },
            "delete": {
                "summary": "Delete the box",
                "security": _AUTH,
                "parameters": [
                    _ID,
                    _q("version", {"type": "integer"}, "version being deleted", required=True),
                ],
                "responses": {
                    "204": {"description": "deleted"},
                    "401": _err("token"),
                    "409": _err("stale version"),
                },
            },
        },
        "/api/triplets": {
            "get": {
                "summary": "Stored similarity triplets",
                "parameters": [_q("reference", {"type": "string"}, "only this reference")],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"triplets": {"type": "array", "items": _ref("Triplet")}},
                        }
                    )
                },
            },
            "post": {
                "summary": "Store a triplet (idempotent)",
                "security": _AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["reference", "positive", "negative"],
                                "properties": {
                                    k: {"type": "string"}
                                    for k in ("reference", "positive", "negative")
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(_ref("Triplet"), "stored"),
                    "401": _err("token"),
                    "404": _err("unknown id"),
                    "422": _err("ids not distinct"),
                },
            },
        },
        "/api/triplets/{tid}": {
            "delete": {
                "summary": "Delete a triplet",
                "security": _AUTH,
                "parameters": [
                    {"name": "tid", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {"204": {"description": "deleted"}, "404": _err("unknown id")},
            }
        },
        "/api/candidates/{image_id}": {
            "get": {
                "summary": "Neighbours of a reference not yet judged in a stored triplet",
                "parameters": [
                    _ID,
                    _q("mode", _MODE, "preferred index (falls back to unsupervised)"),
                    _q("k", {"type": "integer", "minimum": 1, "maximum": 50}, "how many"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "mode": _MODE,
                                "candidates": hits,
                            },
                        }
                    ),
                    "404": _err("unknown id or no index"),
                },
            }
        },
        "/api/auth/check": {
            "post": {
                "summary": "Check a token",
                "security": _AUTH,
                "responses": {"204": {"description": "valid"}, "401": _err("invalid")},
            }
        },
        "/api/openapi.json": {
            "get": {"summary": "This schema", "responses": {"200": _json({"type": "object"})}}
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tiefjax",
            "version": "1",
            "description": "Visual product search: catalog, similar images, upload search, "
            "box and similarity annotations. See docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
