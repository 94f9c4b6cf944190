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


def _q(
    name: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


_ID = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "string"}}
_MODE = {"type": "string", "enum": ["unsupervised", "supervised"]}
_K = _q("k", {"type": "integer", "minimum": 1, "maximum": 50}, "how many")
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_NUM = {"type": "number"}
_SIDES = {k: _NUM for k in ("left", "top", "right", "bottom")}
_BOX4: dict[str, Any] = {"type": "object", "required": list(_SIDES), "properties": _SIDES}
_HITS = {"type": "array", "items": _ref("Hit")}
_TRIPLET_IDS = {k: {"type": "string"} for k in ("reference", "positive", "negative")}

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
            **_SIDES,
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
                    **_SIDES,
                    "version": {"type": "integer"},
                },
            },
            "detection": {
                "nullable": True,
                "type": "object",
                "properties": {
                    **_SIDES,
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
            **_TRIPLET_IDS,
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
}


def _neighbours_of_image(summary: str, mode_description: str, list_key: str) -> dict[str, Any]:
    """A GET by image id that answers ``{id, mode, <list_key>: [Hit]}`` from an index."""
    return {
        "get": {
            "summary": summary,
            "parameters": [_ID, _q("mode", _MODE, mode_description), _K],
            "responses": {
                "200": _json(_object(id={"type": "string"}, mode=_MODE, **{list_key: _HITS})),
                "404": _err("unknown id or no index"),
            },
        }
    }


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI 3.0 document; paths are relative to the server root."""
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
                        _object(
                            total={"type": "integer"},
                            offset={"type": "integer"},
                            limit={"type": "integer"},
                            images={"type": "array", "items": _ref("ImageItem")},
                        )
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
                    "403": _err("the file is a link to outside the images folder"),
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
                    "403": _err("the file is a link to outside the images folder"),
                    "404": _err("unknown id"),
                },
            }
        },
        "/api/images/{image_id}/similar": _neighbours_of_image(
            "Precomputed nearest catalog images", "which index", "hits"
        ),
        "/api/search": {
            "post": {
                "summary": "Search by an uploaded photo (locates the product first)",
                "parameters": [_q("mode", _MODE, "which index"), _K],
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
                        _object(
                            width={"type": "integer"},
                            height={"type": "integer"},
                            box=_BOX4,
                            probability=_NUM,
                            fallback={"type": "boolean"},
                            mode=_MODE,
                            hits=_HITS,
                        )
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
                    "200": _json(_object(triplets={"type": "array", "items": _ref("Triplet")}))
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
                                "properties": _TRIPLET_IDS,
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
                "responses": {
                    "204": {"description": "deleted"},
                    "400": _err("the id is not a whole number from 1 to 2^63 - 1"),
                    "404": _err("unknown id"),
                },
            }
        },
        "/api/candidates/{image_id}": _neighbours_of_image(
            "Neighbours of a reference not yet judged in a stored triplet",
            "preferred index (falls back to unsupervised)",
            "candidates",
        ),
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
