"""The rows of an index build as NumPy columns, memory-mapped: id <-> row without Python objects.

A build's rows list every indexed image (id, content hash, box, box source, probability). As JSON,
a million rows were 184 MiB to parse into millions of Python objects in every server process. A
:class:`RowTable` holds them as a handful of arrays (ids as one UTF-8 blob with end offsets,
64-bit id hashes sorted for lookup, content hashes as bytes, boxes, source codes, probabilities)
in the build's ``rows/`` folder, memory-mapped, so the server's processes share one copy in the
page cache. ``rows/`` is the only form a build writes; a build made before it existed has only
``rows.json``, converted once the first time it is opened. A :class:`Row` is made only for the
rows a request touches.

The table also keeps each row's JSON as a search hit shows it (``hit_blob``, ``hit_end``:
:func:`tiefjax.hit_members.hit_members`, about 100 bytes a row), rendered when the build is
written, so a similar-by-id answer is ten slices of a mapped blob joined with their scores. A
``rows/`` written before those columns existed gets them the first time it is opened for
serving (in memory where the build is read-only).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from tiefjax.hit_members import hit_members
from tiefjax.index.encode import Row

SOURCES = ("annotation", "detection", "whole")
COLUMNS = ("id_blob", "id_end", "id_hash", "id_order", "sha", "sha_order", "box", "source",
           "probability", "fallback", "hit_end", "hit_blob")  # fmt: skip
HIT_COLUMNS = COLUMNS[-2:]  # derived from the others; hit_blob.npy is written last
FOLDER = "rows"  # inside a build


def _id_hash(image_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little")


def served_array(path: Path) -> np.ndarray:
    """A read-only ``.npy`` that a server reads a little of per request: memory-mapped, as a
    plain ndarray view of the map (np.memmap's per-item indexing cost more than the rest of a
    similar-by-id request at 1M rows)."""
    return np.asarray(np.load(path, mmap_mode="r"))


def _blob(parts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings as one uint8 blob and their end offsets."""
    ends = np.cumsum([len(p) for p in parts], dtype=np.int64)
    return np.frombuffer(b"".join(parts), np.uint8), ends


def _hit_columns(ids: Iterable[str], boxes: np.ndarray, sources: np.ndarray) -> dict[str, Any]:
    """Each row's :func:`hit_members`, rendered once as one blob with end offsets."""
    parts = [
        hit_members(i, b, SOURCES[s])
        for i, b, s in zip(ids, boxes.tolist(), sources.tolist(), strict=True)
    ]
    blob, ends = _blob(parts)
    return {"hit_end": ends, "hit_blob": blob}


class RowTable:
    """Rows ``0..N-1`` of one build; positions are the index's row numbers."""

    def __init__(self, columns: dict[str, np.ndarray], folder: Path | None = None):
        self.c = columns
        self.folder = folder  # where every column is a file (None: some are in memory)
        self.ids = IdList(self)

    # -- making ----------------------------------------------------------------------------------
    @classmethod
    def from_rows(cls, rows: Sequence[Row], hits: bool = True) -> RowTable:
        return cls.from_columns(
            [r.id for r in rows],
            [r.sha256 for r in rows],
            np.array([r.box for r in rows], np.float64).reshape(len(rows), 4),
            [r.source for r in rows],
            np.array([np.nan if r.probability is None else r.probability for r in rows]),
            np.array([r.fallback for r in rows], bool),
            hits,
        )

    @classmethod
    def from_columns(
        cls,
        ids: Sequence[str],
        sha256: Sequence[str],
        boxes: np.ndarray,
        sources: Sequence[str],
        probability: np.ndarray,
        fallback: np.ndarray,
        hits: bool = True,
    ) -> RowTable:
        """A table from its columns (``probability`` NaN where there is none): how a caller
        with a million rows makes one without a million :class:`Row` objects. ``hits``: render
        the rows as search hits too (not for rows that are never served)."""
        n = len(ids)
        hashes = np.fromiter((_id_hash(i) for i in ids), np.uint64, n)
        sha = np.array([h.encode() for h in sha256], "S").reshape(n)
        id_blob, id_end = _blob([i.encode() for i in ids])
        source = np.array([SOURCES.index(s) for s in sources], np.uint8).reshape(n)
        boxes = np.asarray(boxes, np.float64).reshape(n, 4)
        return cls(
            {
                "id_blob": id_blob,
                "id_end": id_end,
                "id_hash": np.sort(hashes),
                "id_order": np.argsort(hashes, kind="stable"),
                "sha": sha,
                "sha_order": np.argsort(sha, kind="stable"),
                "box": boxes,
                "source": source,
                "probability": np.asarray(probability, np.float64).reshape(n),
                "fallback": np.asarray(fallback, bool).reshape(n),
                **(_hit_columns(ids, boxes, source) if hits else {}),
            }
        )

    @classmethod
    def open(cls, build: Path, hits: bool = True) -> RowTable:
        """The table of ``build``: memory-mapped from ``build/rows/``. An older build's
        ``rows.json`` is converted to it the first time (atomically; kept in memory where the
        build is read-only), and a ``rows/`` written before the hit columns existed gets them
        (the same way). ``hits=False``: without the hit columns, for reading rows only (a new
        build re-using the previous one's encodings)."""
        folder = build / FOLDER
        if (folder / "done").is_file():
            columns = {
                k: served_array(folder / f"{k}.npy") for k in COLUMNS if k not in HIT_COLUMNS
            }
            if not hits:
                return cls(columns)
            hit_columns, mapped = _hit_columns_of(folder)
            return cls(columns | hit_columns, folder if mapped else None)
        rows = [Row.from_json(r) for r in json.loads((build / "rows.json").read_text())]
        table = cls.from_rows(rows)
        del rows
        try:
            table.save(folder)
        except OSError:
            return table
        return cls.open(build)

    def save(self, folder: Path, replace: bool = False) -> None:
        """Write the columns under a temporary name, then rename: readers see all or nothing.
        ``replace``: a build writing its own rows replaces those of a killed attempt; otherwise
        a folder another process completed first is kept. A table opened from files is saved
        by copying them: read through its memory maps, the columns would stay resident in this
        process (a million rows: 0.25 GB, during an index build's peak)."""
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for k in (k for k in COLUMNS if k in self.c):  # hit columns only where rendered
                with open(tmp / f"{k}.npy", "wb") as f:
                    if self.folder is None:
                        np.save(f, self.c[k])
                    else:
                        with open(self.folder / f"{k}.npy", "rb") as source:
                            shutil.copyfileobj(source, f)
                    f.flush()
                    os.fsync(f.fileno())
            (tmp / "done").write_text("")
            if replace:
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (folder / "done").is_file():  # another process may have won the rename
                raise

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.c["id_end"])

    def id(self, pos: int) -> str:
        ends = self.c["id_end"]
        start = int(ends[pos - 1]) if pos > 0 else 0
        return self.c["id_blob"][start : int(ends[pos])].tobytes().decode()

    def ids_at(self, positions: np.ndarray) -> list[str]:
        """The ids of these rows, read in one go (a result's hits)."""
        return [b.decode() for b in self._slices("id", positions)]

    def hits_at(self, positions: np.ndarray) -> list[bytes]:
        """The JSON members (id, box, box_source) a search hit shows of these rows."""
        return self._slices("hit", positions)

    def _slices(self, name: str, positions: np.ndarray) -> list[bytes]:
        """Items of the ``{name}_blob`` column at these rows (each in ``0..N-1``): two indexes
        into the ends and a slice of the blob per row, without NumPy scalars."""
        positions = np.asarray(positions, np.int64)
        ends = self.c[f"{name}_end"]
        stop, start = ends[positions].tolist(), ends[positions - 1].tolist()
        blob = self.c[f"{name}_blob"].data
        return [
            blob[a if p else 0 : b].tobytes()
            for p, a, b in zip(positions.tolist(), start, stop, strict=True)
        ]

    def row(self, pos: int) -> Row:
        c = self.c
        prob = float(c["probability"][pos])
        return Row(
            self.id(pos),
            c["sha"][pos].decode(),
            tuple(c["box"][pos].tolist()),  # type: ignore[arg-type]
            SOURCES[int(c["source"][pos])],
            None if np.isnan(prob) else prob,
            bool(c["fallback"][pos]),
        )

    def position(self, image_id: Any) -> int | None:
        """The row of ``image_id``, or None."""
        if not isinstance(image_id, str):
            return None
        h = np.uint64(_id_hash(image_id))
        hashes, order = self.c["id_hash"], self.c["id_order"]
        i = int(hashes.searchsorted(h))
        while i < len(hashes) and hashes[i] == h:  # a second only when two ids share a hash
            if self.id(int(order[i])) == image_id:
                return int(order[i])
            i += 1
        return None

    def by_sha(self, sha256: str) -> int | None:
        """The (last) row whose photo has this content hash, or None."""
        key = np.bytes_(sha256.encode())
        sha, order = self.c["sha"], self.c["sha_order"]
        i = int(np.searchsorted(sha, key, "right", sorter=order)) - 1
        return int(order[i]) if i >= 0 and sha[order[i]] == key else None


def _hit_columns_of(folder: Path) -> tuple[dict[str, Any], bool]:
    """The hit columns of a ``rows/`` folder, and whether they are its files. A folder written
    before they existed gets them: rendered, each file written under a temporary name and
    renamed (``hit_blob.npy`` last); where the folder cannot be written they stay in memory."""
    if not (folder / "hit_blob.npy").is_file():
        table = RowTable({k: served_array(folder / f"{k}.npy") for k in ("id_blob", "id_end")})
        boxes, sources = (served_array(folder / f"{k}.npy") for k in ("box", "source"))
        columns = _hit_columns(iter(table.ids), boxes, sources)
        temporary = {k: folder / f".{k}.tmp-{os.getpid()}.npy" for k in HIT_COLUMNS}
        try:
            for k in HIT_COLUMNS:
                with open(temporary[k], "wb") as f:
                    np.save(f, columns[k])
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary[k], folder / f"{k}.npy")
        except OSError:
            for path in temporary.values():
                path.unlink(missing_ok=True)
            return columns, False
    return {k: served_array(folder / f"{k}.npy") for k in HIT_COLUMNS}, True


class IdList(Sequence[str]):
    """The ids of a table in row order, read on demand: a sequence (and equal to a tuple of the
    same ids) without N Python strings."""

    def __init__(self, table: RowTable):
        self._t = table

    def __len__(self) -> int:
        return len(self._t)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return self._t.ids_at(np.arange(*i.indices(len(self))))
        n = len(self)
        p = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= p < n:
            raise IndexError(i)
        return self._t.id(p)

    def __iter__(self) -> Iterator[str]:
        return (self._t.id(p) for p in range(len(self)))

    def __contains__(self, image_id: object) -> bool:
        return self._t.position(image_id) is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IdList({len(self)} ids)"
