"""Catalog image files and their cached JPEG thumbnails (shared by the server and the export).

Thumbnails are named by the image's content hash under ``ws.cache_dir/thumbs/<size>/``, so ids
never become paths, an edited photo gets a fresh thumbnail, and writes are atomic (a reader sees
a whole file or none).
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

from PIL import Image

from tiefjax.errors import NotFound
from tiefjax.images import load_rgb
from tiefjax.workspace import Workspace, atomic_write_bytes

_HEX64 = re.compile(r"[0-9a-f]{64}")


def image_path(ws: Workspace, rec: Any) -> Path:
    """The file of a registered image, or NotFound saying how to fix a missing one."""
    path = Path(rec.path)
    if not path.is_file():
        raise NotFound(
            f"the file of image {rec.id} ({path}) is missing; put it back or run "
            f"tiefjax init {ws.root} --images DIR again"
        )
    return path


def thumbnail(ws: Workspace, rec: Any, size: int) -> Path:
    """The cached JPEG thumbnail (longest side <= ``size``, never upscaled), made when missing."""
    digest = rec.sha256 if _HEX64.fullmatch(rec.sha256 or "") else None
    if digest is None:
        digest = hashlib.sha256(f"{rec.id}\0{rec.path}".encode()).hexdigest()
    path = ws.cache_dir / "thumbs" / str(int(size)) / f"{digest}.jpg"
    if path.is_file():
        return path
    img = load_rgb(image_path(ws, rec), target_size=(size, size), name=rec.id)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, optimize=True)
    atomic_write_bytes(path, out.getvalue())
    return path
