"""The annotation store: images, boxes (versioned), similarity triplets and detections in SQLite.

One file (``tiefjax.sqlite`` in the workspace), stdlib :mod:`sqlite3` in WAL mode, so the CLI,
the server and a training run can read while one of them writes, from several threads and
processes. Every write is one transaction (``BEGIN IMMEDIATE``: the write lock is taken up front,
so read-modify-write steps such as a versioned box edit cannot interleave with another writer);
a killed writer loses only its unfinished transaction.

Threads: a :class:`Store` holds **one connection shared by its threads**
(``check_same_thread=False``) and serialises its use with a re-entrant lock, so one ``Store`` can
serve every handler thread of a server. Separate ``Store`` objects (other threads, other
processes) are separate connections; SQLite's file locking plus ``busy_timeout`` serialises them.

Boxes carry a version for optimistic concurrency: an editor sends the version it loaded;
:meth:`Store.put_box` raises :class:`BoxConflict` (a :class:`~tiefjax.errors.Conflict`, HTTP 409)
with the current box when someone else saved first. Deleting a box leaves a tombstone that keeps
the version counting, so a stale editor can never overwrite a box that was deleted and redrawn.

The store knows nothing of images on disk or of JAX: the catalog registers images, the rest of
tiefjax reads and writes annotations here.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tiefjax import history
from tiefjax.errors import Conflict, InvalidInput, NotFound, TiefjaxError
from tiefjax.gallery_query import CatalogQuery
from tiefjax.validate import id_problem, shown
from tiefjax.workspace import read_only

#: Seconds a connection waits for another writer's lock before giving up.
BUSY_TIMEOUT_S = 30.0
_CATALOG_VERSION = "catalog_version"  # meta key, see Store.catalog_version
#: A triplet row as :class:`Triplet` takes it.
_TRIPLETS = "SELECT id, reference, positive, negative, created_at FROM triplets"


# -- records --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRecord:
    """One registered catalog image: id = file stem, upright size in pixels, content hash."""

    id: str
    path: str
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class Box:
    """A product box in pixels of the upright original image."""

    left: float
    top: float
    right: float
    bottom: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)

    @classmethod
    def of(cls, value: Box | Sequence[float] | Mapping[str, float]) -> Box:
        """A Box from a Box, a (left, top, right, bottom) sequence or a mapping with those keys."""
        if isinstance(value, Box):
            return value
        if isinstance(value, Mapping):
            missing = [k for k in ("left", "top", "right", "bottom") if k not in value]
            if missing:
                raise InvalidInput(f"a box needs {', '.join(missing)}, got {dict(value)!r}")
            return cls(value["left"], value["top"], value["right"], value["bottom"])
        try:
            left, top, right, bottom = value
        except (TypeError, ValueError) as err:
            raise InvalidInput(
                f"a box needs 4 numbers (left, top, right, bottom), got {value!r}"
            ) from err
        return cls(left, top, right, bottom)


@dataclass(frozen=True)
class StoredBox:
    """A saved box: ``version`` goes up by one on every change; ``updated_at`` is ISO-8601 UTC."""

    image_id: str
    box: Box
    version: int
    updated_at: str


@dataclass(frozen=True)
class Triplet:
    """``reference`` looks more like ``positive`` than like ``negative``."""

    id: int
    reference: str
    positive: str
    negative: str
    created_at: str


@dataclass(frozen=True)
class Detection:
    """A box found by the locator (not by a person); ``fallback`` = whole image was used.

    ``uncertainty`` (0..1) and ``reason`` are the review queue's score of it
    (:func:`tiefjax.review.box_uncertainty`); None for detections stored without one.
    """

    image_id: str
    box: Box
    score: float
    fallback: bool
    uncertainty: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ReviewItem:
    """One photo of the box review queue: ``score`` orders it (higher first), ``reason`` says
    why (a code of :data:`tiefjax.review.BOX_REASONS`), ``iou`` = detection vs annotation."""

    image_id: str
    score: float
    reason: str
    detection: Detection
    box: Box | None
    iou: float | None


@dataclass(frozen=True)
class CatalogItem:
    """An image with its current box and detection: what the gallery shows for it."""

    image: ImageRecord
    box: StoredBox | None
    detection: Detection | None


@dataclass(frozen=True)
class CatalogPage:
    """One gallery page; ``next_after`` = the cursor for the following page (the last id here),
    None when this page ends the catalog."""

    total: int
    items: list[CatalogItem]
    next_after: str | None


@dataclass(frozen=True)
class Accepted:
    """What :meth:`Store.accept_detections` did: the boxes saved, and (id, why) of the images
    skipped: ``has_box``, ``no_detection`` or ``no_product`` (the locator used the whole photo)."""

    saved: list[StoredBox]
    skipped: list[tuple[str, str]]


class StoreBusy(TiefjaxError):
    """Another writer held the store's lock for longer than the busy timeout."""

    http_status = 503


class StoreUnavailable(TiefjaxError):
    """The store cannot be opened or written for a reason outside the request (disk full, ...)."""

    http_status = 503


class StoreDamaged(StoreUnavailable):
    """The store file is empty or not readable as SQLite; it is never rebuilt silently."""


class BoxConflict(Conflict):
    """Someone saved or deleted the box first; ``current`` is what is stored now (or None)."""

    def __init__(self, message: str, current: StoredBox | None):
        super().__init__(message)
        self.current = current


# -- schema ---------------------------------------------------------------------------------------
#: Ordered schema migrations; migration i (1-based) brings the schema from version i-1 to i.
#: Each is an SQL script or a function of the connection (for data migrations). Append new
#: ones; never edit a released one. All pending ones run in one transaction when a store opens.
MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (
    # 1: images, boxes (versioned; all-NULL coordinates = deleted tombstone), triplets, meta
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        width INTEGER NOT NULL CHECK (width > 0),
        height INTEGER NOT NULL CHECK (height > 0),
        sha256 TEXT NOT NULL
    );
    CREATE TABLE boxes (
        image_id TEXT PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
        left REAL, top REAL, right REAL, bottom REAL,
        version INTEGER NOT NULL CHECK (version > 0),
        updated_at TEXT NOT NULL
    );
    CREATE TABLE triplets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        reference TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        positive TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        negative TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        UNIQUE (reference, positive, negative),
        CHECK (reference <> positive AND reference <> negative AND positive <> negative)
    );
    """,
    # 2: detections written by the locator while indexing
    """
    CREATE TABLE detections (
        image_id TEXT PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
        left REAL NOT NULL, top REAL NOT NULL, right REAL NOT NULL, bottom REAL NOT NULL,
        score REAL NOT NULL,
        fallback INTEGER NOT NULL
    );
    """,
    # 3: indexes for cascading deletes and "triplets involving this image"
    """
    CREATE INDEX triplets_positive ON triplets(positive);
    CREATE INDEX triplets_negative ON triplets(negative);
    """,
    # 4: the review queue's uncertainty of each detection (NULL: stored before, not scored)
    """
    ALTER TABLE detections ADD COLUMN uncertainty REAL;
    ALTER TABLE detections ADD COLUMN reason TEXT;
    """,
    # 5: the gallery's sort by the locator's probability walks this index (tiefjax.gallery_query)
    "CREATE INDEX detections_score ON detections(score, image_id);",
    # 6: who changed which box or triplet when (tiefjax.history), annotators' hashed tokens
    """
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        annotator TEXT NOT NULL,
        action TEXT NOT NULL,
        image_id TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX history_image ON history(image_id, id);
    CREATE INDEX history_annotator ON history(annotator, id);
    CREATE TABLE annotators (
        name TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def apply_migration(
    db: sqlite3.Connection, migration: str | Callable[[sqlite3.Connection], None]
) -> None:
    """Run one migration inside the caller's transaction (``executescript`` would commit)."""
    if callable(migration):
        migration(db)
        return
    for statement in _statements(migration):
        db.execute(statement)


def _statements(script: str) -> list[str]:
    """Split an SQL script into complete statements."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:60]}")
    return statements


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: Any, name: str, where: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"box {name} must be a number{where}, got {shown(value)}")
    if isinstance(value, int) and abs(value) > 2**53:  # also keeps float() from overflowing
        raise InvalidInput(f"box {name} is too large{where}, got {shown(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInput(f"box {name} must be a finite number{where}, got {value!r}")
    return value


def validate_box(box: Box | Sequence[float], width: int, height: int, image_id: str = "") -> Box:
    """The box as floats when it lies inside a ``width`` x ``height`` image with positive area.

    Raises :class:`InvalidInput` naming the rule that failed.
    """
    where = f" for image {image_id} ({width}x{height})" if image_id else f" ({width}x{height})"
    box = Box.of(box)
    left, top, right, bottom = (
        _number(getattr(box, k), k, where) for k in ("left", "top", "right", "bottom")
    )
    problems = []
    if left < 0 or top < 0:
        problems.append("left and top must be >= 0")
    if right > width:
        problems.append(f"right must be <= the image width {width}")
    if bottom > height:
        problems.append(f"bottom must be <= the image height {height}")
    if not left < right:
        problems.append("left must be less than right")
    if not top < bottom:
        problems.append("top must be less than bottom")
    if problems:
        raise InvalidInput(
            f"box ({left:g}, {top:g}, {right:g}, {bottom:g}) is invalid{where}: "
            + "; ".join(problems)
        )
    return Box(left, top, right, bottom)


def _box_fits(box: Box, width: int, height: int) -> bool:
    try:
        validate_box(box, width, height)
    except InvalidInput:
        return False
    return True


class Store:
    """The SQLite annotation store of one workspace. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        #: Opened read-only because the file or its folder cannot be written: reads work, every
        #: write raises :class:`~tiefjax.workspace.ReadOnly` naming the fix.
        self.read_only = self.path.exists() and not (
            os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        )
        if self.path.exists() and self.path.stat().st_size == 0:
            raise StoreDamaged(
                f"{self.path} is empty (0 bytes): the catalog and annotations it held are not "
                "in it; nothing was changed (tiefjax never rebuilds it on its own). Restore it "
                "from a backup"
            )
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._timeout = timeout
        self._depth = 0  # nesting of transaction() on this connection
        try:
            self._db = self._connect()
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if not self.read_only:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException as err:
            if hasattr(self, "_db"):
                self._db.close()
            if not isinstance(err, sqlite3.DatabaseError):
                raise
            raise self._failure(err) from err

    def _connect(self) -> sqlite3.Connection:
        """A connection; read-only ones try ``mode=ro`` and then ``immutable=1``, which SQLite
        needs for a WAL store in a read-only folder (it cannot create the ``-shm`` file there)."""
        if not self.read_only:
            return self._open(str(self.path), uri=False)
        uri = "file:" + urllib.parse.quote(str(self.path.resolve()))
        db = self._open(uri + "?mode=ro", uri=True)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file lazily
        except sqlite3.OperationalError:
            db.close()
            db = self._open(uri + "?immutable=1", uri=True)
        return db

    def _open(self, database: str, uri: bool) -> sqlite3.Connection:
        return sqlite3.connect(
            database,
            timeout=self._timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )

    def _failure(self, err: sqlite3.DatabaseError) -> Exception:
        """The one-line error for what SQLite reported (other errors are returned unchanged)."""
        name = getattr(err, "sqlite_errorname", "")
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            return StoreDamaged(
                f"{self.path} is damaged ({err}); nothing was changed. Restore it from a backup, "
                f"or salvage what is readable into a new file: sqlite3 '{self.path}' .recover "
                f"| sqlite3 '{self.path}.recovered'"
            )
        if name.startswith("SQLITE_READONLY"):
            return read_only(self.path.parent, "annotations")
        if name.startswith("SQLITE_FULL"):
            return StoreUnavailable(
                f"the disk of {self.path} is full ({err}); nothing was changed. "
                "Free some space and try again"
            )
        if name.startswith("SQLITE_CANTOPEN"):
            return StoreUnavailable(
                f"cannot open {self.path} ({err}); check that it and its folder exist and are "
                "readable by this user"
            )
        return err

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection under the store's lock; SQLite failures become one-line errors."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as err:
                raise self._failure(err) from err

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        with self._locked():
            return self._version()

    def _version(self) -> int:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not exists:
            return 0
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        """Bring the schema up to date (a read first, so opening never waits for writers)."""
        if self._schema_version_checked() == SCHEMA_VERSION:
            return
        if self.read_only:
            raise read_only(self.path.parent, "the upgrade of its store to this tiefjax")
        with self.transaction():
            version = self._schema_version_checked()  # another process may have migrated meanwhile
            if version == SCHEMA_VERSION:
                return
            if version == 0:
                self._db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                self._db.execute("INSERT INTO schema_version VALUES (0)")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                apply_migration(self._db, MIGRATIONS[number - 1])
                self._db.execute("UPDATE schema_version SET version = ?", (number,))

    def _schema_version_checked(self) -> int:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise TiefjaxError(
                f"{self.path} has schema version {version} but this tiefjax knows only up to "
                f"{SCHEMA_VERSION}; upgrade tiefjax to open it"
            )
        return version

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """One write transaction (``BEGIN IMMEDIATE``); store calls inside it join it.

        Everything inside commits together or, on any exception, not at all.
        """
        if self.read_only:
            raise read_only(self.path.parent, "annotations")
        with self._locked():
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                if not getattr(err, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
                    raise
                raise StoreBusy(
                    f"{self.path} stayed locked by another writer for {self._timeout:g} s "
                    f"({err}); try again when it has finished"
                ) from err
            self._depth = 1
            try:
                yield self
                self._depth = 0
                self._db.execute("COMMIT")
            except BaseException:
                self._depth = 0
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for multi-statement reads."""
        with self._locked():
            if self._depth:
                yield self._db
                return
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._locked():
            return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._locked():
            return self._db.execute(sql, params).fetchall()

    # -- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A workspace-level setting remembered by the store (e.g. ``images_dir``)."""
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else default

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or, with ``None``, remove) a meta value."""
        with self.transaction():
            if value is None:
                self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, str(value)),
                )

    # -- images -----------------------------------------------------------------------------------
    def catalog_version(self) -> int:
        """A number that changes whenever images are registered, changed or removed: what was
        derived from the whole list of ids (e.g. the index's staleness) holds while it stands."""
        return int(self.get_meta(_CATALOG_VERSION, "0") or 0)

    def _catalog_changed(self) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (_CATALOG_VERSION,),
        )

    def upsert_image(self, rec: ImageRecord) -> None:
        """Register or update one image (see :meth:`upsert_images`)."""
        self.upsert_images([rec])

    def upsert_images(self, recs: Iterable[ImageRecord]) -> None:
        """Register or update images in one transaction.

        When an image's size changes, its box is kept if it still fits and deleted otherwise;
        when its content changes, its detection is dropped (it described the old photo).
        """
        with self.transaction():
            self._catalog_changed()
            for rec in recs:
                self._check_record(rec)
                old = self._db.execute(
                    "SELECT width, height, sha256 FROM images WHERE id = ?", (rec.id,)
                ).fetchone()
                self._db.execute(
                    "INSERT INTO images(id, path, width, height, sha256) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET path = excluded.path, width = excluded.width, "
                    "height = excluded.height, sha256 = excluded.sha256",
                    (rec.id, str(rec.path), rec.width, rec.height, rec.sha256),
                )
                if old is None:
                    continue
                if (old[0], old[1]) != (rec.width, rec.height):
                    current = self._box_row(rec.id)
                    if current is not None and not _box_fits(current.box, rec.width, rec.height):
                        self._tombstone(current, "init")  # the photo changed under it
                if old[2] != rec.sha256:
                    self._db.execute("DELETE FROM detections WHERE image_id = ?", (rec.id,))

    @staticmethod
    def _check_record(rec: ImageRecord) -> None:
        problem = id_problem(rec.id)
        if problem is not None:
            raise InvalidInput(f"{shown(rec.id)} cannot be an image id: {problem}")
        for name in ("width", "height"):
            value = getattr(rec, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInput(f"image {rec.id}: {name} must be a positive integer")

    def remove_images(self, ids: Iterable[str], *, by: str = history.LOCAL) -> int:
        """Remove images with their box, triplets and detection; unknown ids are ignored. The
        box and triplets that go with them are recorded in the history as deleted by ``by``.

        Returns how many images were removed.
        """
        removed = 0
        with self.transaction():
            for image_id in ids:
                self._record_removal(image_id, by)
                removed += self._db.execute("DELETE FROM images WHERE id = ?", (image_id,)).rowcount
            if removed:
                self._catalog_changed()
        return removed

    def _record_removal(self, image_id: str, by: str) -> None:
        """History records for the annotations that removing ``image_id`` deletes with it."""
        now = _now()
        box = self._box_row(image_id)
        if box is not None:
            self._record_box_deleted(box, by, now)
        for row in self._db.execute(
            _TRIPLETS + " WHERE reference = ?1 OR positive = ?1 OR negative = ?1 ORDER BY id",
            (image_id,),
        ).fetchall():
            self._record_triplet(Triplet(*row), by, "triplet.deleted", now)

    def get_image(self, image_id: str) -> ImageRecord:
        row = self._one(
            "SELECT id, path, width, height, sha256 FROM images WHERE id = ?", (image_id,)
        )
        if row is None:
            raise NotFound(f"no image with id {image_id!r} in the catalog")
        return ImageRecord(*row)

    def has_image(self, image_id: str) -> bool:
        return self._one("SELECT 1 FROM images WHERE id = ?", (image_id,)) is not None

    def list_images(self) -> list[ImageRecord]:
        """Every image sorted by id (pages for a gallery: :meth:`catalog_page`)."""
        rows = self._all("SELECT id, path, width, height, sha256 FROM images ORDER BY id")
        return [ImageRecord(*row) for row in rows]

    def catalog_page(
        self, after: str = "", offset: int = 0, limit: int = 48, query: CatalogQuery | None = None
    ) -> CatalogPage:
        """``limit`` images (with box and detection) after the image ``after`` and ``offset``
        more, filtered and sorted by ``query`` (default: every image, by id).

        Keyset (``after``) continues from that image's place in the order: by id, ``after``
        need not be a stored id (ids are compared as strings, like the sort); by probability
        or IoU it must have that value (else :class:`InvalidInput`), and its current value is
        the cursor. ``offset`` walks past rows. Count and page come from one SQL statement, so
        a page never mixes two states of the catalog.
        """
        if offset < 0 or limit < 1:
            raise InvalidInput(f"offset must be >= 0 and limit >= 1, got {offset} and {limit}")
        query = query or CatalogQuery()
        key = query.key_sql()
        where, where_params = query.where_sql()
        keyword, compare = query.direction()
        listed = f"FROM images AS i {_ITEM_JOINS} WHERE {where}"
        counted = f"FROM {query.count_from()} WHERE {where}"
        cursor_sql, cursor_params = "NULL", []
        seek, seek_params = "", []
        if after and query.sort == "id":
            seek, seek_params = f"AND i.id {compare} ?", [after]
        elif after:
            cursor_sql = f"(SELECT {key} FROM images AS i {_ITEM_JOINS} WHERE i.id = ?)"
            cursor_params = [after]
            tie = query.tiebreak_sql()
            seek, seek_params = f"AND ({key}, {tie}) {compare} ({cursor_sql}, ?)", [after, after]
        order = f"k {keyword}" + (f", id {keyword}" if query.sort != "id" else "")
        inner = order.replace(", id", f", {query.tiebreak_sql()}")
        rows = self._all(
            f"SELECT (SELECT count(*) {counted}), {cursor_sql}, page.* FROM (SELECT 1) LEFT JOIN "
            f"({_ITEM_SELECT}, {key} AS k {listed} {seek} ORDER BY {inner} LIMIT ? OFFSET ?) "
            f"AS page ORDER BY page.{order.replace(', ', ', page.')}",
            (*where_params, *cursor_params, *where_params, *seek_params, limit + 1, offset),
        )
        if after and query.sort != "id" and rows[0][1] is None:
            raise InvalidInput(
                f"after={after!r} is not in {query.describe()}, so there is no place to continue "
                f"from; pass an id from a page's next (sort={query.sort}), or start without after"
            )
        items = [_catalog_item(row[2:-1]) for row in rows if row[2] is not None]
        more = len(items) > limit
        items = items[:limit]
        return CatalogPage(int(rows[0][0]), items, items[-1].image.id if more else None)

    def catalog_item(self, image_id: str) -> CatalogItem:
        """One image with its box and detection (NotFound for an unknown id)."""
        row = self._one(
            f"{_ITEM_SELECT} FROM images AS i {_ITEM_JOINS} WHERE i.id = ?", (image_id,)
        )
        if row is None:
            raise NotFound(f"no image with id {image_id!r} in the catalog")
        return _catalog_item(row)

    def image_ids(self) -> list[str]:
        return [row[0] for row in self._all("SELECT id FROM images ORDER BY id")]

    def count_images(self) -> int:
        return int(self._one("SELECT count(*) FROM images")[0])

    def _size(self, image_id: str) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT width, height FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no image with id {image_id!r} in the catalog")
        return int(row[0]), int(row[1])

    # -- boxes ------------------------------------------------------------------------------------
    def check_box(self, image_id: str, box: Box | Sequence[float]) -> Box:
        """The validated box for ``image_id`` (else NotFound / InvalidInput); writes nothing."""
        with self._locked():
            width, height = self._size(image_id)
        return validate_box(box, width, height, image_id)

    def _box_row(self, image_id: str) -> StoredBox | None:
        """Current box, or None when there is none or it was deleted (a tombstone)."""
        row = self._db.execute(
            "SELECT left, top, right, bottom, version, updated_at FROM boxes "
            "WHERE image_id = ? AND left IS NOT NULL",
            (image_id,),
        ).fetchone()
        if row is None:
            return None
        return StoredBox(image_id, Box(*row[:4]), int(row[4]), row[5])

    def get_box(self, image_id: str) -> StoredBox | None:
        """The image's box, or None when it has none (NotFound for an unknown image)."""
        with self._locked():
            self._size(image_id)
            return self._box_row(image_id)

    def put_box(
        self,
        image_id: str,
        box: Box | Sequence[float],
        expected_version: int | None = None,
        *,
        by: str = history.LOCAL,
    ) -> StoredBox:
        """Save the image's box and return it with its new version.

        ``expected_version``: the version the editor started from (0 = "it had no box"), or None
        to overwrite whatever is there. A mismatch raises :class:`BoxConflict` and changes
        nothing. Saving the same box again keeps its version. ``by`` names the annotator in
        the history.
        """
        return self._save_box(image_id, box, expected_version, by, "box.saved")

    def _save_box(
        self,
        image_id: str,
        box: Box | Sequence[float],
        expected_version: int | None,
        by: str,
        action: str,
    ) -> StoredBox:
        with self.transaction():
            width, height = self._size(image_id)
            box = validate_box(box, width, height, image_id)
            current = self._box_row(image_id)
            self._check_version(image_id, current, expected_version)
            if current is not None and current.box == box:
                return current
            tomb = self._db.execute(
                "SELECT version FROM boxes WHERE image_id = ?", (image_id,)
            ).fetchone()
            version = (int(tomb[0]) if tomb else 0) + 1
            now = _now()
            self._db.execute(
                "INSERT INTO boxes(image_id, left, top, right, bottom, version, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET "
                "left = excluded.left, top = excluded.top, right = excluded.right, "
                "bottom = excluded.bottom, version = excluded.version, "
                "updated_at = excluded.updated_at",
                (image_id, *box.as_tuple(), version, now),
            )
            previous = None if current is None else list(current.box.as_tuple())
            detail = {"version": version, "box": list(box.as_tuple()), "previous": previous}
            history.record(self._db, now, by, action, image_id, detail)
            return StoredBox(image_id, box, version, now)

    @staticmethod
    def _check_version(image_id: str, current: StoredBox | None, expected: int | None) -> None:
        if expected is None:
            return
        if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
            raise InvalidInput(f"expected_version must be an integer >= 0, got {expected!r}")
        have = current.version if current is not None else 0
        if have == expected:
            return
        if current is None:
            message = (
                f"the box of {image_id} was deleted by someone else after you loaded version "
                f"{expected}; reload and draw it again if it is still needed"
            )
        elif expected == 0:
            message = (
                f"{image_id} already has a box (version {current.version}) saved by someone "
                "else; reload it and edit that one"
            )
        else:
            message = (
                f"the box of {image_id} was changed by someone else (you edited version "
                f"{expected}, it is now version {current.version}); reload it and redo your edit"
            )
        raise BoxConflict(message, current)

    def delete_box(
        self, image_id: str, expected_version: int | None = None, *, by: str = history.LOCAL
    ) -> None:
        """Delete the image's box (no-op when it has none); versions are checked like put_box."""
        with self.transaction():
            self._size(image_id)
            current = self._box_row(image_id)
            self._check_version(image_id, current, expected_version)
            if current is None:
                return
            self._tombstone(current, by)

    def _tombstone(self, current: StoredBox, by: str) -> None:
        """Delete ``current`` (a tombstone keeps the version counting), recorded as by ``by``."""
        now = _now()
        self._db.execute(
            "UPDATE boxes SET left = NULL, top = NULL, right = NULL, bottom = NULL, "
            "version = version + 1, updated_at = ? WHERE image_id = ?",
            (now, current.image_id),
        )
        self._record_box_deleted(current, by, now)

    def _record_box_deleted(self, box: StoredBox, by: str, at: str) -> None:
        detail = {"version": box.version + 1, "previous": list(box.box.as_tuple())}
        history.record(self._db, at, by, "box.deleted", box.image_id, detail)

    def boxes(self) -> dict[str, StoredBox]:
        """Every current box by image id."""
        rows = self._all(
            "SELECT image_id, left, top, right, bottom, version, updated_at FROM boxes "
            "WHERE left IS NOT NULL ORDER BY image_id"
        )
        return {r[0]: StoredBox(r[0], Box(*r[1:5]), int(r[5]), r[6]) for r in rows}

    def count_boxes(self) -> int:
        return int(self._one("SELECT count(*) FROM boxes WHERE left IS NOT NULL")[0])

    def accept_detections(
        self, seen: Mapping[str, int], overwrite: bool = False, *, by: str = history.LOCAL
    ) -> Accepted:
        """Save the located box of each image in ``seen`` as its annotated box, in one
        transaction (bulk review).

        ``seen`` maps an image id to the box version the reviewer saw (0 = no box). Without
        ``overwrite`` only images that have no box now are written (the others are skipped,
        so a box someone drew meanwhile is never replaced); with it, every image whose box is
        still the version seen is overwritten, and if any changed (:class:`Conflict`) or an id
        is unknown (:class:`NotFound`) nothing is saved. Images without a located product
        (no detection, or the whole photo as fallback) are skipped.
        """
        accepted: list[StoredBox] = []
        skipped: list[tuple[str, str]] = []
        changed: list[str] = []
        with self.transaction():
            for image_id, version in seen.items():
                self._size(image_id)
                row = self._db.execute(
                    "SELECT left, top, right, bottom, fallback FROM detections WHERE image_id = ?",
                    (image_id,),
                ).fetchone()
                current = self._box_row(image_id)
                if row is None or row[4]:
                    skipped.append((image_id, "no_detection" if row is None else "no_product"))
                elif current is not None and not overwrite:
                    skipped.append((image_id, "has_box"))
                elif overwrite and (current.version if current else 0) != version:
                    changed.append(image_id)
                else:
                    accepted.append(self._save_box(image_id, row[:4], None, by, "box.accepted"))
            if changed:
                raise Conflict(
                    f"the box of {', '.join(changed)} changed since you loaded it (someone else "
                    "saved or deleted it); nothing was saved. Reload and review again"
                )
        return Accepted(accepted, skipped)

    # -- triplets ---------------------------------------------------------------------------------
    def check_triplet(self, reference: str, positive: str, negative: str) -> None:
        """Raise InvalidInput / NotFound unless this would be a valid triplet; writes nothing."""
        ids = (reference, positive, negative)
        for value in ids:
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"triplet ids must be non-empty strings, got {value!r}")
        if len(set(ids)) != 3:
            raise InvalidInput(
                f"triplet ({reference}, {positive}, {negative}) needs three different images"
            )
        with self._locked():
            missing = [i for i in ids if not self.has_image(i)]
        if missing:
            raise NotFound(
                f"triplet ({reference}, {positive}, {negative}): no image with id "
                + ", ".join(repr(i) for i in missing)
                + " in the catalog"
            )

    def add_triplet(
        self, reference: str, positive: str, negative: str, *, by: str = history.LOCAL
    ) -> Triplet:
        """Record that ``reference`` is more like ``positive`` than ``negative``.

        Adding the same triplet again returns the stored one.
        """
        with self.transaction():
            self.check_triplet(reference, positive, negative)
            return self._insert_triplet((reference, positive, negative), by)[0]

    def add_triplets(
        self, triplets: Sequence[tuple[str, str, str]], *, by: str = history.LOCAL
    ) -> tuple[list[Triplet], int]:
        """Store many triplets in one transaction (all or none); returns the triplets that were
        new and how many were stored already."""
        added: list[Triplet] = []
        with self.transaction():
            for ids in triplets:
                self.check_triplet(*ids)
                triplet, new = self._insert_triplet(ids, by)
                if new:
                    added.append(triplet)
        return added, len(triplets) - len(added)

    def _insert_triplet(self, ids: tuple[str, str, str], by: str) -> tuple[Triplet, bool]:
        """The stored triplet for these ids and whether this call added it."""
        now = _now()
        new = self._db.execute(
            "INSERT INTO triplets(reference, positive, negative, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (*ids, now),
        ).rowcount
        row = self._db.execute(
            _TRIPLETS + " WHERE reference = ? AND positive = ? AND negative = ?",
            ids,
        ).fetchone()
        triplet = Triplet(*row)
        if new:
            self._record_triplet(triplet, by, "triplet.added", now)
        return triplet, bool(new)

    def _record_triplet(self, t: Triplet, by: str, action: str, at: str) -> None:
        detail = {"triplet": t.id, "positive": t.positive, "negative": t.negative}
        history.record(self._db, at, by, action, t.reference, detail)

    def list_triplets(self, reference: str | None = None) -> list[Triplet]:
        """All triplets (or those of one reference image) in the order they were added."""
        if reference is None:
            rows = self._all(_TRIPLETS + " ORDER BY id")
        else:
            rows = self._all(_TRIPLETS + " WHERE reference = ? ORDER BY id", (reference,))
        return [Triplet(*row) for row in rows]

    def delete_triplet(self, triplet_id: int, *, by: str = history.LOCAL) -> None:
        """Delete one triplet by id (NotFound when there is none)."""
        self.delete_triplets([triplet_id], by=by)

    def delete_triplets(self, triplet_ids: Iterable[int], *, by: str = history.LOCAL) -> int:
        """Delete triplets by id in one transaction: all of them, or none when one is unknown
        (NotFound naming it). Returns how many were deleted."""
        deleted = 0
        with self.transaction():
            for triplet_id in dict.fromkeys(triplet_ids):  # each once
                row = self._db.execute(
                    _TRIPLETS + " WHERE id = ?",
                    (int(triplet_id),),
                ).fetchone()
                if row is None:
                    raise NotFound(f"no triplet with id {triplet_id}")
                self._db.execute("DELETE FROM triplets WHERE id = ?", (row[0],))
                self._record_triplet(Triplet(*row), by, "triplet.deleted", _now())
                deleted += 1
        return deleted

    def count_triplets(self) -> int:
        return int(self._one("SELECT count(*) FROM triplets")[0])

    # -- history and annotators (tiefjax.history) --------------------------------------------
    def changes(
        self,
        image_id: str | None = None,
        annotator: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> tuple[list[history.Change], int | None]:
        """A page of box and triplet changes, newest first, and the next page's cursor (see
        :func:`tiefjax.history.changes`)."""
        with self._locked():
            return history.changes(self._db, image_id, annotator, before, limit)

    def add_annotator(self, name: str) -> str:
        """A new token for annotator ``name`` (shown once; only its hash is stored)."""
        with self.transaction():
            return history.add_annotator(self._db, name, _now())

    def remove_annotator(self, name: str) -> None:
        with self.transaction():
            history.remove_annotator(self._db, name)

    def annotators(self) -> list[history.Annotator]:
        with self._locked():
            return history.annotators(self._db)

    def annotator_of(self, token: str) -> str | None:
        """The annotator whose token this is, or None."""
        with self._locked():
            return history.annotator_of(self._db, token)

    # -- detections -------------------------------------------------------------------------------
    def put_detections(self, detections: Iterable[Detection], replace: bool = False) -> None:
        """Save located boxes (one per image, replacing that image's previous one).

        Boxes are clipped to the image; ``replace=True`` first forgets all other detections.
        """
        with self.transaction():
            if replace:
                self._db.execute("DELETE FROM detections")
            for det in detections:
                width, height = self._size(det.image_id)
                b = Box.of(det.box)
                left, top, right, bottom = (
                    _number(getattr(b, k), k) for k in ("left", "top", "right", "bottom")
                )
                clipped = Box(
                    min(max(left, 0.0), width),
                    min(max(top, 0.0), height),
                    min(max(right, 0.0), width),
                    min(max(bottom, 0.0), height),
                )
                box = validate_box(clipped, width, height, det.image_id)
                score = _number(det.score, "score")
                uncertainty = None
                if det.uncertainty is not None:
                    uncertainty = min(max(_number(det.uncertainty, "uncertainty"), 0.0), 1.0)
                self._db.execute(
                    "INSERT OR REPLACE INTO detections "
                    "(image_id, left, top, right, bottom, score, fallback, uncertainty, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        det.image_id,
                        *box.as_tuple(),
                        score,
                        int(bool(det.fallback)),
                        uncertainty,
                        det.reason,
                    ),
                )

    def get_detection(self, image_id: str) -> Detection | None:
        """The locator's box for the image, or None when it has not been located."""
        with self._locked():
            self._size(image_id)
            row = self._db.execute(
                f"SELECT {_DETECTION_COLUMNS} FROM detections WHERE image_id = ?",
                (image_id,),
            ).fetchone()
        return _detection(row) if row else None

    def detections(self) -> dict[str, Detection]:
        rows = self._all(f"SELECT {_DETECTION_COLUMNS} FROM detections ORDER BY image_id")
        return {row[0]: _detection(row) for row in rows}

    def box_review_page(
        self, limit: int, after: tuple[float, str] | None = None, disagree_iou: float = 0.5
    ) -> tuple[list[ReviewItem], int]:
        """The box review queue: ``limit`` photos after the cursor ``(score, id)``, and how many
        photos are queued in all.

        Queued: unannotated photos whose detection was scored (by its ``uncertainty``), and
        annotated ones whose detection overlaps the box less than ``disagree_iou`` (by
        ``1 - IoU``). Ordered by score, highest first, then id; page and count read from one
        snapshot.
        """
        where = ""
        params: list[Any] = [disagree_iou]
        if after is not None:
            where = "WHERE q.score < ? OR (q.score = ? AND q.image_id > ?)"
            params += [after[0], after[0], after[1]]
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM ({_REVIEW_QUEUE}) AS q {where} "
                "ORDER BY q.score DESC, q.image_id LIMIT ?",
                (*params, limit),
            ).fetchall()
            total = db.execute(f"SELECT count(*) FROM ({_REVIEW_QUEUE})", (disagree_iou,))
            count = int(total.fetchone()[0])
        return [_review_item(row) for row in rows], count

    # -- summaries --------------------------------------------------------------------------------
    def annotations_fingerprint(self) -> str:
        """A hash of images, boxes and triplets: equal content gives an equal fingerprint.

        Prepared datasets record it and are rebuilt only when it changes. Detections and box
        versions are not part of it (they do not change what a training set contains).
        """
        digest = hashlib.sha256()
        with self._read() as db:
            for row in db.execute("SELECT id, path, width, height, sha256 FROM images ORDER BY id"):
                digest.update(("I\x1f" + "\x1f".join(map(str, row)) + "\n").encode())
            for row in db.execute(
                "SELECT image_id, left, top, right, bottom FROM boxes "
                "WHERE left IS NOT NULL ORDER BY image_id"
            ):
                digest.update(("B\x1f" + "\x1f".join(map(repr, row)) + "\n").encode())
            for row in db.execute(
                "SELECT reference, positive, negative FROM triplets "
                "ORDER BY reference, positive, negative"
            ):
                digest.update(("T\x1f" + "\x1f".join(row) + "\n").encode())
        return digest.hexdigest()

    def stats(self) -> dict[str, int]:
        """Counts of images, boxes, triplets and detections."""
        with self._read() as db:
            return {
                "images": db.execute("SELECT count(*) FROM images").fetchone()[0],
                "boxes": db.execute("SELECT count(*) FROM boxes WHERE left IS NOT NULL").fetchone()[
                    0
                ],
                "triplets": db.execute("SELECT count(*) FROM triplets").fetchone()[0],
                "detections": db.execute("SELECT count(*) FROM detections").fetchone()[0],
            }


def _detection(row: Sequence[Any]) -> Detection:
    uncertainty = None if row[7] is None else float(row[7])
    return Detection(row[0], Box(*row[1:5]), float(row[5]), bool(row[6]), uncertainty, row[8])


_DETECTION_COLUMNS = "image_id, left, top, right, bottom, score, fallback, uncertainty, reason"
#: IoU of the detection ``d`` with the annotated box ``b``, in SQL (scalar min/max).
_SQL_IOU = (
    "max(0.0, min(d.right, b.right) - max(d.left, b.left)) * "
    "max(0.0, min(d.bottom, b.bottom) - max(d.top, b.top)) / "
    "max(1e-9, (d.right - d.left) * (d.bottom - d.top) + (b.right - b.left) * (b.bottom - b.top)"
    " - max(0.0, min(d.right, b.right) - max(d.left, b.left)) * "
    "max(0.0, min(d.bottom, b.bottom) - max(d.top, b.top)))"
)
#: The queue as rows (image_id, score, reason, 8 detection columns, 4 box columns, iou); ``?`` =
#: the IoU below which an annotated photo's detection counts as disagreeing.
_REVIEW_QUEUE = (
    "SELECT * FROM (SELECT d.image_id AS image_id, "
    f"CASE WHEN b.left IS NULL THEN d.uncertainty ELSE 1.0 - {_SQL_IOU} END AS score, "
    "CASE WHEN b.left IS NULL THEN d.reason ELSE 'disagrees_with_box' END AS why, "
    "d.left, d.top, d.right, d.bottom, d.score AS p, d.fallback, d.uncertainty AS unc, d.reason, "
    "b.left AS bl, b.top, b.right, b.bottom, "
    f"CASE WHEN b.left IS NULL THEN NULL ELSE {_SQL_IOU} END AS iou "
    "FROM detections AS d "
    "LEFT JOIN boxes AS b ON b.image_id = d.image_id AND b.left IS NOT NULL) "
    "WHERE (bl IS NULL AND unc IS NOT NULL) OR iou < ?"
)


def _review_item(row: Sequence[Any]) -> ReviewItem:
    detection = _detection((row[0], *row[3:11]))
    box = None if row[11] is None else Box(*row[11:15])
    iou = None if row[15] is None else float(row[15])
    return ReviewItem(row[0], float(row[1]), str(row[2]), detection, box, iou)


#: An image with its current box (tombstones excluded) and detection, as one row: the columns
#: :func:`_catalog_item` reads; ``i`` is the images row (a table or a page of it).
_ITEM_SELECT = (
    "SELECT i.id, i.path, i.width, i.height, i.sha256, "
    "b.left, b.top, b.right, b.bottom, b.version, b.updated_at, "
    "d.image_id, d.left, d.top, d.right, d.bottom, d.score, d.fallback, d.uncertainty, d.reason"
)
_ITEM_JOINS = (
    "LEFT JOIN boxes AS b ON b.image_id = i.id AND b.left IS NOT NULL "
    "LEFT JOIN detections AS d ON d.image_id = i.id"
)


def _catalog_item(row: Sequence[Any]) -> CatalogItem:
    image = ImageRecord(*row[:5])
    box = None if row[5] is None else StoredBox(image.id, Box(*row[5:9]), int(row[9]), row[10])
    return CatalogItem(image, box, None if row[11] is None else _detection(row[11:]))
