"""Where the static site (``site/``: HTML + ES modules + CSS) is, in a checkout or installed.

In a source checkout (and an editable install) ``site/`` sits at the repository root next to
the ``tiefjax`` package. An installed wheel carries it as package data in ``tiefjax/_site``.
``TIEFJAX_SITE_DIR`` overrides both (e.g. to try a modified site).
"""

from __future__ import annotations

import os
from pathlib import Path

from tiefjax.errors import NotFound

_PACKAGE = Path(__file__).resolve().parent.parent  # .../tiefjax


def site_candidates() -> list[Path]:
    """Folders searched for the site, most specific first."""
    found = []
    if os.environ.get("TIEFJAX_SITE_DIR"):
        found.append(Path(os.environ["TIEFJAX_SITE_DIR"]).expanduser())
    found.append(_PACKAGE / "_site")  # installed package data
    found.append(_PACKAGE.parent / "site")  # source checkout / editable install
    return found


def find_site_dir() -> Path | None:
    """The site folder (one with an ``index.html``), or None when none is present."""
    for folder in site_candidates():
        if (folder / "index.html").is_file():
            return folder.resolve()
    return None


def require_site_dir() -> Path:
    """The site folder, or NotFound naming where it was looked for."""
    folder = find_site_dir()
    if folder is None:
        places = ", ".join(str(p) for p in site_candidates())
        raise NotFound(
            f"the tiefjax site (index.html) was not found in {places}; reinstall tiefjax or "
            "set TIEFJAX_SITE_DIR to the site/ folder of a tiefjax checkout"
        )
    return folder
