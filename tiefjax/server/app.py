"""The Starlette app: the JSON API under ``/api`` (docs/api.md) and the site at ``/``.

The server only wires existing functions to HTTP: the :class:`~tiefjax.store.Store` for images,
boxes and triplets, the :class:`~tiefjax.search.Searcher` for neighbours and upload search.

- Similar-by-id answers from the neighbours precomputed at index time: a lookup, no search, so
  it runs directly on the event loop.
- Upload searches decode in a worker thread and go through a :class:`MicroBatcher` into one
  ``Searcher.search_many`` call per batch, in the one search thread; JAX never runs on the loop.
  An :class:`~tiefjax.server.uploads.UploadGate` bounds how many are in at once and how long
  each may take (503 with ``Retry-After`` beyond either). Uploads are costed from their header:
  heavy ones decode in a thread of their own, and batches take the cheapest first, up to
  ``batch_max`` photos' worth, so normal photos are not held behind a queue of heavy ones.
- Store calls run in the thread pool (one shared, thread-safe connection).
- The index is re-checked every ``reload_check_s`` seconds in the search thread, so a rebuilt
  index is picked up without a restart.
- Every error is ``{"error": {"code", "message"}}`` with its 4xx status; unexpected exceptions
  are logged here and answered with a plain 500 — no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tiefjax import history, triplet_marks
from tiefjax.errors import InvalidInput, NotFound, TiefjaxError
from tiefjax.gallery_query import CatalogQuery
from tiefjax.hit_members import BOX_KEYS, hit_members
from tiefjax.server.batching import MicroBatcher
from tiefjax.server.config import ServerConfig
from tiefjax.server.headers import SecurityHeaders
from tiefjax.server.json_response import JSONResponse, dumps
from tiefjax.server.openapi import openapi_schema
from tiefjax.server.review import build_review_routes
from tiefjax.server.site import find_site_dir
from tiefjax.server.thumbs import image_path, thumbnail
from tiefjax.server.uploads import (
    UploadGate,
    decode_upload,
    inspect_upload,
    read_upload,
    sniff,
)
from tiefjax.store import BoxConflict, CatalogItem, Store
from tiefjax.validate import BadRequest, check_id, loads_json, parse_int, shown
from tiefjax.workspace import Workspace

if TYPE_CHECKING:  # the search module (and JAX) load only once an index is used
    from PIL import Image

    from tiefjax.search import PreparedQuery

log = logging.getLogger("tiefjax.server")

MODES = ("unsupervised", "supervised")
PAGE_LIMIT_MAX = 200
#: Images one bulk "accept detections" request may list (a gallery page at most).
ACCEPT_MAX = PAGE_LIMIT_MAX
SIMILAR_K_MAX = 50
JSON_BODY_MAX = 64 * 1024
#: Serialised similar-by-id answers kept (keyed by index build, id, mode, k; the least
#: recently asked goes first when full).
SIMILAR_CACHE_MAX = 20_000
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal",
    503: "unavailable",
}


class Unauthorized(TiefjaxError):
    http_status = 401
    code = "unauthorized"


# -- JSON helpers -----------------------------------------------------------------------------
def error_response(status: int, message: str, code: str | None = None, **extra: Any) -> Response:
    body = {"error": {"code": code or CODES.get(status, "error"), "message": message}, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _error_of(err: TiefjaxError) -> Response:
    response = error_response(err.http_status, str(err), getattr(err, "code", None))
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _num(value: float | None) -> float | None:
    """A JSON-safe float: None for None, NaN and infinities."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def box_coords(box: Any) -> dict[str, float]:
    """{left, top, right, bottom} from a store Box or a 4-sequence."""
    values = (box.left, box.top, box.right, box.bottom) if hasattr(box, "left") else box
    return dict(zip(BOX_KEYS, map(float, values), strict=True))


def stored_box_json(stored: Any) -> dict[str, Any] | None:
    if stored is None:
        return None
    return {"image_id": stored.image_id, **box_coords(stored.box), "version": stored.version}


def image_item(rec: Any, stored: Any, detection: Any) -> dict[str, Any]:
    box = None if stored is None else {**box_coords(stored.box), "version": stored.version}
    det = None
    if detection is not None:
        det = {
            **box_coords(detection.box),
            "score": _num(detection.score),
            "fallback": bool(detection.fallback),
        }
    return {"id": rec.id, "width": rec.width, "height": rec.height, "box": box, "detection": det}


def catalog_item_json(item: CatalogItem) -> dict[str, Any]:
    return image_item(item.image, item.box, item.detection)


def hits_json(hits: Any, searcher: Any = None) -> list[dict[str, Any]]:
    """Hits as JSON, each with the box its image was indexed with and where that box came from
    (``annotation``, ``detection`` or ``whole``), so a result can show why it matched; both
    None when ``searcher`` does not say (or no longer indexes the image)."""
    members_of = getattr(searcher, "indexed_json", None)  # a Searcher; stand-ins may not say
    members = [None] * len(hits) if members_of is None else members_of(hits)
    return [
        {"score": _num(h.score), **orjson.loads(b"{%b}" % (m or hit_members(h.id, None, None)))}
        for h, m in zip(hits, members, strict=True)
    ]


def similar_body(searcher: Any, image_id: str, k: int, mode: str) -> bytes:
    """GET /api/images/{id}/similar's answer: the precomputed neighbours' scores joined to their
    rows' pre-rendered JSON (:func:`hits_json`'s values, rendered without a dict per hit)."""
    scores, members = searcher.neighbour_members(image_id, k, mode)
    hits = b",".join(  # orjson writes NaN and infinities as null, as _num makes them
        b'{"score":%b,%b}' % (dumps(float(s)), m) for s, m in zip(scores, members, strict=True)
    )
    return b'{"id":%b,"mode":%b,"hits":[%b]}' % (dumps(image_id), dumps(mode), hits)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    return default if raw is None else parse_int(raw, name, low, high)


def _mode_param(request: Request, default: str) -> str:
    mode = request.query_params.get("mode", default)
    if mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


async def _json_body(request: Request, fields: tuple[str, ...], hint: str) -> dict[str, Any]:
    """The JSON object of the body with exactly ``fields`` (else 400 naming them and ``hint``)."""
    body = await _json_document(request)
    missing = [k for k in fields if k not in body]
    unknown = sorted(k for k in body if k not in fields)
    if missing or unknown:
        problems = [f"needs {', '.join(missing)}" if missing else ""]
        problems.append(f"has unknown field(s) {', '.join(map(shown, unknown))}" if unknown else "")
        raise BadRequest(
            f"the body {' and '.join(p for p in problems if p)}; send "
            f"{{{', '.join(fields)}}} {hint}"
        )
    return body


async def _json_document(request: Request) -> dict[str, Any]:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > JSON_BODY_MAX:
            raise BadRequest(f"the JSON body is larger than {JSON_BODY_MAX // 1024} KB")
        chunks.append(chunk)
    body = loads_json(b"".join(chunks) or b"null")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def api(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Turn every exception of an endpoint into a JSON error; log the unexpected ones."""

    @functools.wraps(fn)
    async def endpoint(request: Request) -> Response:
        try:
            if "image_id" in request.path_params:
                check_id(request.path_params["image_id"])
            return await fn(request)
        except ClientDisconnect:  # gone (or cut off for sending too slowly): nobody to answer
            return Response(status_code=400)
        except BoxConflict as err:
            return error_response(409, str(err), current=stored_box_json(err.current))
        except TiefjaxError as err:
            return _error_of(err)
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return error_response(
                500, "the server failed on this request (a bug; details are in the server log)"
            )

    return endpoint


# -- state ------------------------------------------------------------------------------------
class ServerState:
    """What the handlers share: store, searcher (swapped on rebuild), batcher, token."""

    def __init__(self, ws: Workspace, config: ServerConfig, token: str, searcher: Any = None):
        self.ws = ws
        self.config = config
        self.token = token
        self._token_bytes = token.encode()
        self.store = Store(ws.store_path)
        self.searcher = searcher
        # least recently asked first
        self.similar_cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.search_thread = ThreadPoolExecutor(1, thread_name_prefix="tiefjax-search")
        self.decode_pool = ThreadPoolExecutor(2, thread_name_prefix="tiefjax-decode")
        self.heavy_decode_pool = ThreadPoolExecutor(1, thread_name_prefix="tiefjax-decode-heavy")
        self.uploads = UploadGate(config.max_active_uploads, config.upload_deadline_s)
        self.batcher: MicroBatcher[tuple[PreparedQuery, int], Any] = MicroBatcher(
            self._search_batch,
            max_batch=config.batch_max,
            max_wait_ms=config.batch_wait_ms,
            executor=self.search_thread,
        )
        # Elongated uploads (several photos' work and memory each) search one at a time in a
        # lane of their own, so a normal upload never waits for one.
        self.costly_search_thread = ThreadPoolExecutor(
            1, thread_name_prefix="tiefjax-search-costly"
        )
        self.costly_batcher: MicroBatcher[tuple[PreparedQuery, int], Any] = MicroBatcher(
            self._search_batch, max_batch=1, max_wait_ms=0, executor=self.costly_search_thread
        )
        self._last_check = time.monotonic()
        self._checking = threading.Lock()
        self._out_of_date: tuple[tuple[Any, ...], str | None] | None = None
        if self.searcher is None:
            self._load_searcher()

    # searcher ------------------------------------------------------------------------------
    def _load_searcher(self) -> None:
        """Load the index if there is one (None until ``tiefjax index`` has run)."""
        from tiefjax.index.config import IndexConfig
        from tiefjax.search import Searcher  # JAX is imported only when an index is used

        try:
            index_config = self.ws.section("index", IndexConfig)
            batch = self.encoder_batch()
            self.searcher = Searcher.load(self.ws, index_config.with_(batch_size=batch))
        except NotFound:
            self.searcher = None

    def _load_if_missing(self) -> None:
        if self.searcher is None:  # an earlier request may have loaded it meanwhile
            self._load_searcher()

    def encoder_batch(self) -> int:
        """Encoder batch size for upload searches (see ServerConfig.encoder_batch)."""
        return self.config.encoder_batch or max(1, self.config.batch_max)

    def _reload(self) -> None:
        try:
            if self.searcher is None:
                self._load_searcher()
            elif self.searcher.reload_if_changed():
                self.similar_cache.clear()
                log.info("loaded the rebuilt index")
        except Exception:
            log.exception("checking for a rebuilt index failed; keeping the current one")
        finally:
            self._checking.release()

    def maybe_reload(self) -> None:
        """Every ``reload_check_s``, check for a rebuilt index in the search thread."""
        now = time.monotonic()
        if now - self._last_check < self.config.reload_check_s:
            return
        if not self._checking.acquire(blocking=False):
            return
        self._last_check = now
        try:
            self.search_thread.submit(self._reload)
        except RuntimeError:  # shutting down
            self._checking.release()

    async def current_searcher(self) -> Any:
        """The searcher; while there is none, first look for an index built since (in the search
        thread, waited for): a page loaded right after ``tiefjax index`` must find it."""
        if self.searcher is None:
            await asyncio.wrap_future(self.search_thread.submit(self._load_if_missing))
        else:
            self.maybe_reload()
        return self.searcher

    async def require_searcher(self) -> Any:
        searcher = await self.current_searcher()
        if searcher is None:
            raise NotFound(
                "there is no search index yet; build one with: tiefjax index "
                f"{self.ws.root} (the server picks it up by itself)"
            )
        return searcher

    def _search_batch(self, mode: Hashable, items: list[tuple[PreparedQuery, int]]) -> list[Any]:
        """In the search thread: one device call for a batch of uploads of the same mode (the
        batcher's key)."""
        searcher = self.searcher
        if searcher is None:
            raise NotFound("the search index went away; rebuild it with tiefjax index")
        k = max(k for _, k in items)
        queries = [query for query, _ in items]
        results = searcher.search_many(queries, k=k, mode=mode, errors="return")
        return list(results)

    def index_stats(self, searcher: Any) -> dict[str, Any] | None:
        """``index`` of /api/stats."""
        return index_summary(searcher, lambda info: self._catalog_changes(searcher, info))

    def _catalog_changes(self, searcher: Any, info: dict[str, Any]) -> str | None:
        """:func:`catalog_changes`, kept while the build and the catalog stand: comparing the
        index with the catalog reads every id (0.7 s at 100k images)."""
        key = (searcher, info.get("path"), info.get("built_at"), self.store.catalog_version())
        if self._out_of_date is None or self._out_of_date[0] != key:
            ids = self.store.image_ids()
            self._out_of_date = (key, catalog_changes(searcher, info, ids, self.ws.root))
        return self._out_of_date[1]

    # auth ----------------------------------------------------------------------------------
    async def annotator(self, request: Request) -> str:
        """Who sends this write: the name of its bearer token (the server's own token, or an
        annotator's from ``tiefjax annotators``); Unauthorized without a valid one."""
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        given = given.strip()
        if scheme.lower() == "bearer" and given:
            if hmac.compare_digest(given.encode(), self._token_bytes):
                return self.config.token_annotator
            name = await run_in_threadpool(self.store.annotator_of, given)
            if name is not None:
                return name
        raise Unauthorized(
            "this change needs a token: send 'Authorization: Bearer <token>' (the server's "
            "token is printed by tiefjax serve or set with --token / TIEFJAX_TOKEN; "
            "tiefjax annotators WS --add NAME makes one per annotator)"
            if not header
            else "the token is wrong or was revoked; use the one printed by tiefjax serve or "
            "one made by tiefjax annotators WS --add NAME"
        )

    def close(self) -> None:
        self.batcher.close()
        self.costly_batcher.close()
        self.search_thread.shutdown(wait=False, cancel_futures=True)
        self.costly_search_thread.shutdown(wait=False, cancel_futures=True)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.heavy_decode_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()


# -- endpoints --------------------------------------------------------------------------------
def build_routes(state: ServerState) -> list[Route]:
    cfg = state.config
    store = state.store

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> Response:
        searcher = await state.current_searcher()
        counts, index = await run_in_threadpool(  # info stats files: off the loop
            lambda: (store.stats(), state.index_stats(searcher))
        )
        return JSONResponse({**counts, "index": index})

    async def images(request: Request) -> Response:
        offset = _int_param(request, "offset", 0, 0, 2**62)
        limit = _int_param(request, "limit", 48, 1, PAGE_LIMIT_MAX)
        after = request.query_params.get("after")
        if after is not None:
            check_id(after, "after")
        query = CatalogQuery.from_params(request.query_params)
        page = await run_in_threadpool(store.catalog_page, after or "", offset, limit, query)
        return JSONResponse(
            {
                "total": page.total,
                "offset": offset,
                "limit": limit,
                "next": page.next_after,
                "images": [catalog_item_json(item) for item in page.items],
            }
        )

    async def image(request: Request) -> Response:
        item = await run_in_threadpool(store.catalog_item, request.path_params["image_id"])
        return JSONResponse(catalog_item_json(item))

    async def image_file(request: Request) -> Response:
        image_id = request.path_params["image_id"]

        def find() -> tuple[Path, str]:
            path = image_path(state.ws, store.get_image(image_id))
            with path.open("rb") as f:
                kind = sniff(f.read(16)) or "octet-stream"
            return path, ("application/octet-stream" if kind == "octet-stream" else f"image/{kind}")

        path, media = await run_in_threadpool(find)
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    async def thumb(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        default = 256 if 256 in cfg.thumb_sizes else cfg.thumb_sizes[0]
        size = _int_param(request, "size", default, 1, max(cfg.thumb_sizes))
        if size not in cfg.thumb_sizes:
            raise BadRequest(
                f"size must be one of {', '.join(map(str, cfg.thumb_sizes))}, got {size}"
            )
        path = await run_in_threadpool(lambda: thumbnail(state.ws, store.get_image(image_id), size))
        return FileResponse(
            path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"}
        )

    async def similar(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        mode = _mode_param(request, "unsupervised")
        k = _int_param(request, "k", 10, 1, SIMILAR_K_MAX)
        searcher = await state.require_searcher()
        key = (getattr(searcher, "built_at", None), image_id, mode, k)
        body = state.similar_cache.get(key)
        if body is not None:
            state.similar_cache.move_to_end(key)
        else:
            body = similar_body(searcher, image_id, k, mode)  # precomputed: a lookup, on the loop
            if len(state.similar_cache) >= SIMILAR_CACHE_MAX:
                state.similar_cache.popitem(last=False)  # the least recently asked
            state.similar_cache[key] = body
        return Response(body, media_type="application/json")

    async def search(request: Request) -> Response:
        mode = _mode_param(request, "unsupervised")
        k = _int_param(request, "k", 10, 1, SIMILAR_K_MAX)
        searcher = await state.require_searcher()
        if mode not in modes_of(searcher):
            raise NotFound(
                f"there is no {mode} index; train the ranking net (tiefjax train "
                f"{state.ws.root} ranking), run tiefjax index {state.ws.root}, or search "
                "with mode=unsupervised"
            )
        async with state.uploads.slot() as slot:  # 503 at once when too many are in
            data = await slot.wait(read_upload(request, "image", cfg.max_upload_bytes))
            limits = (cfg.max_upload_pixels, searcher.decode_short_side, cfg.max_upload_aspect)
            size = inspect_upload(data, *limits)  # the header only: 413/415/422 before decoding

            def decode() -> tuple[Image.Image, tuple[float, float]]:  # reads [locate] once
                return decode_upload(data, *limits)

            # small pools, so decoding cannot starve the search; heavy uploads wait for their own
            pool = state.heavy_decode_pool if size.heavy() else state.decode_pool
            img, scale = await slot.run(pool, decode)
            from tiefjax.search import PreparedQuery  # loaded with the searcher, JAX and all

            query = PreparedQuery("", None, img, scale, source=data)
            lane = state.costly_batcher if size.costly() else state.batcher
            submitted = lane.submit((query, k), key=mode, cost=size.cost())
            result = await slot.wait(submitted)
        return JSONResponse(
            {
                "width": round(img.width * scale[0]),  # the upload's own pixels, as the box
                "height": round(img.height * scale[1]),
                "box": box_coords(result.box),
                "probability": _num(result.probability),
                # no confident detection, or no locator trained: the whole photo was used
                "fallback": bool(result.fallback) or getattr(result, "box_source", None) == "whole",
                "mode": mode,
                # the copy check: the catalog photo this upload is a copy of (listed first)
                "copy_of": result.copy_of,
                "copy_score": _num(result.copy_score),
                "hits": hits_json(result.hits[:k], searcher),
            }
        )

    async def get_box(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        stored = await run_in_threadpool(store.get_box, image_id)
        if stored is None:
            raise NotFound(f"image {image_id} has no box yet; draw one in the box editor")
        return JSONResponse(stored_box_json(stored))

    async def put_box(request: Request) -> Response:
        by = await state.annotator(request)
        image_id = request.path_params["image_id"]
        body = await _json_body(
            request,
            ("left", "top", "right", "bottom", "version"),
            "with the version you loaded (0 when the image had no box)",
        )
        version = _whole_number(body["version"], "version")
        coords = [body[k] for k in ("left", "top", "right", "bottom")]
        stored = await run_in_threadpool(
            functools.partial(store.put_box, by=by), image_id, coords, version
        )
        return JSONResponse(stored_box_json(stored))

    async def delete_box(request: Request) -> Response:
        by = await state.annotator(request)
        image_id = request.path_params["image_id"]
        raw = request.query_params.get("version")
        if raw is None:
            raise BadRequest(
                "add ?version=N with the version of the box you are deleting (from GET .../box)"
            )
        version = parse_int(raw, "version")
        await run_in_threadpool(functools.partial(store.delete_box, by=by), image_id, version)
        return Response(status_code=204)

    async def list_triplets(request: Request) -> Response:
        given = request.query_params.get("reference")
        reference = None if given is None else check_id(given, "reference")

        def rows() -> list[dict[str, Any]]:
            if reference is not None:
                store.get_image(reference)  # unknown reference -> 404, not an empty list
            return [_triplet_json(t) for t in store.list_triplets(reference)]

        return JSONResponse({"triplets": await run_in_threadpool(rows)})

    async def add_triplet(request: Request) -> Response:
        by = await state.annotator(request)
        fields = ("reference", "positive", "negative")
        body = await _json_body(request, fields, "(three image ids)")
        ids = [check_id(body[k], k) for k in fields]
        triplet = await run_in_threadpool(functools.partial(store.add_triplet, by=by), *ids)
        return JSONResponse(_triplet_json(triplet), status_code=201)

    async def add_marked_triplets(request: Request) -> Response:
        by = await state.annotator(request)
        fields = ("reference", "same", "more", "less")
        body = await _json_body(request, fields, "(a reference id and three lists of ids)")
        reference = check_id(body["reference"], "reference")
        marks = {k: _id_list(body[k], k) for k in fields[1:]}
        triplets = triplet_marks.expand(reference, **marks)
        added, existing = await run_in_threadpool(
            functools.partial(store.add_triplets, by=by), triplets
        )
        return JSONResponse(
            {"added": [_triplet_json(t) for t in added], "existing": existing}, status_code=201
        )

    async def changes(request: Request) -> Response:
        given = {k: request.query_params.get(k) for k in ("image", "annotator")}
        image = None if given["image"] is None else check_id(given["image"], "image")
        before = request.query_params.get("before")
        limit = _int_param(request, "limit", 50, 1, history.PAGE_MAX)
        page, next_before = await run_in_threadpool(
            store.changes,
            image,
            given["annotator"],
            None if before is None else parse_int(before, "before", 1),
            limit,
        )
        return JSONResponse({"items": [c.to_json() for c in page], "next": next_before})

    async def delete_triplets(request: Request) -> Response:
        by = await state.annotator(request)
        body = await _json_body(request, ("ids",), '(e.g. {"ids": [3, 4]}: triplet ids)')
        most = triplet_marks.MAX_TRIPLETS
        if not isinstance(body["ids"], list) or not 1 <= len(body["ids"]) <= most:
            raise BadRequest(f"ids must be a list of 1 to {most} triplet ids")
        ids = [_whole_number(tid, "each of ids", 1) for tid in body["ids"]]
        deleted = await run_in_threadpool(functools.partial(store.delete_triplets, by=by), ids)
        return JSONResponse({"deleted": deleted})

    async def delete_triplet(request: Request) -> Response:
        by = await state.annotator(request)
        tid = parse_int(request.path_params["tid"], "the triplet id", 1)
        await run_in_threadpool(functools.partial(store.delete_triplet, by=by), tid)
        return Response(status_code=204)

    async def candidates(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        mode = _mode_param(request, "supervised")
        k = _int_param(request, "k", 24, 1, SIMILAR_K_MAX)
        searcher = await state.require_searcher()
        if mode not in modes_of(searcher):
            mode = "unsupervised"

        def judged() -> set[str]:
            store.get_image(image_id)
            done: set[str] = set()
            for t in store.list_triplets(image_id):
                done.update((t.positive, t.negative))
            return done

        skip = await run_in_threadpool(judged)
        hits = searcher.neighbours(image_id, SIMILAR_K_MAX, mode)
        fresh = [h for h in hits if h.id not in skip and h.id != image_id][:k]
        candidates = hits_json(fresh, searcher)
        return JSONResponse({"id": image_id, "mode": mode, "candidates": candidates})

    async def accept_detections(request: Request) -> Response:
        by = await state.annotator(request)
        body = await _json_body(
            request,
            ("images", "overwrite"),
            'e.g. {"images": [{"id": "a", "version": 0}], "overwrite": false}, with the box '
            "version you loaded (0 for none)",
        )
        seen = _seen_versions(body["images"])
        if not isinstance(body["overwrite"], bool):
            raise BadRequest(f"overwrite must be true or false, got {shown(body['overwrite'])}")
        done = await run_in_threadpool(
            functools.partial(store.accept_detections, by=by), seen, body["overwrite"]
        )
        return JSONResponse(
            {
                "saved": [stored_box_json(b) for b in done.saved],
                "skipped": [{"id": i, "reason": why} for i, why in done.skipped],
            }
        )

    async def auth_check(request: Request) -> Response:
        return JSONResponse({"annotator": await state.annotator(request)})

    schema = openapi_schema()

    async def openapi(request: Request) -> Response:
        return JSONResponse(schema)

    def route(path: str, fn: Callable[..., Any], methods: list[str]) -> Route:
        return Route(path, api(fn), methods=methods)

    return [  # similar first: the hot path matches on the first try
        route("/images/{image_id}/similar", similar, ["GET"]),
        route("/health", health, ["GET"]),
        route("/stats", stats, ["GET"]),
        route("/openapi.json", openapi, ["GET"]),
        route("/images", images, ["GET"]),
        route("/images/{image_id}", image, ["GET"]),
        route("/images/{image_id}/file", image_file, ["GET"]),
        route("/images/{image_id}/thumb", thumb, ["GET"]),
        route("/images/{image_id}/box", get_box, ["GET"]),
        route("/images/{image_id}/box", put_box, ["PUT"]),
        route("/images/{image_id}/box", delete_box, ["DELETE"]),
        route("/search", search, ["POST"]),
        route("/triplets", list_triplets, ["GET"]),
        route("/triplets", add_triplet, ["POST"]),
        route("/triplets/marks", add_marked_triplets, ["POST"]),
        route("/triplets/delete", delete_triplets, ["POST"]),
        route("/triplets/{tid}", delete_triplet, ["DELETE"]),
        route("/history", changes, ["GET"]),
        route("/candidates/{image_id}", candidates, ["GET"]),
        route("/auth/check", auth_check, ["POST"]),
        route("/boxes/accept-detections", accept_detections, ["POST"]),
        *(route(path, fn, ["GET"]) for path, fn in build_review_routes(state, modes_of)),
    ]


def modes_of(searcher: Any) -> list[str]:
    """The search modes an index offers, unsupervised first."""
    modes = getattr(searcher, "modes", None)
    if modes is None:
        info = getattr(searcher, "info", None) or {}
        modes = info.get("modes") if isinstance(info, dict) else None
    return [m for m in MODES if m in modes] if modes else ["unsupervised"]


def index_summary(
    searcher: Any, changes: Callable[[dict[str, Any]], str | None] | None = None
) -> dict[str, Any] | None:
    """``index`` of /api/stats: when it was built, size, measured recall@10, modes, staleness
    (also ``changes(info)`` when given: why the index no longer covers the catalog, or None;
    see :func:`catalog_changes`)."""
    if searcher is None:
        return None
    info = dict(getattr(searcher, "info", None) or {})
    built_at = getattr(searcher, "built_at", None) or info.get("built_at")
    size = info.get("images", info.get("size"))
    if size is None and getattr(searcher, "ids", None) is not None:
        size = len(searcher.ids)
    recall = info.get("recall_at_10")
    per_mode = info.get("modes")
    if recall is None and isinstance(per_mode, dict):
        first = per_mode.get("unsupervised") or next(iter(per_mode.values()), None)
        recall = first.get("recall_at_10") if isinstance(first, dict) else None
    reasons = [info.get("stale")]
    if changes is not None:
        reasons.append(changes(info))
    return {
        "built_at": _iso(built_at),
        "age_s": _age_s(built_at),
        "size": size,
        "recall_at_10": None if recall is None else _num(recall),
        "modes": modes_of(searcher),
        "stale": "; ".join(r for r in reasons if r) or None,
        "warnings": [str(w) for w in info.get("warnings") or []],
    }


def catalog_changes(
    searcher: Any, info: dict[str, Any], catalog_ids: list[str], root: Path | None
) -> str | None:
    """Why the index no longer covers the catalog (images added or removed since it was built;
    photos the build had to skip do not count), or None."""
    indexed = getattr(searcher, "ids", None)
    if indexed is None:
        return None
    skipped = {e.get("id") for e in info.get("errors") or () if isinstance(e, dict)}
    catalog, in_index = set(catalog_ids), set(indexed)
    missing, removed = len(catalog - in_index - skipped), len(in_index - catalog)
    changes = [
        f"{missing} of the {len(catalog)} catalogued images are not in it" if missing else "",
        f"{removed} images in it were removed from the catalog" if removed else "",
    ]
    if not missing and not removed:
        return None
    return (
        f"the index is out of date: {' and '.join(c for c in changes if c)}; rebuild it with "
        f"tiefjax index {root or 'WORKSPACE'}"
    )


def _whole_number(value: Any, name: str, low: int = 0) -> int:
    """A box version or triplet id from JSON: a whole number >= ``low`` (JSON 3.0 is the number
    3), else 400."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadRequest(f"{name} must be a whole number >= {low}, got {shown(value)}")
    return value


def _seen_versions(images: Any) -> dict[str, int]:
    """``{id: version}`` from a bulk request's ``[{"id", "version"}]`` (else BadRequest)."""
    if not isinstance(images, list) or not 1 <= len(images) <= ACCEPT_MAX:
        raise BadRequest(f"images must be a list of 1 to {ACCEPT_MAX} {{id, version}} objects")
    seen: dict[str, int] = {}
    for item in images:
        if not isinstance(item, dict) or set(item) != {"id", "version"}:
            raise BadRequest(f"each of images must be {{id, version}}, got {shown(item)}")
        image_id = check_id(item["id"], "id")
        version = _whole_number(item["version"], f"version of {image_id}")
        if image_id in seen:
            raise InvalidInput(f"{image_id} is listed twice in images; list each image once")
        seen[image_id] = version
    return seen


def _id_list(value: Any, name: str) -> list[str]:
    """A JSON list of image ids (else BadRequest)."""
    if not isinstance(value, list) or len(value) > triplet_marks.MAX_MARKS:
        raise BadRequest(f"{name} must be a list of at most {triplet_marks.MAX_MARKS} image ids")
    return [check_id(v, f"an id in {name}") for v in value]


def _triplet_json(t: Any) -> dict[str, Any]:
    return {
        "id": t.id,
        "reference": t.reference,
        "positive": t.positive,
        "negative": t.negative,
        "created_at": t.created_at,
    }


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _iso(value: Any) -> str | None:
    ts = _timestamp(value)
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _age_s(value: Any) -> float | None:
    ts = _timestamp(value)
    return None if ts is None else round(max(0.0, time.time() - ts), 1)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        where = "API endpoint" if request.url.path.startswith("/api") else "page or file"
        message = f"no {where} at {request.url.path}; see /api/openapi.json for the API"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
    else:
        message = exc.detail if isinstance(exc.detail, str) else "the request failed"
    response = error_response(exc.status_code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "the server failed on this request (details are in its log)")


def resolve_token(token: str | None, config: ServerConfig) -> tuple[str, bool]:
    """The write token and whether it was generated: argument > TIEFJAX_TOKEN > config > new."""
    for candidate in (token, os.environ.get("TIEFJAX_TOKEN"), config.token):
        if candidate:
            return candidate, False
    return secrets.token_urlsafe(24), True


def create_app(
    ws: Workspace | str | os.PathLike[str],
    token: str | None = None,
    *,
    config: ServerConfig | None = None,
    searcher: Any = None,
) -> Starlette:
    """The server app for workspace ``ws``. ``app.state.token`` is the token writes need.

    ``searcher`` lets a caller hand in an already loaded :class:`~tiefjax.search.Searcher`;
    otherwise the index is loaded when present and picked up later when built.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    ws.require()
    config = config or ws.section("server", ServerConfig)
    history.check_name(config.token_annotator, "[server] token_annotator", reserved=False)
    token, generated = resolve_token(token, config)
    state = ServerState(ws, config, token, searcher)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        yield
        state.close()

    routes: list[Any] = [Mount("/api", routes=build_routes(state))]
    site = find_site_dir()
    if site is not None:
        routes.append(Mount("/", app=StaticFiles(directory=site, html=True), name="site"))
    else:
        log.warning("the site folder was not found; serving the API only")
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.tiefjax = state
    app.state.token = token
    app.state.token_generated = generated
    return app
