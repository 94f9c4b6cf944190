"""The rows of an index build as NumPy columns, memory-mapped: id <-> row without Python objects.

A build's rows list every indexed image (id, content hash, box, box source, probability). As JSON,
a million rows were 184 MiB to parse into millions of Python objects in every server process. A
:class:`RowTable` holds them as a handful of arrays (ids as one UTF-8 blob with end offsets,
64-bit id hashes sorted for lookup, content hashes as bytes, boxes, source codes, probabilities)
in the build's ``rows/`` folder, memory-mapped, so the server's processes share one copy in the
page cache. ``rows/`` is the only form a build writes; a build made before it existed has only
``rows.json``, converted once the first time it is opened. A :class:`Row` is made only for the
rows a request touches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from tiefjax.index.encode import Row

SOURCES = ("annotation", "detection", "whole")
COLUMNS = ("id_blob", "id_end", "id_hash", "id_order", "sha", "sha_order", "box", "source",
           "probability", "fallback")  # fmt: skip
FOLDER = "rows"  # inside a build


def _id_hash(image_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little")


def served_array(path: Path) -> np.ndarray:
    """A read-only ``.npy`` that a server reads a little of per request: memory-mapped, as a
    plain ndarray view of the map (np.memmap's per-item indexing cost more than the rest of a
    similar-by-id request at 1M rows)."""
    return np.asarray(np.load(path, mmap_mode="r"))


class RowTable:
    """Rows ``0..N-1`` of one build; positions are the index's row numbers."""

    def __init__(self, columns: dict[str, np.ndarray]):
        self.c = columns
        self.ids = IdList(self)

    # -- making ----------------------------------------------------------------------------------
    @classmethod
    def from_rows(cls, rows: Sequence[Row]) -> RowTable:
        encoded = [r.id.encode() for r in rows]
        hashes = np.fromiter((_id_hash(r.id) for r in rows), np.uint64, len(rows))
        sha = np.array([r.sha256.encode() for r in rows], "S").reshape(len(rows))
        return cls(
            {
                "id_blob": np.frombuffer(b"".join(encoded), np.uint8),
                "id_end": np.cumsum([len(e) for e in encoded], dtype=np.int64),
                "id_hash": np.sort(hashes),
                "id_order": np.argsort(hashes, kind="stable"),
                "sha": sha,
                "sha_order": np.argsort(sha, kind="stable"),
                "box": np.array([r.box for r in rows], np.float64).reshape(len(rows), 4),
                "source": np.array([SOURCES.index(r.source) for r in rows], np.uint8),
                "probability": np.array(
                    [np.nan if r.probability is None else r.probability for r in rows], np.float64
                ),
                "fallback": np.array([r.fallback for r in rows], bool),
            }
        )

    @classmethod
    def open(cls, build: Path) -> RowTable:
        """The table of ``build``: memory-mapped from ``build/rows/``. An older build's
        ``rows.json`` is converted to it the first time (atomically; kept in memory where the
        build is read-only)."""
        folder = build / FOLDER
        if (folder / "done").is_file():
            return cls({k: served_array(folder / f"{k}.npy") for k in COLUMNS})
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
        a folder another process completed first is kept."""
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for k in COLUMNS:
                with open(tmp / f"{k}.npy", "wb") as f:
                    np.save(f, self.c[k])
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
        """The ids of these rows, read in one go (a result's hits): two indexes into the ends
        and a slice of the blob per id, without NumPy scalars."""
        positions = np.asarray(positions, np.int64)
        ends = self.c["id_end"]
        stop, start = ends[positions].tolist(), ends[positions - 1].tolist()
        blob = self.c["id_blob"].data
        return [
            blob[a if p else 0 : b].tobytes().decode()
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

    def boxes(self, positions: Sequence[int]) -> list[tuple[list[float], str]]:
        """(box, source) of these rows, read in one go (a search's hits)."""
        index = np.asarray(positions, np.int64)
        sources = [SOURCES[s] for s in self.c["source"][index].tolist()]
        return list(zip(self.c["box"][index].tolist(), sources, strict=True))

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
