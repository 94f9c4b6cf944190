"""Catalog image files and their cached JPEG thumbnails (shared by the server and the export).

Thumbnails are named by the image's content hash under ``ws.cache_dir/thumbs/<size>/``, so ids
never become paths, an edited photo gets a fresh thumbnail, and writes are atomic (a reader sees
a whole file or none). A read-only workspace keeps them in a private temporary folder of this
process instead, removed when it exits.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from tiefjax.errors import NotFound, TiefjaxError
from tiefjax.images import link_outside, load_rgb
from tiefjax.workspace import NOT_WRITABLE, Workspace, atomic_write_bytes

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Thumbnails of read-only workspaces: one temporary folder per process, removed at exit.
_private: list[Path] = []


class Forbidden(TiefjaxError):
    http_status = 403
    code = "forbidden"


def image_path(ws: Workspace, rec: Any) -> Path:
    """The file of a registered image with links resolved, checked now (a link may have been
    re-pointed since ``init``): NotFound for a missing file, Forbidden for a link that leads
    out of the images folder (its target is not named: it may be anything on the machine)."""
    path = Path(rec.path)
    if link_outside(path) is not None:
        raise Forbidden(
            f"the file of image {rec.id} is a link to outside the images folder, which is not "
            f"served; copy the photo into the folder and run tiefjax init {ws.root} again"
        )
    target = path.resolve()
    if not target.is_file():
        raise NotFound(
            f"the file of image {rec.id} ({path}) is missing; put it back or run "
            f"tiefjax init {ws.root} --images DIR again"
        )
    return target


def thumbnail(ws: Workspace, rec: Any, size: int) -> Path:
    """The cached JPEG thumbnail (longest side <= ``size``, never upscaled), made when missing."""
    digest = rec.sha256 if _HEX64.fullmatch(rec.sha256 or "") else None
    if digest is None:
        digest = hashlib.sha256(f"{rec.id}\0{rec.path}".encode()).hexdigest()
    name = Path("thumbs", str(int(size)), f"{digest}.jpg")
    for folder in (ws.cache_dir, *_private):
        if (folder / name).is_file():
            return folder / name
    img = load_rgb(image_path(ws, rec), target_size=(size, size), name=rec.id)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, optimize=True)
    path = ws.cache_dir / name
    try:
        atomic_write_bytes(path, out.getvalue())
    except OSError as err:
        if err.errno not in NOT_WRITABLE:
            raise
        if not _private:  # this process's own folder, for workspaces it cannot write
            _private.append(Path(tempfile.mkdtemp(prefix="tiefjax-thumbs-")))
            atexit.register(shutil.rmtree, _private[0], ignore_errors=True)
        path = _private[0] / name
        atomic_write_bytes(path, out.getvalue())
    return path
