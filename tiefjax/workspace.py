"""Where things live in a workspace folder, and its settings (``tiefjax.toml``) with defaults.

A workspace is one folder: the SQLite annotation store, the settings file, ported weights,
prepared datasets, training runs and the search index. Modules ask the workspace for paths and
for their settings section; they never build workspace paths themselves.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tiefjax.errors import InvalidInput, NotFound, TiefjaxError

CONFIG_NAME = "tiefjax.toml"
STORE_NAME = "tiefjax.sqlite"

T = TypeVar("T")

#: errno values meaning "this user may not write here" (permissions or a read-only mount).
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class ReadOnly(TiefjaxError):
    """A write to a folder or file this process cannot write (permissions, read-only mount)."""

    http_status = 403


def read_only(path: Path, what: str) -> ReadOnly:
    """The one-line error for ``what`` that cannot be written because ``path`` is read-only."""
    return ReadOnly(
        f"{path} is read-only for this user, so {what} cannot be saved; nothing was changed. "
        f"Make it writable (e.g. chmod -R u+w '{path}', or remount the disk read-write) and "
        "run the command again"
    )


class Workspace:
    """Paths inside one workspace folder plus typed access to its settings."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()

    # -- layout -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def store_path(self) -> Path:
        return self.root / STORE_NAME

    @property
    def models_dir(self) -> Path:
        """Ported encoder weights (``models/encoder``) and their description."""
        return self.root / "models"

    @property
    def datasets_dir(self) -> Path:
        """tensorflow-datasets ``data_dir`` for the prepared training sets."""
        return self.root / "datasets"

    @property
    def cache_dir(self) -> Path:
        """Derived, rebuildable data: encoded crop features, thumbnails."""
        return self.root / "cache"

    def train_dir(self, task: str) -> Path:
        """Checkpoints and ``metrics.jsonl`` of one training task (classifier/regressor/ranking)."""
        return self.root / "train" / task

    @property
    def index_dir(self) -> Path:
        """The current search index (a folder swapped in atomically on every build)."""
        return self.root / "index"

    # -- lifecycle ----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.store_path.exists()

    def require(self) -> Workspace:
        """Fail with a clear message when this folder is not an initialised workspace."""
        if not self.exists():
            raise NotFound(
                f"{self.root} is not a tiefjax workspace (no {STORE_NAME}). "
                f"Create one with: tiefjax init {self.root} --images DIR"
            )
        return self

    def ensure_config(self, template: str) -> None:
        """Write ``tiefjax.toml`` from ``template`` unless the user already has one."""
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInput(
                f"{self.root} is a file, not a folder; give a new or existing folder as the "
                "workspace"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            atomic_write_text(self.config_path, template)

    @contextmanager
    def writing(self, what: str) -> Iterator[Workspace]:
        """Run a command that writes ``what`` into the workspace: refused up front when the
        folder is read-only, and a permission or read-only-disk error on the way becomes one
        line naming the path and the fix instead of an OSError traceback."""
        nearest = next(p for p in (self.root, *self.root.parents) if p.exists())
        if not os.access(nearest, os.W_OK):
            raise read_only(nearest, what)
        try:
            yield self
        except OSError as err:
            if err.errno not in NOT_WRITABLE or err.filename is None:
                raise
            raise read_only(Path(os.fsdecode(err.filename)).parent, what) from err

    # -- settings -----------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The parsed settings file (empty when there is none)."""
        if not self.config_path.exists():
            return {}
        try:
            return tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise InvalidInput(
                f"{self.config_path} is not valid TOML ({err}). Fix the file or delete it to "
                "get the defaults back."
            ) from err

    def section(self, name: str, cls: type[T]) -> T:
        """Settings section ``[name]`` as the dataclass ``cls``: defaults overridden by the file."""
        table: Any = self.settings()
        for part in name.split("."):
            table = table.get(part, {}) if isinstance(table, dict) else {}
        return config_from_dict(cls, table, where=f"[{name}] in {self.config_path}")


def config_from_dict(cls: type[T], values: dict[str, Any], where: str = "settings") -> T:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types clearly."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(k for k in values if k not in fields and not isinstance(values[k], dict))
    if unknown:
        raise InvalidInput(
            f"unknown setting(s) {', '.join(unknown)} in {where}; known: {', '.join(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            continue  # a nested table, e.g. [train.classifier] inside [train]
        default = getattr(cls(), key)  # type: ignore[call-arg]
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and not isinstance(value, type(default)):
            raise InvalidInput(
                f"setting {key} in {where} should be {type(default).__name__}, got {value!r}"
            )
        kwargs[key] = value
    return cls(**kwargs)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never half of one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
