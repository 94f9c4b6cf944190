"""``tiefjax export-site WS OUT``: the site plus precomputed data, for any static file host.

The gallery needs no server: catalog pages, every image's record and precomputed neighbours
(each mode), the images and their thumbnails are written as files whose JSON matches the API
answers (docs/api.md, "Static export"). The site notices ``static/manifest.js`` and reads those
instead of ``/api``; pages that need the server (upload search, editors) say so.

Each data file is a script, ``tiefjaxData(<JSON>);`` (:func:`write_data`), and the site loads it
with a ``<script>`` element over HTTP and from ``file://`` alike: a page opened from a file may
not ``fetch`` JSON but may load scripts, so one copy serves both (a JSON twin of every file
doubled the export's data).

Records and neighbours are grouped in shards (:func:`shard_of`, about ``SHARD_IMAGES`` images a
shard at most, however large the catalog): an image's page reads one small file of each kind,
never the whole catalog, and 100,000 images do not make 400,000 JSON files.

The export is built in a temporary folder next to ``OUT`` and renamed into place, so ``OUT`` is
either the previous export or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tiefjax.errors import InvalidInput, NotFound, TiefjaxError
from tiefjax.images import load_rgb
from tiefjax.server.app import catalog_changes, hits_json, image_item, index_summary, modes_of
from tiefjax.server.site import require_site_dir
from tiefjax.server.thumbs import image_path, thumbnail
from tiefjax.server.uploads import sniff
from tiefjax.site_bundle import bundle
from tiefjax.store import Store
from tiefjax.workspace import Workspace

PAGE_SIZE = 48
_FNV_OFFSET, _FNV_PRIME, _MASK64 = 0xCBF29CE484222325, 0x100000001B3, 2**64 - 1
K = 20
THUMB_SIZE = 256
SHARD_IMAGES = 64  # at most this many images a shard file holds on average


@dataclass
class ExportReport:
    """What an export wrote."""

    out: str
    images: int = 0
    pages: int = 0
    modes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "id: reason"
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        modes = ", ".join(self.modes) or "none (run tiefjax index first for similar images)"
        lines = [
            f"exported {self.images} images in {self.pages} pages to {self.out}",
            f"  {self.files} files, {self.bytes / 1e6:.1f} MB, in {self.seconds:.1f} s",
            f"similar images: {modes}",
        ]
        lines += [f"  skipped {s}" for s in self.skipped]
        lines.append(
            f"open {Path(self.out) / 'index.html'} in a browser, or serve it: "
            f"python -m http.server -d {self.out}"
        )
        return "\n".join(lines)


def static_key(image_id: str) -> str:
    """The file-name key of an id: its 64-bit FNV-1a hash over UTF-8, as 16 hex digits.

    Short and safe on every file system whatever the id (a percent-encoded id of 100 x ``é`` is
    600 bytes, over the usual 255-byte limit); the id itself stays in the JSON. The site
    computes the same key (``staticKey`` in ``site/js/api.js``).
    """
    key = _FNV_OFFSET
    for byte in image_id.encode("utf-8"):
        key = ((key ^ byte) * _FNV_PRIME) & _MASK64
    return f"{key:016x}"


def _check_keys(ids: list[str]) -> None:
    """InvalidInput when two ids share a key (about one chance in 10^7 for a million ids)."""
    seen: dict[str, str] = {}
    for image_id in ids:
        other = seen.setdefault(static_key(image_id), image_id)
        if other != image_id:
            raise InvalidInput(
                f"images {other!r} and {image_id!r} would share the export file name "
                f"{static_key(image_id)}; rename one of the photos and run tiefjax init again"
            )


def shard_digits(total: int) -> int:
    """How many leading hex digits of a key name its shard: the fewest (at least 1) that keep
    shards at ``SHARD_IMAGES`` images or fewer on average."""
    digits = 1
    while total > SHARD_IMAGES * 16**digits:
        digits += 1
    return digits


def shard_of(key: str, digits: int) -> str:
    """The shard of a :func:`static_key`: the first ``digits`` hex digits of the key put
    through MurmurHash3's 64-bit finaliser. FNV-1a's own leading digits barely change with an
    id's last characters (``img-001``, ``img-002`` ... share them); the finaliser spreads every
    bit. The site computes the same (``staticShardOf`` in ``site/js/api.js``)."""
    k = int(key, 16)
    for mult in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        k = ((k ^ (k >> 33)) * mult) & _MASK64
    return f"{k ^ (k >> 33):016x}"[:digits]


DATA_PREFIX, DATA_SUFFIX = "tiefjaxData(", ");\n"


def write_data(path: Path, value: Any) -> None:
    """``path`` (``x.js``): ``value`` as JSON wrapped in ``tiefjaxData(...);``, the one form of
    an export's data (the module docstring says why)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, separators=(",", ":"))
    path.write_text(f"{DATA_PREFIX}{text}{DATA_SUFFIX}", encoding="utf-8")


def read_data(path: Path) -> Any:
    """The JSON value of an export's data file ``path``, for scripts that read an export."""
    text = path.read_text(encoding="utf-8")
    if not (text.startswith(DATA_PREFIX) and text.endswith(DATA_SUFFIX)):
        raise InvalidInput(f"{path} is not a tiefjax export data file; export the site again")
    return json.loads(text[len(DATA_PREFIX) : -len(DATA_SUFFIX)])


def _use_bundle(root: Path) -> None:
    """Point the exported index.html at one classic script (ES modules do not load from
    ``file://``)."""
    (root / "js" / "bundle.js").write_text(bundle(root / "js"), encoding="utf-8")
    page = root / "index.html"
    html = page.read_text(encoding="utf-8")
    module = '<script type="module" src="js/app.js"></script>'
    if module not in html:
        raise InvalidInput(f"{page} does not load js/app.js as {module}; cannot export it")
    page.write_text(html.replace(module, '<script defer src="js/bundle.js"></script>'), "utf-8")


def _check_out(out: Path, ws: Workspace, site: Path) -> None:
    for protected in (ws.root, site, Path.cwd().resolve()):
        if out == protected or protected.is_relative_to(out):
            raise InvalidInput(f"{out} would replace {protected}; export into a new folder")
    if out.is_relative_to(site):
        raise InvalidInput(f"{out} is inside the site folder {site}; export somewhere else")
    if out.exists():
        if not out.is_dir():
            raise InvalidInput(f"{out} exists and is not a folder; choose another OUT")
        # manifest.json: an export made before the data files became scripts
        is_export = any((out / "static" / f"manifest.{x}").is_file() for x in ("js", "json"))
        if any(out.iterdir()) and not is_export:
            raise InvalidInput(
                f"{out} is not empty and not an earlier tiefjax export; refusing to replace it. "
                "Choose a new or empty folder"
            )


def export_site(
    ws: Workspace | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    searcher: Any = None,
    page_size: int = PAGE_SIZE,
    k: int = K,
    thumb_size: int = THUMB_SIZE,
    workers: int = 2,
    site_dir: str | os.PathLike[str] | None = None,
) -> ExportReport:
    """Write the static site for workspace ``ws`` to ``out`` (replacing an earlier export)."""
    started = time.perf_counter()
    ws = (ws if isinstance(ws, Workspace) else Workspace(ws)).require()
    site = Path(site_dir).resolve() if site_dir else require_site_dir()
    out = Path(out).expanduser().resolve()
    _check_out(out, ws, site)
    if searcher is None:
        from tiefjax.search import Searcher

        try:
            searcher = Searcher.load(ws)
        except NotFound:
            searcher = None
    modes = modes_of(searcher) if searcher is not None else []
    report = ExportReport(out=str(out), modes=modes)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copytree(site, tmp, dirs_exist_ok=True)
        _use_bundle(tmp)
        static = tmp / "static"
        with Store(ws.store_path) as store:
            records = store.list_images()
            _check_keys([r.id for r in records])
            boxes = store.boxes()
            detections = store.detections()
            counts = store.stats()
        items = [image_item(r, boxes.get(r.id), detections.get(r.id)) for r in records]
        digits = shard_digits(len(items))
        shards: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            shards.setdefault(shard_of(static_key(item["id"]), digits), []).append(item)
        for shard, members in shards.items():
            write_data(static / "records" / f"{shard}.js", {m["id"]: m for m in members})
        report.pages = max(1, -(-len(items) // page_size))
        for n in range(report.pages):
            chunk = items[n * page_size : (n + 1) * page_size]
            # "next": the API's cursor for the following page (this page's last id; None last)
            page = {
                "total": len(items),
                "offset": n * page_size,
                "limit": page_size,
                "next": chunk[-1]["id"] if n + 1 < report.pages else None,
            }
            write_data(static / "pages" / f"{n}.js", {**page, "images": chunk})

        for mode in modes:
            bar = tqdm(total=len(items), desc=f"neighbours ({mode})", unit="img", disable=None)
            with bar:
                for shard, members in shards.items():
                    similar = {m["id"]: _similar(searcher, m["id"], k, mode) for m in members}
                    write_data(static / "similar" / mode / f"{shard}.js", similar)
                    bar.update(len(members))

        (static / "images").mkdir(parents=True, exist_ok=True)
        (static / "thumbs").mkdir(parents=True, exist_ok=True)
        copy = _copier(ws, static, thumb_size)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = pool.map(copy, records)
            for rec, problem in tqdm(
                zip(records, results, strict=True),
                total=len(records),
                desc="images",
                unit="img",
                disable=None,
            ):
                if problem:
                    report.skipped.append(f"{rec.id}: {problem}")
                else:
                    report.images += 1

        # as /api/stats answers: staleness against the catalog exported included
        ids = [r.id for r in records]
        index = index_summary(searcher, lambda info: catalog_changes(searcher, info, ids, ws.root))
        write_data(static / "stats.js", {**counts, "index": index})
        manifest = {
            "static": True,
            "total": len(items),
            "page_size": page_size,
            "modes": modes,
            "k": k,
            "shard_digits": digits,
        }
        write_data(static / "manifest.js", manifest)
        sizes = [p.stat().st_size for p in tmp.rglob("*") if p.is_file()]
        report.files, report.bytes = len(sizes), sum(sizes)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.seconds = time.perf_counter() - started
    return report


def _similar(searcher: Any, image_id: str, k: int, mode: str) -> dict[str, Any]:
    """What GET /api/images/{id}/similar?k=K&mode=MODE answers."""
    try:
        hits = hits_json(searcher.neighbours(image_id, k, mode)[:k], searcher)
    except NotFound:
        hits = []  # registered after the index was built
    return {"id": image_id, "mode": mode, "hits": hits}


def _copier(ws: Workspace, static: Path, thumb_size: int) -> Callable[[Any], str | None]:
    def copy(rec: Any) -> str | None:
        key = static_key(rec.id)
        try:
            source = image_path(ws, rec)
            with source.open("rb") as f:
                is_jpeg = sniff(f.read(16)) == "jpeg"
            target = static / "images" / f"{key}.jpg"
            if is_jpeg:
                shutil.copyfile(source, target)
            else:
                load_rgb(source, name=rec.id).save(target, "JPEG", quality=90)
            shutil.copyfile(thumbnail(ws, rec, thumb_size), static / "thumbs" / f"{key}.jpg")
        except TiefjaxError as err:
            return str(err)
        return None

    return copy


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished export over ``out``; an earlier export is removed afterwards."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a web server must read it
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
