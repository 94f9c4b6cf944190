"""``tiefjax score``: new photos against the catalog, one JSON line per photo.

Streaming (a batch of photos in memory at a time, every line flushed as written), resumable
(ids already in the output are skipped; a half-written last line from a crash is dropped) and
robust (a photo that cannot be read becomes ``{"id": ..., "error": ...}``, not a crash).

Line format::

    {"id": "photo1", "file": "/path/photo1.jpg", "box": [l, t, r, b], "box_source": "detection",
     "probability": 0.97, "fallback": false,
     "unsupervised": [{"id": "catalog-id", "score": 0.83}, ...], "supervised": [...]}
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tiefjax import distributed
from tiefjax.errors import InvalidInput, TiefjaxError
from tiefjax.images import IMAGE_SUFFIXES, list_image_files, prefetch
from tiefjax.index.build import MODES
from tiefjax.workspace import Workspace


@dataclass
class ScoreReport:
    out: str
    scored: int = 0
    errors: int = 0
    skipped: int = 0  # already in the output (resumed)
    modes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"scored {self.scored} photo(s) ({', '.join(self.modes)}), {self.errors} error(s), "
            f"{self.skipped} already in {self.out}"
        )


def input_files(inputs: str | os.PathLike[str]) -> list[Path]:
    """Image files of a folder, a glob pattern or a single file, sorted."""
    text = str(inputs)
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = list_image_files(path)
    elif glob.has_magic(text):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        files = [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        raise InvalidInput(f"{inputs}: no such folder, file or glob pattern")
    if not files:
        raise InvalidInput(
            f"{inputs}: no photos found (looked for {', '.join(IMAGE_SUFFIXES)} files); "
            "check the folder or quote the glob pattern"
        )
    return files


def done_ids(out: Path) -> set[str]:
    """Ids already in ``out``; truncates a partial last line (a crash mid-write) in place."""
    ids: set[str] = set()
    if not out.exists():
        return ids
    good = 0
    with open(out, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                break
            if isinstance(record, dict) and "id" in record:
                ids.add(str(record["id"]))
            good += len(line)
    if good < out.stat().st_size:
        with open(out, "r+b") as fh:
            fh.truncate(good)
    return ids


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def score(
    ws: Workspace | str | os.PathLike[str],
    inputs: str | os.PathLike[str],
    out_jsonl: str | os.PathLike[str],
    k: int = 10,
    modes: tuple[str, ...] | None = None,
    progress: bool = True,
    searcher=None,
) -> ScoreReport:
    """Score every photo of ``inputs`` (folder, glob or file) into ``out_jsonl`` (appending).

    ``modes`` defaults to every mode the index has (unsupervised, plus supervised when the
    ranking net was trained). In a multi-process run each process scores its share of the
    photos into its own part file (``OUT.part-I-of-N``); after a barrier process 0 appends the
    parts to ``out_jsonl``.
    """
    from tqdm import tqdm

    from tiefjax.search import Searcher

    distributed.start()  # a multi-process script joins before anything touches JAX
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    searcher = searcher or Searcher.load(ws)
    modes = tuple(modes or searcher.modes)
    for m in modes:
        if m not in MODES:
            raise InvalidInput(f"unknown search mode {m!r}; use one of {', '.join(MODES)}")
    out = Path(out_jsonl)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = input_files(inputs)
    count = distributed.process_count()
    parts = [out.with_name(f"{out.name}.part-{p}-of-{count}") for p in range(count)]
    if distributed.process_index() == 0:
        done_ids(out)  # drops a half-written last line before anyone reads the file
        _append_parts(out, parts)  # a killed earlier run's finished lines
    distributed.barrier("score-resumed")
    seen = done_ids(out)
    report = ScoreReport(str(out), modes=list(modes))
    todo: list[Path] = []
    for f in files:
        if f.stem in seen:
            report.skipped += 1
        else:
            seen.add(f.stem)  # a second file with the same id is skipped too
            todo.append(f)
    if count > 1:
        todo, out = distributed.shard(todo), parts[distributed.process_index()]
    batch = max(1, searcher.config.batch_size)

    def prepare(path: Path):
        return searcher.prepare(path)

    bar = tqdm(total=len(todo), desc="score", unit="img", disable=None if progress else True)
    with open(out, "a", encoding="utf-8") as fh:
        try:
            stream = prefetch(prepare, todo, searcher.config.workers, 2 * batch)
            for chunk in _chunks(stream, batch):
                queries = []
                for path, value in chunk:
                    if isinstance(value, TiefjaxError):
                        _write(fh, {"id": path.stem, "file": str(path), "error": str(value)})
                        report.errors += 1
                    elif isinstance(value, BaseException):
                        message = f"{value.__class__.__name__}: {value}"
                        _write(fh, {"id": path.stem, "file": str(path), "error": message})
                        report.errors += 1
                    else:
                        queries.append((path, value))
                results = (
                    searcher.search_modes([q for _, q in queries], k, modes, errors="return")
                    if queries
                    else []
                )
                for (path, _), res in zip(queries, results, strict=True):
                    if isinstance(res, TiefjaxError):
                        _write(fh, {"id": path.stem, "file": str(path), "error": str(res)})
                        report.errors += 1
                        continue
                    first = res[modes[0]]
                    record = {
                        "id": path.stem,
                        "file": str(path),
                        "box": [round(float(v), 2) for v in first.box],
                        "box_source": first.box_source,
                        "probability": first.probability,
                        "fallback": first.fallback,
                    }
                    if first.query_id is not None:
                        record["catalog_id"] = first.query_id
                    copies = [res[m] for m in modes if res[m].copy_of is not None]
                    if copies:  # the copy check found the catalog photo this one copies
                        best = max(copies, key=lambda r: r.copy_score or 0.0)
                        record["copy_of"] = best.copy_of
                        record["copy_score"] = round(best.copy_score or 0.0, 4)
                    for m in modes:
                        record[m] = [{"id": h.id, "score": round(h.score, 6)} for h in res[m].hits]
                    _write(fh, record)
                    report.scored += 1
                bar.update(len(chunk))
        finally:
            bar.close()
    if count > 1:
        distributed.barrier("score-scored")
        if distributed.process_index() == 0:
            _append_parts(Path(out_jsonl), parts)
        distributed.barrier("score-merged")
    if report.errors:
        print(f"tiefjax score: {report.errors} photo(s) could not be scored", file=sys.stderr)
    return report


def _append_parts(out: Path, parts: list[Path]) -> None:
    """Append the complete lines of every part file to ``out`` (those not there yet), flush
    them to disk, then remove the parts."""
    seen = done_ids(out)
    with open(out, "a", encoding="utf-8") as fh:
        for part in parts:
            if not part.exists():
                continue
            done_ids(part)  # a killed process's half-written last line
            for line in part.read_text(encoding="utf-8").splitlines():
                record_id = str(json.loads(line)["id"])
                if record_id not in seen:
                    seen.add(record_id)
                    fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    for part in parts:
        part.unlink(missing_ok=True)


def _write(fh, record: dict) -> None:
    fh.write(json.dumps(record) + "\n")
    fh.flush()
