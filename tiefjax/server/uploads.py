"""Untrusted uploads: bounded while streaming, type sniffed from bytes, pixels checked first.

Nothing about an upload is trusted: the byte limit is enforced while the body streams in (a
client that lies about or omits ``Content-Length`` is cut off all the same), the type comes from
the file's magic bytes (not its name or declared content type), and the pixel count is read from
the header and checked before anything is decoded, so a decompression bomb never expands. The
upload is kept in memory (or an anonymous temporary file) and never written under its name.

:class:`UploadGate` bounds the heavy work uploads bring: at most so many are in the server at
once (read, decoded, queued or searched; more get 503 with ``Retry-After`` before their body is
read), and each is answered within a deadline (else 503): work still queued for it is dropped,
and a decode it no longer waits for keeps its place in the limit until the thread finishes it.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, TypeVar

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from tiefjax.errors import InvalidInput, TiefjaxError
from tiefjax.images import load_rgb_scaled
from tiefjax.validate import BadRequest, parse_int

#: Room for the multipart framing (boundaries, part headers) on top of the file itself.
FORM_OVERHEAD = 64 * 1024


class PayloadTooLarge(TiefjaxError):
    http_status = 413
    code = "payload_too_large"


class ImageTooLarge(TiefjaxError):
    http_status = 413
    code = "image_too_large"


class UnsupportedMediaType(TiefjaxError):
    http_status = 415
    code = "unsupported_media_type"


class Overloaded(TiefjaxError):
    """The server has no room for this upload now; the client may retry after ``retry_after``."""

    http_status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


T = TypeVar("T")


class Size(NamedTuple):
    """An upload's type and pixel size, read from its header."""

    kind: str
    width: int
    height: int

    def cost(self) -> float:
        """Its search's work in photos of 4:3 or squarer (the locator scores the photo resized
        to a fixed shorter side, so an elongated one costs its aspect ratio)."""
        return max(1.0, max(self.width, self.height) / min(self.width, self.height) / (4 / 3))

    def heavy(self) -> bool:
        """Whether decoding it takes long (many pixels, or elongated): such uploads decode in
        a thread of their own, so normal photos never queue behind them."""
        return self.width * self.height > HEAVY_DECODE_PIXELS or self.costly()

    def costly(self) -> bool:
        """Whether its search costs more than :data:`COSTLY_UPLOAD` normal photos: such uploads
        search in a lane of their own, so normal ones never wait for them."""
        return self.cost() > COSTLY_UPLOAD


#: Uploads whose search costs more than this many normal photos are costly (see Size.costly).
COSTLY_UPLOAD = 2.0
#: Uploads with more pixels than this decode in the heavy-upload thread.
HEAVY_DECODE_PIXELS = 16_000_000


class UploadGate:
    """At most ``limit`` uploads in the server at once, each answered within ``deadline_s``."""

    def __init__(self, limit: int, deadline_s: float):
        if limit < 1 or not deadline_s > 0:
            raise InvalidInput(
                f"[server] max_active_uploads must be >= 1 and upload_deadline_s > 0, got "
                f"{limit} and {deadline_s}"
            )
        self.limit = limit
        self.deadline_s = deadline_s
        self.active = 0
        #: How long a client should wait before trying again (seconds, for Retry-After).
        self.retry_after = max(1, math.ceil(deadline_s / 10))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[UploadSlot]:
        """A place for one upload, or :class:`Overloaded` at once when all are taken."""
        if self.active >= self.limit:
            raise Overloaded(
                f"the server is busy with {self.active} upload searches; try again in "
                f"{self.retry_after} s (or raise [server] max_active_uploads)",
                self.retry_after,
            )
        self.active += 1
        slot = UploadSlot(self, time.monotonic() + self.deadline_s)
        try:
            yield slot
        finally:
            if not slot.held_by_thread:
                self.active -= 1

    def _late(self) -> Overloaded:
        return Overloaded(
            f"the search did not finish within {self.deadline_s:g} s because the server is busy; "
            f"try again in {self.retry_after} s (or raise [server] upload_deadline_s)",
            self.retry_after,
        )


class UploadSlot:
    """One admitted upload: waits bounded by its deadline."""

    def __init__(self, gate: UploadGate, deadline: float):
        self.gate = gate
        self.deadline = deadline
        #: The upload left while its thread job still ran: the job frees the place when done.
        self.held_by_thread = False

    def _remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def wait(self, work: Awaitable[T]) -> T:
        """``work`` (e.g. a queued batch search), cancelled and 503 when the deadline passes
        (also when it has passed already: ``wait_for`` then cancels ``work`` cleanly)."""
        try:
            return await asyncio.wait_for(work, self._remaining())
        except TimeoutError:
            raise self.gate._late() from None

    async def run(self, executor: Executor, fn: Callable[[], T]) -> T:
        """``fn()`` in ``executor``; past the deadline the upload gets 503 while the job (which
        cannot be stopped) keeps this upload's place in the limit until it ends."""
        remaining = self._remaining()
        if not remaining:
            raise self.gate._late()
        job = asyncio.wrap_future(executor.submit(fn))
        try:
            return await asyncio.wait_for(asyncio.shield(job), remaining)
        except TimeoutError:
            self.held_by_thread = True
            job.add_done_callback(self._release)
            raise self.gate._late() from None

    def _release(self, job: asyncio.Future[Any]) -> None:
        if not job.cancelled():
            job.exception()  # retrieved, so asyncio does not report an abandoned job's error
        self.gate.active -= 1


def sniff(data: bytes) -> str | None:
    """``"jpeg"``, ``"png"`` or ``"webp"`` from the magic bytes, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


async def read_upload(request: Request, field: str, max_bytes: int) -> bytes:
    """The bytes of the file in multipart field ``field``, refusing bodies over ``max_bytes``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"send the image as multipart/form-data with a file field {field!r} "
            f"(got Content-Type {content_type or 'none'!r})"
        )
    too_big = PayloadTooLarge(
        f"the upload is larger than the {_mb(max_bytes)} allowed; send a smaller image "
        "(or raise [server] max_upload_bytes)"
    )
    limit = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and parse_int(declared, "the Content-Length header") > limit:
        raise too_big

    async def bounded() -> AsyncGenerator[bytes, None]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise too_big
            yield chunk

    parser = MultiPartParser(request.headers, bounded(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise BadRequest(
            f"the multipart body could not be read ({err.message}); send one file field {field!r}"
        ) from err
    try:
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise BadRequest(f"no file in the multipart field {field!r}; attach the image there")
        data = await upload.read(max_bytes + 1)
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise too_big
    if not data:
        raise InvalidInput(f"the file in field {field!r} is empty; attach a JPEG, PNG or WebP")
    return data


def inspect_upload(data: bytes, max_pixels: int, short_side: int, max_aspect: float) -> Size:
    """The upload's type and size from its header, refused (415, 413, 422) before any decode
    by the rules of :func:`decode_upload`."""
    kind = sniff(data)
    if kind is None:
        raise UnsupportedMediaType(
            "the upload is not a JPEG, PNG or WebP image (checked from its content, not its "
            "name); convert it to one of those"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(
            f"the image has too many pixels ({err}); send one of at most {max_pixels:,} pixels"
        ) from err
    except Exception as err:
        raise InvalidInput(
            f"the uploaded {kind.upper()} cannot be read ({err.__class__.__name__}); the file "
            "is corrupt or truncated, export it again"
        ) from err
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height:,} pixels, more than the "
            f"{max_pixels:,} allowed; scale it down (or raise [server] max_upload_pixels)"
        )
    if max(width, height) > max_aspect * min(width, height):
        factor = short_side / min(width, height)
        resized = f"{math.ceil(width * factor):,}x{math.ceil(height * factor):,}"
        raise ImageTooLarge(
            f"the image is {width}x{height}, more elongated than the {max_aspect:g}:1 allowed "
            f"(with its shorter side resized to {short_side} px it would be {resized} pixels); "
            "crop it (or raise [server] max_upload_aspect)"
        )
    return Size(kind, width, height)


def decode_upload(
    data: bytes, max_pixels: int, short_side: int, max_aspect: float
) -> tuple[Image.Image, tuple[float, float]]:
    """Check type, pixel count and shape from the header, then decode to upright RGB (worker
    thread).

    The search resizes the photo so its shorter side is ``short_side`` (up, for a small one):
    ``max_aspect`` (longer side / shorter side) bounds that resized photo at ``short_side`` x
    ``short_side * max_aspect`` pixels, whatever the upload's own size, and ``max_pixels`` the
    decoded one. JPEGs decode only as big as a search needs (shorter side >= ``short_side``, see
    :func:`~tiefjax.images.load_rgb_scaled`); returns the image and its scale to the upload's
    own pixels.
    """
    kind = inspect_upload(data, max_pixels, short_side, max_aspect).kind
    try:
        return load_rgb_scaled(data, short_side, name="the uploaded image")
    except TiefjaxError:
        raise
    except Exception as err:  # any other decoder failure is still bad data, not a server bug
        raise InvalidInput(
            f"the uploaded {kind.upper()} cannot be decoded ({err.__class__.__name__}); the file "
            "is corrupt or truncated, export it again"
        ) from err
