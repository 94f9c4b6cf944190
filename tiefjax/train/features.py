"""Frozen-encoder feature cache: encode every crop of a split once, train the heads on features.

With the encoder frozen (the default), a training step only needs the 11x11x256 feature map of
each crop, so every split is encoded once and kept under ``ws.cache_dir/features`` as memory-mapped
``.npy`` files (float16, half the disk of float32; heads compute in float32). The folder name
carries a key of the encoder's weights and the prepared data, so new weights or a re-prepared
dataset get new features while unchanged ones are reused. Folders are written under a temporary
name and renamed when complete: an interrupted encoding leaves nothing that gets read.

Features go to disk as they are computed (:class:`_RowFile`, one ``.npy`` per process part,
filled batch by batch) and are read back memory-mapped, so memory stays flat however many crops
a split holds (``scripts/bench/scale.py`` measures 200,000).

Images are content-addressed: an identical crop is encoded once, however many triplets or sets
use it (the regression crops are the classifier's foreground crops, so whichever head trains
second reuses the first one's features).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from tiefjax import distributed
from tiefjax.errors import InvalidInput, TiefjaxError
from tiefjax.images import prefetch
from tiefjax.workspace import Workspace, atomic_write_text

FEATURE_DTYPE = np.float16
FEATURE_ITEMSIZE = np.dtype(FEATURE_DTYPE).itemsize
IMAGE_KEYS = ("image", "reference", "positive", "negative")
CACHE_VERSION = 1
ENCODE_BATCH = 32


class FeatureSource:
    """Random-access examples whose image fields are rows of one feature array.

    ``columns[key][i]`` is the row of ``features`` holding field ``key`` of example ``i``;
    ``extras[key][i]`` are the other numeric fields (``label``, ``target``).
    """

    def __init__(
        self,
        features: np.ndarray,
        columns: Mapping[str, np.ndarray],
        extras: Mapping[str, np.ndarray] | None = None,
    ):
        self.features = features
        self.columns = {k: np.asarray(v, np.int64) for k, v in columns.items()}
        self.extras = dict(extras or {})
        lengths = {len(v) for v in [*self.columns.values(), *self.extras.values()]}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {lengths}")
        self._n = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < self._n:
            raise IndexError(index)
        out = {k: np.asarray(self.features[rows[index]]) for k, rows in self.columns.items()}
        out.update({k: v[index] for k, v in self.extras.items()})
        return out


def params_fingerprint(params: Any) -> str:
    """A short hash of a parameter pytree's shapes and values."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{arr.dtype}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def dataset_fingerprint(ws: Workspace, dataset: str, split: str, src: Any) -> str:
    """What the prepared split is: the source's own ``fingerprint`` or the prepared build's id
    when there is one, else the names, sizes and modification times of ``dataset``'s files."""
    own = getattr(src, "fingerprint", None)
    if not own:
        try:
            from tiefjax.prepare import prepared_state

            own = prepared_state(ws).get("build")  # changes whenever the sets are rebuilt
        except (ImportError, TiefjaxError):
            own = None
    if isinstance(own, str) and own:
        return hashlib.sha256(f"{own}:{dataset}:{split}:{len(src)}".encode()).hexdigest()[:16]
    h = hashlib.sha256(f"{dataset}:{split}:{len(src)}".encode())
    root = ws.datasets_dir
    if root.exists():
        for p in sorted(root.rglob("*")):
            if p.is_file() and dataset in str(p.relative_to(root)):
                st = p.stat()
                h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


#: ``encode(params, uint8 batch) -> feature maps`` of any number of rows.
EncodeFn = Callable[[Any, np.ndarray], Any]


def default_encode_fn(params: Any, dtype: Any = np.float32, mirror: bool = False) -> EncodeFn:
    """The encoder of ``params`` on every local device (:func:`tiefjax.models.make_encoder`);
    ``mirror``: its mirror-invariant maps (what the index encodes with ``[index] mirror``)."""
    from tiefjax.models import make_encoder

    encoder = make_encoder(params, dtype, cap=ENCODE_BATCH, mirror=mirror)
    return lambda _params, batch: encoder(batch)


def pixel_key(pixels: np.ndarray) -> bytes:
    """Content address of an image: identical crops share one feature row, across sets too."""
    h = hashlib.sha1(f"{pixels.shape}".encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.digest()


Reuse = Callable[[bytes], np.ndarray | None]


class _RowFile:
    """A ``.npy`` of feature rows written as they are computed, in any order of rows.

    Rows go straight to the file (``os.pwrite`` after a 4,096-byte header); the header, which
    must name the row count, is written when the file is closed. The npy format allows any
    header padded to a multiple of 64 bytes, so no row is ever copied or held back in memory.
    """

    HEADER = 4096

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self.rows = 0
        self.row_shape: tuple[int, ...] | None = None

    def put(self, row: int, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, FEATURE_DTYPE)
        if self.row_shape is None:
            self.row_shape = data.shape
        elif data.shape != self.row_shape:
            raise InvalidInput(f"encoder gave rows of shape {self.row_shape}, then {data.shape}")
        os.pwrite(self.fd, data.tobytes(), self.HEADER + row * data.nbytes)
        self.rows = max(self.rows, row + 1)

    def close(self) -> None:
        """Write the header naming the final shape, flush to disk and close."""
        shape = (self.rows, *self.row_shape) if self.row_shape is not None else (0,)
        os.pwrite(self.fd, _npy_header(shape, self.HEADER), 0)
        os.ftruncate(self.fd, self.HEADER + int(np.prod(shape)) * FEATURE_ITEMSIZE)
        os.fsync(self.fd)
        os.close(self.fd)


def _npy_header(shape: tuple[int, ...], size: int) -> bytes:
    """An npy 1.0 header of ``size`` bytes for a C-order ``FEATURE_DTYPE`` array of ``shape``."""
    fmt = np.lib.format
    descr = fmt.dtype_to_descr(np.dtype(FEATURE_DTYPE))
    body = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    magic = fmt.magic(1, 0)
    pad = size - len(magic) - 2 - len(body) - 1
    return magic + (len(body) + pad + 1).to_bytes(2, "little") + body + b" " * pad + b"\n"


def encode_source(
    src: Any,
    params: Any,
    *,
    out: Path,
    encode: EncodeFn,
    mirror_triplets: bool = False,
    batch_size: int = ENCODE_BATCH,
    reuse: Reuse | None = None,
    desc: str = "encode",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Encode every image field of ``src`` into the ``.npy`` file ``out`` (rows written as each
    batch is computed) -> ``(columns, extras, keys)``.

    Identical images (by content) are encoded once; ``reuse(key)`` may return features already
    computed elsewhere (another set's cache) instead. ``keys`` are the rows' content addresses.
    ``mirror_triplets`` appends, for every triplet, ``(reference, mirrored reference, negative)``.
    """
    n = len(src)
    rows: dict[bytes, int] = {}
    done = _RowFile(out)
    pending: list[tuple[int, np.ndarray]] = []
    columns: dict[str, list[int]] = {}
    extras: dict[str, list[Any]] = {}
    mirrored: list[tuple[int, int, int]] = []
    encoded = 0

    def flush(final: bool = False) -> None:
        nonlocal encoded
        while len(pending) >= batch_size or (final and pending):
            take = pending[:batch_size]
            del pending[:batch_size]
            batch = np.stack([px for _, px in take])
            fmap = np.asarray(encode(params, batch)).astype(FEATURE_DTYPE)
            for j, (row, _) in enumerate(take):
                done.put(row, fmap[j])
            encoded += len(take)

    def row_of(pixels: np.ndarray) -> int:
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise InvalidInput(f"expected uint8 HxWx3 images, got {pixels.dtype} {pixels.shape}")
        key = pixel_key(pixels)
        if key not in rows:
            row = rows[key] = len(rows)
            known = reuse(key) if reuse is not None else None
            if known is not None:
                done.put(row, known)
            else:
                pending.append((row, pixels))
                if len(pending) >= batch_size:
                    flush()
        return rows[key]

    bar = tqdm(total=n, desc=desc, disable=None, leave=False, file=sys.stderr)
    with bar, contextlib.closing(done):
        for _, ex in prefetch(lambda i: src[i], range(n), workers=2, depth=64):
            if isinstance(ex, BaseException):
                raise ex
            for k, v in ex.items():
                if k in IMAGE_KEYS:
                    columns.setdefault(k, []).append(row_of(v))
                elif isinstance(v, np.ndarray | np.number | int | float) and not isinstance(
                    v, bool
                ):
                    extras.setdefault(k, []).append(np.asarray(v))
            if mirror_triplets and {"reference", "negative"} <= ex.keys():
                flipped = row_of(np.asarray(ex["reference"])[:, ::-1])
                mirrored.append((columns["reference"][-1], flipped, columns["negative"][-1]))
            bar.update(1)
            bar.set_postfix(encoded=encoded, refresh=False)
        flush(final=True)
    if not rows:
        raise InvalidInput("nothing to encode: the split has no images")
    keys = np.array(list(rows), dtype="S20")
    cols = {k: np.asarray(v, np.int64) for k, v in columns.items()}
    ext = {k: np.stack(v) for k, v in extras.items()}
    if mirrored:
        m = np.asarray(mirrored, np.int64)
        for j, k in enumerate(("reference", "positive", "negative")):
            cols[k] = np.concatenate([cols[k], m[:, j]])
        cols = {k: v for k, v in cols.items() if k in ("reference", "positive", "negative")}
        ext = {k: np.concatenate([v, v]) for k, v in ext.items()}
    return cols, ext, keys


def _reuse_from(cache_root: Path, encoder_fp: str, skip: Path) -> Reuse:
    """Look up features by content address in the other complete caches of the same encoder."""
    index: dict[bytes, tuple[Path, int]] = {}
    for folder in sorted(cache_root.glob("*-*")) if cache_root.exists() else []:
        if folder == skip or folder.name.startswith(".") or not (folder / "keys.npy").exists():
            continue
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta.get("encoder") != encoder_fp:
                continue
            for row, key in enumerate(np.load(folder / "keys.npy")):
                index.setdefault(bytes(key), (folder, row))
        except (OSError, ValueError):
            continue
    arrays: dict[Path, np.ndarray] = {}

    def reuse(key: bytes) -> np.ndarray | None:
        hit = index.get(key)
        if hit is None:
            return None
        folder, row = hit
        if folder not in arrays:
            arrays[folder] = np.load(folder / "features.npy", mmap_mode="r")
        return np.array(arrays[folder][row])

    return reuse


def cached_features(
    src: Any,
    params: Any,
    *,
    cache_root: str | os.PathLike[str],
    name: str,
    fingerprint: str,
    encode: EncodeFn | None = None,
    mirror_triplets: bool = False,
    mirror_invariant: bool = False,
    dtype: Any = np.float32,
) -> FeatureSource:
    """Features of ``src`` from ``cache_root/<name>-<key>``, encoding them first when missing.

    ``key`` hashes the encoder ``params``, the data ``fingerprint``, the compute ``dtype`` and
    the options; older folders of the same ``name`` are removed once a new one is complete.
    ``mirror_invariant``: the default encoder makes mirror-invariant maps (rows are then only
    re-used from caches made so too). Several processes encode a part each
    (:func:`_encode_in_parts`).
    """
    cache_root = Path(cache_root)
    encoder_fp = params_fingerprint(params) + ("+mirror" if mirror_invariant else "")
    ident = {
        "version": CACHE_VERSION,
        "encoder": encoder_fp,
        "data": fingerprint,
        "mirror_triplets": mirror_triplets,
        "dtype": np.dtype(FEATURE_DTYPE).name,
        "compute_dtype": np.dtype(dtype).name,
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root / f"{name}-{key}"
    if not (folder / "meta.json").exists():
        encode_args = {
            "params": params,
            "encode": encode or default_encode_fn(params, dtype, mirror_invariant),
            "mirror_triplets": mirror_triplets,
            "reuse": _reuse_from(cache_root, encoder_fp, folder),
            "desc": f"encode {name}",
        }
        if distributed.process_count() == 1:
            meta = {**ident, "examples": len(src)}
            _save(folder, meta, lambda out: encode_source(src, out=out, **encode_args))
        else:
            _encode_in_parts(src, folder, ident, encode_args)
        if distributed.process_index() == 0:
            for old in [*cache_root.glob(f"{name}-*"), *cache_root.glob(f".{name}-*.tmp-*")]:
                if old != folder and old.is_dir():  # older caches, killed encodes' leftovers
                    shutil.rmtree(old, ignore_errors=True)
        distributed.barrier(f"features-{name}-{key}-ready")
    features, cols, ext, _ = _load(folder)
    return FeatureSource(features, cols, ext)


Encoded = tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]
#: ``write(features_path) -> (columns, extras, keys)``, the features written to the path.
Writer = Callable[[Path], tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]]


def _save(folder: Path, meta: dict[str, Any], write: Writer) -> None:
    """One encoded cache folder, written under a temporary name and renamed when complete
    (``meta.json`` last): a killed encode leaves only a ``.tmp`` folder, never read."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        cols, ext, keys = write(tmp / "features.npy")
        np.save(tmp / "keys.npy", keys)
        for k, v in cols.items():
            np.save(tmp / f"col_{k}.npy", v)
        for k, v in ext.items():
            np.save(tmp / f"extra_{k}.npy", v)
        atomic_write_text(tmp / "meta.json", json.dumps(meta) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _load(folder: Path) -> Encoded:
    return (
        np.load(folder / "features.npy", mmap_mode="r"),
        {p.stem[4:]: np.load(p) for p in folder.glob("col_*.npy")},
        {p.stem[6:]: np.load(p) for p in folder.glob("extra_*.npy")},
        np.load(folder / "keys.npy"),
    )


class _Range:
    """Examples ``lo..hi`` of a source."""

    def __init__(self, src: Any, lo: int, hi: int):
        self.src, self.lo, self.n = src, lo, max(0, hi - lo)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.src[self.lo + i]


def _encode_in_parts(
    src: Any, folder: Path, ident: dict[str, Any], encode_args: dict[str, Any]
) -> None:
    """Several processes: each encodes its contiguous range of examples into its own part folder
    (atomic), then process 0 merges the parts into ``folder`` in example order, exactly the
    folder one process would have written (mirrored triplets after all others)."""
    me, count = distributed.process_index(), distributed.process_count()
    bounds = [len(src) * p // count for p in range(count + 1)]
    part_dir = lambda p: folder.with_name(f".{folder.name}.part-{p}-of-{count}")  # noqa: E731
    mine = part_dir(me)
    if not (mine / "meta.json").exists():
        part = _Range(src, bounds[me], bounds[me + 1])

        def write(out: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
            if len(part):
                return encode_source(part, out=out, **encode_args)
            np.save(out, np.zeros((0,), FEATURE_DTYPE))
            return {}, {}, np.zeros((0,), "S20")

        _save(mine, {**ident, "examples": len(part)}, write)
    distributed.barrier(f"features-{folder.name}-parts")
    if me == 0:
        parts = [_load(part_dir(p)) for p in range(count)]
        meta = {**ident, "examples": len(src)}
        _save(folder, meta, lambda out: _merge(parts, np.diff(bounds), out))
        for p in range(count):
            shutil.rmtree(part_dir(p), ignore_errors=True)


def _merge(
    parts: list[Encoded], examples: Any, out: Path
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Concatenate encoded parts: their feature files' bytes into the ``.npy`` file ``out``
    (copied file to file, never mapped); per-example columns in example order, feature rows
    offset per part, rows past a part's ``examples`` (its mirrored triplets) after every part's
    own."""
    sized = [(p, int(n)) for p, n in zip(parts, examples, strict=True) if len(p[0])]
    offsets = np.cumsum([0] + [len(p[0]) for p, _ in sized])
    shape = (int(offsets[-1]), *sized[0][0][0].shape[1:])
    with open(out, "wb") as dst:
        dst.write(_npy_header(shape, _RowFile.HEADER))
        for part, _ in sized:
            mapped = part[0]
            assert isinstance(mapped, np.memmap) and mapped.filename  # as _load reads it
            with open(mapped.filename, "rb") as src:  # a part's data runs to its file's end
                src.seek(mapped.offset)
                shutil.copyfileobj(src, dst, 16 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    keys = np.concatenate([p[3] for p, _ in sized])

    def ordered(arrays: list[tuple[np.ndarray, int]]) -> np.ndarray:
        return np.concatenate([a[:n] for a, n in arrays] + [a[n:] for a, n in arrays])

    cols = {
        k: ordered([(p[1][k] + off, n) for (p, n), off in zip(sized, offsets, strict=False)])
        for k in sized[0][0][1]
    }
    ext = {k: ordered([(p[2][k], n) for p, n in sized]) for k in sized[0][0][2]}
    return cols, ext, keys


def split_features(
    ws: Workspace,
    dataset: str,
    split: str,
    src: Any,
    encoder_params: Any,
    *,
    mirror_triplets: bool = False,
    mirror_invariant: bool = False,
    encode: EncodeFn | None = None,
    dtype: Any = np.float32,
) -> FeatureSource:
    """Cached encoder features of a prepared split of ``ws`` (see :func:`cached_features`)."""
    return cached_features(
        src,
        encoder_params,
        cache_root=ws.cache_dir / "features",
        name=f"{dataset}-{split}",
        fingerprint=dataset_fingerprint(ws, dataset, split, src),
        encode=encode,
        mirror_triplets=mirror_triplets,
        mirror_invariant=mirror_invariant,
        dtype=dtype,
    )
