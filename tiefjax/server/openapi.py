"""The OpenAPI 3.1 document of the API (served at ``/api/openapi.json``).

Kept next to the routes and written to match what they check and answer: the parameter and body
rules of :mod:`tiefjax.validate` (ids without control characters, whole numbers within int64),
and every status each operation can return. ``tests/test_openapi.py`` validates it with an
OpenAPI validator and runs schemathesis against the app: no server errors, no status or body
the document does not describe.
"""

from __future__ import annotations

from typing import Any

from tiefjax.gallery_query import MATCHES, ORDERS, SORTS, STATES
from tiefjax.history import ACTIONS, PAGE_MAX
from tiefjax.triplet_marks import MAX_MARKS, MAX_TRIPLETS
from tiefjax.validate import INT64_MAX

#: What each error status means wherever it is listed (an operation may say more).
_STATUS = {
    400: "a malformed parameter, path id or JSON body; the message names the rule",
    401: "no bearer token, or a wrong or revoked one",
    403: "the workspace is read-only for the server (the message says how to fix that)",
    404: "an unknown image, triplet or path, or no index yet",
    409: "someone else changed the box first; `current` is the box stored now",
    413: "the upload is over the byte, pixel or aspect-ratio limit",
    415: "the upload is not a JPEG, PNG or WebP (sniffed from its bytes), or not multipart",
    422: "well-formed but invalid: a box outside the image, a corrupt photo, equal triplet ids",
    503: "the store is damaged, its disk is full or it stayed locked by another writer",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int, **described: str) -> dict[str, Any]:
    """Error responses: ``statuses`` with their usual meaning, ``described`` (``s404="..."``)
    with one of their own."""
    codes = {str(s): _STATUS[s] for s in statuses}
    codes.update({key.removeprefix("s"): text for key, text in described.items()})
    return {code: _json(_ref("Error"), text) for code, text in sorted(codes.items())}


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
    """An object with these properties, all of them required."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def _enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _int(low: int, high: int = INT64_MAX) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


#: An image id: non-empty, no control characters (tiefjax.validate.id_problem).
_ID_STRING = {"type": "string", "minLength": 1, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"}
_ID = {"name": "image_id", "in": "path", "required": True, "schema": _ID_STRING}
_MODE = {"type": "string", "enum": ["unsupervised", "supervised"]}
_K = _q("k", _int(1, 50), "how many")
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_SIDES = {k: _NUM for k in ("left", "top", "right", "bottom")}
_HITS = {"type": "array", "items": _ref("Hit")}
_TRIPLET_IDS = {k: _ID_STRING for k in ("reference", "positive", "negative")}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": _object(code={"type": "string"}, message={"type": "string"}),
            "current": {"oneOf": [_ref("Box"), {"type": "null"}]},
        },
    },
    "Box": _object(image_id={"type": "string"}, **_SIDES, version={"type": "integer"}),
    "ImageItem": _object(
        id={"type": "string"},
        width={"type": "integer"},
        height={"type": "integer"},
        box={"oneOf": [_object(**_SIDES, version={"type": "integer"}), {"type": "null"}]},
        detection={
            "oneOf": [
                _object(**_SIDES, score=_NUM_OR_NULL, fallback={"type": "boolean"}),
                {"type": "null"},
            ]
        },
    ),
    "Hit": _object(
        id={"type": "string"},
        score={**_NUM_OR_NULL, "description": "cosine similarity of the two product boxes"},
        box={
            "oneOf": [_object(**_SIDES), {"type": "null"}],
            "description": "the box this image was indexed with (pixels of the image)",
        },
        box_source={
            "enum": ["annotation", "detection", "whole", None],
            "description": "where that box came from (whole: the whole photo); null: unknown",
        },
    ),
    "Triplet": _object(
        id={"type": "integer"},
        **_TRIPLET_IDS,
        created_at={"type": "string", "format": "date-time"},
    ),
    "Change": _object(
        id={"type": "integer", "description": "increasing; the `before` cursor of older pages"},
        at={"type": "string", "format": "date-time"},
        annotator={"type": "string", "description": "the token's name, or the command"},
        action=_enum(ACTIONS),
        image={"type": "string", "description": "the image (a triplet's reference)"},
        detail={
            "type": "object",
            "description": "box.*: version, box and previous ([left, top, right, bottom] or "
            "null); triplet.*: triplet (its id), positive, negative",
        },
    ),
    "BoxReview": _object(
        id={"type": "string"},
        score={"type": "number", "minimum": 0, "maximum": 1},
        reason={
            "type": "string",
            "enum": ["no_window", "near_threshold", "regressors_disagree", "disagrees_with_box"],
        },
        message={"type": "string"},
        detection=_object(**_SIDES, score=_NUM, fallback={"type": "boolean"}),
        box={"oneOf": [_object(**_SIDES), {"type": "null"}]},
        iou=_NUM_OR_NULL,
    ),
    "TripletReview": _object(
        reference={"type": "string"},
        first={"type": "string"},
        second={"type": "string"},
        score={"type": "number", "minimum": 0, "maximum": 1},
        reason={"type": "string", "enum": ["rankings_disagree", "near_tie"]},
        message={"type": "string"},
    ),
    "IndexSummary": _object(
        built_at={"type": ["string", "null"]},
        age_s=_NUM_OR_NULL,
        size={"type": ["integer", "null"]},
        recall_at_10=_NUM_OR_NULL,
        modes={"type": "array", "items": _MODE},
        stale={
            "type": ["string", "null"],
            "description": "why the index should be rebuilt (encoder changed, images added or "
            "removed since the build), or null",
        },
        warnings={
            "type": "array",
            "items": {"type": "string"},
            "description": "measured recall below its target, each naming the setting to change",
        },
    ),
}


def _neighbours_of_image(summary: str, mode_description: str, list_key: str) -> dict[str, Any]:
    """A GET by image id that answers ``{id, mode, <list_key>: [Hit]}`` from an index."""
    return {
        "get": {
            "summary": summary,
            "parameters": [_ID, _q("mode", _MODE, mode_description), _K],
            "responses": {
                "200": _json(_object(id={"type": "string"}, mode=_MODE, **{list_key: _HITS})),
                **_errors(400, 503, s404="unknown id, or no index yet"),
            },
        }
    }


def _id_array(most: int) -> dict[str, Any]:
    return {"type": "array", "maxItems": most, "items": _ID_STRING}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body: exactly the fields of ``schema``."""
    strict = {**schema, "additionalProperties": False}
    return {"required": True, "content": {"application/json": {"schema": strict}}}


_SEARCH_RESULT = _object(
    width={"type": "integer"},
    height={"type": "integer"},
    box=_object(**_SIDES),
    probability=_NUM_OR_NULL,
    fallback={"type": "boolean"},
    mode=_MODE,
    hits=_HITS,
)
_UPLOAD = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "contentMediaType": "image/*"}},
            }
        }
    },
}


#: A review cursor ``SCORE:ID`` (a page's ``next``): a score in [0, 1] as Python writes floats.
_CURSOR = {
    "type": "string",
    "pattern": "^(0|1|0\\.[0-9]+|1\\.0+|[0-9](\\.[0-9]+)?e-0*[1-9][0-9]*)"
    ":[^\\u0000-\\u001f\\u007f-\\u009f]+$",
}


def _review(
    summary: str, item: dict[str, Any], errors: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """A review queue: a page of items, most uncertain first, with keyset paging."""
    page = _object(
        total={"type": "integer", "description": "items queued in all"},
        limit={"type": "integer"},
        next={"type": ["string", "null"], "description": "`after` of the next page, or null"},
        items={"type": "array", "items": item},
        **extra,
    )
    return {
        "get": {
            "summary": summary,
            "parameters": [
                _q("limit", _int(1, 200), "page size (20 when left out)"),
                _q("after", _CURSOR, "continue after this cursor (a page's `next`)"),
            ],
            "responses": {"200": _json(page), **errors},
        }
    }


def _paths() -> dict[str, Any]:
    return {
        "/api/health": {
            "get": {
                "summary": "Liveness",
                "responses": {"200": _json(_object(status={"const": "ok"}))},
            }
        },
        "/api/stats": {
            "get": {
                "summary": "Counts and the index's age, quality and staleness",
                "responses": {
                    "200": _json(
                        _object(
                            images={"type": "integer"},
                            boxes={"type": "integer"},
                            triplets={"type": "integer"},
                            detections={"type": "integer"},
                            index={"oneOf": [_ref("IndexSummary"), {"type": "null"}]},
                        )
                    ),
                    **_errors(503),
                },
            }
        },
        "/api/images": {
            "get": {
                "summary": "A page of the catalog, filtered and sorted (by id unless asked)",
                "parameters": [
                    _q(
                        "after",
                        _ID_STRING,
                        "start after this image (a page's `next`); keyset. Sorted by "
                        "probability or iou, it must be an image with that value (else 422)",
                    ),
                    _q("offset", _int(0, 2**62), "images to skip (after `after` when given)"),
                    _q("limit", _int(1, 200), "page size"),
                    _q(
                        "q",
                        {"type": "string", "maxLength": 200},
                        "only ids containing this text (ASCII letters in any case)",
                    ),
                    _q("match", _enum(MATCHES), "how `q` matches the id (default substring)"),
                    _q(
                        "state",
                        _enum(STATES),
                        "annotated: a box drawn by a person; detected: no box but a located "
                        "product; none: neither (default all)",
                    ),
                    _q(
                        "sort",
                        _enum(SORTS),
                        "id; probability: the locator's foreground probability (located images "
                        "only); iou: overlap of detection and annotated box (images with both)",
                    ),
                    _q("order", _enum(ORDERS), "asc (default) or desc"),
                ],
                "responses": {
                    "200": _json(
                        _object(
                            total={"type": "integer"},
                            offset={"type": "integer"},
                            limit={"type": "integer"},
                            next={"type": ["string", "null"]},
                            images={"type": "array", "items": _ref("ImageItem")},
                        )
                    ),
                    **_errors(400, 503, s422="`after` is not in a probability or iou listing"),
                },
            }
        },
        "/api/images/{image_id}": {
            "get": {
                "summary": "One image",
                "parameters": [_ID],
                "responses": {"200": _json(_ref("ImageItem")), **_errors(400, 404, 503)},
            }
        },
        "/api/images/{image_id}/file": {
            "get": {
                "summary": "The original image file",
                "parameters": [_ID],
                "responses": {
                    "200": {"description": "image bytes", "content": {"image/*": {}}},
                    **_errors(
                        400,
                        503,
                        s403="the file is a link to outside the images folder",
                        s404="unknown id or missing file",
                    ),
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
                    **_errors(
                        400,
                        503,
                        s403="the file is a link to outside the images folder",
                        s404="unknown id or missing file",
                        s422="the photo cannot be decoded",
                    ),
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
                "requestBody": _UPLOAD,
                "responses": {
                    "200": _json(_SEARCH_RESULT),
                    **_errors(
                        400,
                        413,
                        415,
                        s404="no index yet, or none for this mode",
                        s422="the photo is corrupt or empty",
                    ),
                    "503": {
                        **_json(
                            _ref("Error"),
                            "too many uploads are in already, or this one was not answered "
                            "within the deadline",
                        ),
                        "headers": _RETRY_AFTER,
                    },
                },
            }
        },
        "/api/images/{image_id}/box": {
            "get": {
                "summary": "The annotated box",
                "parameters": [_ID],
                "responses": {
                    "200": _json(_ref("Box")),
                    **_errors(400, 503, s404="no box, or unknown id"),
                },
            },
            "put": {
                "summary": "Save the box (optimistic concurrency by version)",
                "security": _AUTH,
                "parameters": [_ID],
                "requestBody": _json_body(
                    _object(**_SIDES, version={**_int(0), "description": "0 = it had no box"})
                ),
                "responses": {
                    "200": _json(_ref("Box")),
                    **_errors(400, 401, 403, 404, 409, 422, 503),
                },
            },
            "delete": {
                "summary": "Delete the box",
                "security": _AUTH,
                "parameters": [_ID, _q("version", _int(0), "version being deleted", True)],
                "responses": {
                    "204": {"description": "deleted"},
                    **_errors(400, 401, 403, 404, 409, 503),
                },
            },
        },
        "/api/triplets": {
            "get": {
                "summary": "Stored similarity triplets",
                "parameters": [_q("reference", _ID_STRING, "only this reference")],
                "responses": {
                    "200": _json(_object(triplets={"type": "array", "items": _ref("Triplet")})),
                    **_errors(400, 503, s404="unknown reference"),
                },
            },
            "post": {
                "summary": "Store a triplet (idempotent)",
                "security": _AUTH,
                "requestBody": _json_body(_object(**_TRIPLET_IDS)),
                "responses": {
                    "201": _json(_ref("Triplet"), "stored"),
                    **_errors(400, 401, 403, 404, 422, 503),
                },
            },
        },
        "/api/triplets/marks": {
            "post": {
                "summary": "Store the triplets that similarity marks expand into (all or none)",
                "description": "Same product > more similar > less similar: every ranked pair "
                "of marks is a triplet for the reference, and each same-product image is a "
                "reference too, closer to the rest of its group than to the other marked images "
                f"(tiefjax.triplet_marks). At most {MAX_TRIPLETS} triplets per request.",
                "security": _AUTH,
                "requestBody": _json_body(
                    _object(
                        reference=_ID_STRING,
                        **{k: _id_array(MAX_MARKS) for k in ("same", "more", "less")},
                    )
                ),
                "responses": {
                    "201": _json(
                        _object(
                            added={"type": "array", "items": _ref("Triplet")},
                            existing={"type": "integer", "description": "stored already"},
                        ),
                        "stored",
                    ),
                    **_errors(
                        400,
                        401,
                        403,
                        404,
                        503,
                        s422="an image marked twice or as the reference, or marks that expand "
                        f"into no triplet or more than {MAX_TRIPLETS}",
                    ),
                },
            }
        },
        "/api/triplets/delete": {
            "post": {
                "summary": "Delete triplets in one transaction (all of them, or none)",
                "security": _AUTH,
                "requestBody": _json_body(
                    _object(
                        ids={
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_TRIPLETS,
                            "items": _int(1),
                        }
                    )
                ),
                "responses": {
                    "200": _json(_object(deleted={"type": "integer"})),
                    **_errors(400, 401, 403, 503, s404="an unknown triplet id: nothing deleted"),
                },
            }
        },
        "/api/history": {
            "get": {
                "summary": "Who changed which box or triplet when, newest first",
                "parameters": [
                    _q("image", _ID_STRING, "only this image (a triplet's reference)"),
                    _q("annotator", {"type": "string"}, "only this annotator"),
                    _q("before", _int(1), "only changes older than this change id"),
                    _q("limit", _int(1, PAGE_MAX), "changes per page (default 50)"),
                ],
                "responses": {
                    "200": _json(
                        _object(
                            items={"type": "array", "items": _ref("Change")},
                            next={
                                "type": ["integer", "null"],
                                "description": "`before` for the next page; null: no more",
                            },
                        )
                    ),
                    **_errors(400, 503),
                },
            }
        },
        "/api/triplets/{tid}": {
            "delete": {
                "summary": "Delete a triplet",
                "security": _AUTH,
                "parameters": [{"name": "tid", "in": "path", "required": True, "schema": _int(1)}],
                "responses": {
                    "204": {"description": "deleted"},
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
        "/api/candidates/{image_id}": _neighbours_of_image(
            "Neighbours of a reference not yet judged in a stored triplet",
            "preferred index (falls back to unsupervised)",
            "candidates",
        ),
        "/api/review/boxes": _review(
            "The box review queue: unannotated photos whose located box is least certain, "
            "and annotated ones whose detection disagrees with the box",
            _ref("BoxReview"),
            _errors(400, 503),
        ),
        "/api/review/triplets": _review(
            "The similarity review queue: references whose supervised and unsupervised "
            "rankings disagree most (or whose nearest neighbours nearly tie), with the pair "
            "to judge",
            _ref("TripletReview"),
            _errors(400, 503, s404="no index yet"),
            reason={"type": "string", "description": "how this build scores (see items)"},
        ),
        "/api/boxes/accept-detections": {
            "post": {
                "summary": "Bulk review: save located boxes as annotated boxes, in one transaction",
                "description": "Without `overwrite`, only images with no box are written (the "
                "others are skipped); with it, every listed image whose box is still the "
                "`version` sent is overwritten, and a changed one (409) or an unknown id (404) "
                "saves nothing. Images without a located product are skipped.",
                "security": _AUTH,
                "requestBody": _json_body(
                    _object(
                        images={
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 200,
                            "uniqueItems": True,
                            "items": {
                                **_object(
                                    id=_ID_STRING,
                                    version={**_int(0), "description": "box version seen, 0: none"},
                                ),
                                "additionalProperties": False,
                            },
                        },
                        overwrite={"type": "boolean"},
                    )
                ),
                "responses": {
                    "200": _json(
                        _object(
                            saved={"type": "array", "items": _ref("Box")},
                            skipped={
                                "type": "array",
                                "items": _object(
                                    id={"type": "string"},
                                    reason={"enum": ["has_box", "no_detection", "no_product"]},
                                ),
                            },
                        )
                    ),
                    **_errors(400, 401, 403, 404, 409, 503, s422="an id listed twice"),
                },
            }
        },
        "/api/auth/check": {
            "post": {
                "summary": "Check a token and say whose it is",
                "security": _AUTH,
                "responses": {
                    "200": _json(_object(annotator={"type": "string"}), "valid"),
                    **_errors(401, 503),
                },
            }
        },
        "/api/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}
        },
    }


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI 3.1 document; paths are relative to the server root."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tiefjax",
            "version": "1",
            "description": "Visual product search: catalog, similar images, upload search, "
            "box and similarity annotations. See docs/api.md.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
