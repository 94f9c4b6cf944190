"""Untrusted uploads: bounded while streaming, type sniffed from bytes, pixels checked first.

Nothing about an upload is trusted: the byte limit is enforced while the body streams in (a
client that lies about or omits ``Content-Length`` is cut off all the same), the type comes from
the file's magic bytes (not its name or declared content type), and the pixel count is read from
the header and checked before anything is decoded, so a decompression bomb never expands. The
upload is kept in memory (or an anonymous temporary file) and never written under its name.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import AsyncGenerator

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
    try:
        return load_rgb_scaled(data, short_side, name="the uploaded image")
    except TiefjaxError:
        raise
    except Exception as err:  # any other decoder failure is still bad data, not a server bug
        raise InvalidInput(
            f"the uploaded {kind.upper()} cannot be decoded ({err.__class__.__name__}); the file "
            "is corrupt or truncated, export it again"
        ) from err
