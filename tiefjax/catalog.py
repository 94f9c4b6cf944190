"""Register a folder of photos as a workspace catalog, and keep it in step with the folder.

``init_workspace`` is what ``tiefjax init WS --images DIR`` runs. Every photo directly inside the
folder becomes an image whose id is its file stem, with its upright size and a SHA-256 of its
bytes. Re-running it picks up added, changed and removed files. A file that cannot be used
(unreadable, corrupt or truncated, a name with control characters or undecodable bytes, a
symbolic link leading out of the folder, or a second file with the same stem) is reported with
the reason and skipped; it never stops the rest. Annotations survive whenever they can: an image
whose file became unreadable, or whose stem is now shared by a new file, keeps its earlier
registration (and box) until the problem is fixed.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from tiefjax.errors import InvalidInput, NotFound
from tiefjax.images import image_size, link_outside, list_image_files, load_rgb, prefetch
from tiefjax.settings import config_template
from tiefjax.store import ImageRecord, Store
from tiefjax.validate import id_problem
from tiefjax.workspace import Workspace

#: Store meta key remembering the images folder, so ``tiefjax init WS`` re-scans it.
IMAGES_DIR_KEY = "images_dir"
#: Decode at most this size when checking that a photo is readable (JPEG draft mode).
_CHECK_SIZE = (64, 64)


@dataclass(frozen=True)
class Skipped:
    """A file that was not registered (or not updated), and why."""

    path: str
    reason: str


@dataclass
class RegisterReport:
    """What one ``init_workspace`` run did to the catalog."""

    workspace: str
    images_dir: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # content changed (new hash)
    moved: list[str] = field(default_factory=list)  # same content, new path
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    #: (image id, reason) for boxes deleted because the photo's new size no longer holds them.
    dropped_boxes: list[tuple[str, str]] = field(default_factory=list)
    #: Boxes and triplets that went with removed images.
    removed_boxes: int = 0
    removed_triplets: int = 0
    total: int = 0

    def summary(self) -> str:
        """A few lines for people: counts, then every skipped file and every lost annotation."""
        lines = [
            f"catalog {self.workspace}: {self.total} images from {self.images_dir}",
            f"  added {len(self.added)}, changed {len(self.changed)}, moved {len(self.moved)}, "
            f"removed {len(self.removed)}, unchanged {self.unchanged}, "
            f"skipped {len(self.skipped)} file(s)",
        ]
        if self.removed and (self.removed_boxes or self.removed_triplets):
            lines.append(
                f"  removing images also deleted {self.removed_boxes} box(es) and "
                f"{self.removed_triplets} triplet(s)"
            )
        for image_id, reason in self.dropped_boxes:
            lines.append(f"  box of {image_id} deleted: {reason}")
        for skip in self.skipped:  # a name with a newline or undecodable bytes as repr()
            path = skip.path if id_problem(skip.path) is None else repr(skip.path)
            lines.append(f"  skipped {path}: {skip.reason}")
        return "\n".join(lines)


def _sha256(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def init_workspace(
    root: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None
) -> RegisterReport:
    """Create or refresh the workspace at ``root`` from the photos in ``images_dir``.

    ``images_dir`` defaults to the folder used last time. Writes the settings file (unless one
    exists), registers new photos, updates changed ones and removes vanished ones.
    """
    ws = Workspace(root)
    if images_dir is None:
        if not ws.exists():
            raise InvalidInput(
                f"{ws.root} is not a workspace yet; say where the photos are: "
                f"tiefjax init {ws.root} --images DIR"
            )
        with Store(ws.store_path) as store:
            remembered = store.get_meta(IMAGES_DIR_KEY)
        if remembered is None:
            raise InvalidInput(
                f"{ws.root} does not remember its images folder; "
                f"run tiefjax init {ws.root} --images DIR"
            )
        images_dir = remembered
    folder = Path(images_dir).expanduser().resolve()
    if not folder.is_dir():
        raise NotFound(f"images folder {folder} does not exist (or is not a folder)")
    files = list_image_files(folder)

    report = RegisterReport(workspace=str(ws.root), images_dir=str(folder))
    with ws.writing("the catalog"):
        ws.ensure_config(config_template())
        with Store(ws.store_path) as store:
            existing = {rec.id: rec for rec in store.list_images()}
            if not files and existing:
                raise InvalidInput(
                    f"{folder} holds no JPEG/PNG/WebP files; refusing to remove all "
                    f"{len(existing)} registered images and their annotations. Check --images "
                    "(the photos must be directly inside it)"
                )
            candidates = _pick_one_per_stem(files, existing, report)
            kept_ids = _register(store, candidates, existing, report)
            gone = sorted(set(existing) - kept_ids)
            if gone:
                boxes = store.boxes()
                report.removed_boxes = sum(1 for i in gone if i in boxes)
                gone_set = set(gone)
                report.removed_triplets = sum(
                    1
                    for t in store.list_triplets()
                    if gone_set & {t.reference, t.positive, t.negative}
                )
                store.remove_images(gone, by="init")
            report.removed = gone
            store.set_meta(IMAGES_DIR_KEY, str(folder))
            report.total = store.count_images()
    return report


def _pick_one_per_stem(
    files: list[Path], existing: dict[str, ImageRecord], report: RegisterReport
) -> list[Path]:
    """One file per id. For a shared stem, the already-registered file wins; else none does."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        by_stem[path.stem].append(path)
    chosen = []
    for stem, paths in sorted(by_stem.items()):
        if len(paths) == 1:
            chosen.append(paths[0])
            continue
        names = ", ".join(p.name for p in paths)
        registered = existing.get(stem)
        keep = next((p for p in paths if registered and str(p) == registered.path), None)
        for path in paths:
            if path == keep:
                continue
            if keep is not None:
                reason = (
                    f"same id {stem!r} as the registered {keep.name}; "
                    "rename this file to add it as another image"
                )
            else:
                reason = (
                    f"{len(paths)} files share the id {stem!r} ({names}); "
                    "rename or remove all but one"
                )
            report.skipped.append(Skipped(str(path), reason))
        if keep is not None:
            chosen.append(keep)
    return chosen


def _register(
    store: Store,
    files: list[Path],
    existing: dict[str, ImageRecord],
    report: RegisterReport,
) -> set[str]:
    """Hash (and, when new or changed, decode-check) ``files``; write records in batches.

    Returns the ids that stay registered, including ones kept from before despite a problem.
    """

    def inspect(path: Path) -> tuple[str, int, int]:
        problem = id_problem(path.stem)
        if problem is not None:
            raise InvalidInput(f"its name cannot be an image id: {problem}; rename the file")
        target = link_outside(path)
        if target is not None:
            raise InvalidInput(
                f"it is a link to {target}, outside {path.parent}; copy the photo into the "
                "folder instead"
            )
        data, digest = _sha256(path)
        old = existing.get(path.stem)
        if old is not None and old.sha256 == digest:
            return digest, old.width, old.height  # decoded and checked when it was registered
        width, height = image_size(data)
        load_rgb(data, target_size=_CHECK_SIZE, name=path.name)  # catches corrupt/truncated data
        return digest, width, height

    kept: set[str] = set()
    pending: list[ImageRecord] = []
    results = prefetch(inspect, files, workers=2, depth=16)
    for path, result in tqdm(results, total=len(files), desc="hashing", unit="img", disable=None):
        image_id = path.stem
        old = existing.get(image_id)
        if isinstance(result, BaseException):
            reason = _reason(result, path.name)
            if old is not None:
                reason += f"; keeping its earlier registration ({Path(old.path).name})"
                kept.add(image_id)
            report.skipped.append(Skipped(str(path), reason))
            continue
        digest, width, height = result
        rec = ImageRecord(image_id, str(path), width, height, digest)
        kept.add(image_id)
        if old is None:
            report.added.append(image_id)
        elif old == rec:
            report.unchanged += 1
            continue
        elif old.sha256 != digest:
            report.changed.append(image_id)
        else:
            report.moved.append(image_id)
        pending.append(rec)
        if len(pending) >= 500:
            _flush(store, pending, existing, report)
    _flush(store, pending, existing, report)
    return kept


def _flush(
    store: Store,
    pending: list[ImageRecord],
    existing: dict[str, ImageRecord],
    report: RegisterReport,
) -> None:
    """Write a batch of records; note boxes the store dropped because they no longer fit."""
    if not pending:
        return
    resized = [r for r in pending if r.id in existing and _size(existing[r.id]) != _size(r)]
    before = {r.id: store.get_box(r.id) for r in resized}
    store.upsert_images(pending)
    for rec in resized:
        if before[rec.id] is not None and store.get_box(rec.id) is None:
            old = existing[rec.id]
            report.dropped_boxes.append(
                (
                    rec.id,
                    f"the photo changed size from {old.width}x{old.height} to "
                    f"{rec.width}x{rec.height} and the box no longer fits; draw it again",
                )
            )
    pending.clear()


def _size(rec: ImageRecord) -> tuple[int, int]:
    return rec.width, rec.height


def _reason(err: BaseException, name: str) -> str:
    if isinstance(err, InvalidInput):
        text = str(err)
        for label in (f"{name}: ", "uploaded image: "):  # the report names the file already
            if text.startswith(label):
                return text[len(label) :]
        return text
    if isinstance(err, OSError) and err.errno is not None:
        return f"cannot read the file ({err.strerror or err})"
    if isinstance(err, OSError | SyntaxError | ValueError):  # raised by Pillow's decoders
        return f"the image data is corrupt or truncated ({err}); re-export or remove the file"
    return f"cannot use the file ({err.__class__.__name__}: {err})"
