"""Annotation history and annotators: who changed which box or triplet, and when.

Every write of a box or triplet (:class:`tiefjax.store.Store`) appends one :class:`Change` in the
same transaction as the write itself, so the history never misses a change nor lists one that was
rolled back. A change names its annotator: the name of the token a server request carried
(``tiefjax annotators WS --add NAME`` makes one), the server's own token's name (``[server]
token_annotator``, "owner" by default), or the command that wrote it (``import``, ``demo``;
``init`` when a re-scanned photo no longer fits its box, ``local`` for scripts using the
store directly).

Annotator tokens are stored as SHA-256 hashes only: the token is shown once, when it is made.
The functions here take the store's open connection inside its transaction; the store is the
only caller.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tiefjax.errors import Conflict, InvalidInput, NotFound

#: Actions a change records.
ACTIONS = ("box.saved", "box.accepted", "box.deleted", "triplet.added", "triplet.deleted")
#: Who wrote a change when no annotator token was involved (a script using the store).
LOCAL = "local"
#: Names the system itself records; no annotator token may take them.
RESERVED = frozenset({LOCAL, "import", "demo", "init", "owner"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
#: The most changes one history page returns.
PAGE_MAX = 500


@dataclass(frozen=True)
class Change:
    """One recorded change; ``detail`` holds the box (and the one before) or the triplet."""

    id: int
    at: str
    annotator: str
    action: str
    image_id: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "annotator": self.annotator,
            "action": self.action,
            "image": self.image_id,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Annotator:
    """A named token holder and how many changes the history holds under that name."""

    name: str
    created_at: str
    changes: int


def record(
    db: sqlite3.Connection,
    at: str,
    annotator: str,
    action: str,
    image_id: str,
    detail: Mapping[str, Any],
) -> None:
    """Append one change (inside the caller's write transaction)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown history action {action!r}")
    db.execute(
        "INSERT INTO history(at, annotator, action, image_id, detail) VALUES (?, ?, ?, ?, ?)",
        (at, annotator, action, image_id, json.dumps(detail, separators=(",", ":"))),
    )


def changes(
    db: sqlite3.Connection,
    image_id: str | None = None,
    annotator: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[Change], int | None]:
    """A page of changes, newest first, optionally of one image and/or one annotator, and the
    cursor of the next page (None: this is the last). ``before``: only changes older than that
    change id (a previous page's cursor)."""
    if not 1 <= limit <= PAGE_MAX:
        raise InvalidInput(f"a history page holds 1 to {PAGE_MAX} changes, got {limit}")
    where: list[str] = []
    params: list[str | int] = []
    for column, value in (("image_id", image_id), ("annotator", annotator)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    sql = "SELECT id, at, annotator, action, image_id, detail FROM history"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit + 1)).fetchall()
    page = [Change(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


def check_name(name: object, what: str = "annotator name", reserved: bool = True) -> str:
    """``name`` if it can name an annotator, else InvalidInput saying what is allowed;
    ``reserved``: also refuse the names tiefjax records itself."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{what} {name!r} is not allowed: use 1-40 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if reserved and name in RESERVED:
        raise InvalidInput(
            f"{name!r} is recorded by tiefjax itself ({', '.join(sorted(RESERVED))}); pick "
            "another annotator name"
        )
    return name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_annotator(db: sqlite3.Connection, name: str, at: str) -> str:
    """Make a token for a new annotator ``name`` and return it (only its hash is kept)."""
    check_name(name)
    if db.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone():
        raise Conflict(
            f"there is already an annotator {name!r}; remove it first (--remove {name}) to give "
            "it a new token"
        )
    token = secrets.token_urlsafe(24)
    db.execute(
        "INSERT INTO annotators(name, token_sha256, created_at) VALUES (?, ?, ?)",
        (name, token_hash(token), at),
    )
    return token


def remove_annotator(db: sqlite3.Connection, name: str) -> None:
    """Revoke ``name``'s token; the history keeps that name on its changes."""
    if db.execute("DELETE FROM annotators WHERE name = ?", (name,)).rowcount == 0:
        raise NotFound(f"there is no annotator {name!r} (tiefjax annotators WS lists them)")


def annotators(db: sqlite3.Connection) -> list[Annotator]:
    rows = db.execute(
        "SELECT a.name, a.created_at, "
        "(SELECT count(*) FROM history h WHERE h.annotator = a.name) "
        "FROM annotators a ORDER BY a.name"
    ).fetchall()
    return [Annotator(r[0], r[1], int(r[2])) for r in rows]


def annotator_of(db: sqlite3.Connection, token: str) -> str | None:
    """The annotator whose token this is, or None."""
    row = db.execute(
        "SELECT name FROM annotators WHERE token_sha256 = ?", (token_hash(token),)
    ).fetchone()
    return None if row is None else str(row[0])
