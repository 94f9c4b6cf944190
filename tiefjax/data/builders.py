"""tensorflow-datasets builders for the three training sets, written as ArrayRecord without TF.

What works without TensorFlow (tfds 4.9.10, found by experiment):

* ``tfds.core.ShardBasedBuilder`` + ``file_format="array_record"`` writes and
  ``tfds.builder_from_directory(dir).as_data_source(split)`` reads back (random access, NumPy).
* ``tfds.features.Image`` takes already-encoded JPEG/PNG ``bytes`` (what we give it: crops
  encoded with Pillow), a file object or a path as they are; an in-memory array needs TF to
  encode (a PIL image works too, but only at Pillow's default JPEG quality). Reading decodes with
  PIL when OpenCV is absent.
* A builder class defined inside a package makes tfds look for a checksums file through the
  ``importlib_resources`` backport, which is not installed; our builders download nothing, so
  they declare no code path.
* ``GeneratorBasedBuilder`` also works, but its shuffler keeps every serialized example of a
  split in memory up to 1 GB and then spills to disk with ``tf.io.gfile``, which fails without
  TF: a large catalog could not be written. ``ShardBasedBuilder`` streams each shard straight to
  its file (it buffers one shard, which we keep small), so memory does not grow with the catalog.
  It does not shuffle; training shuffles indices of the random-access source anyway.
* A split with no examples has no shard files and ``as_data_source`` raises on it, so
  :func:`open_split` returns an empty source for it.
* tfds's ArrayRecord adapter compresses every record, which for JPEG/PNG crops costs about 4x
  the write time for nothing; a custom ``ExampleWriter`` (the hook ``ShardBasedBuilder``
  offers) writes them uncompressed. A new builder also asks GCS for public metadata after
  making a temp dir it never removes; our ``DatasetInfo`` skips that.

Crops are stored as encoded bytes rather than as (source photo, window) cut at load time:
``scripts/bench/prepare.py`` measured reading a stored JPEG crop at 6-12x the record rate of
decoding the photo and cutting the window on demand (1400-2000 vs 165-215 records/s, random, 2
shared cores), and training reads every crop many times while prepare writes it once.

Crops are produced once per image into a :class:`Spool` (a temporary file of per-image blobs) and
both the classification and the regression builder read from it, so no photo is decoded twice.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tiefjax.data.crops import WINDOW

DATASETS = ("classification", "regression", "triplets")
VERSION = "1.0.0"
#: Examples per ArrayRecord shard. tfds holds one shard's examples in memory while writing it,
#: so this bounds the memory of ``prepare`` (about 1024 x 20 KB JPEG crops = 20 MB).
RECORDS_PER_SHARD = 1024

KeyExample = tuple[str, dict[str, Any]]
ShardFn = Callable[[], Iterator[KeyExample]]


class _QuietOpenCV(logging.Filter):
    """tfds warns once that OpenCV is missing and it decodes with PIL, which is what we want."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "OpenCV is not installed" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietOpenCV())


def _tfds() -> Any:
    import tensorflow_datasets as tfds  # noqa: PLC0415 (0.5 s import, only when building/reading)

    return tfds


_BUILDERS: dict[str, type] = {}


def _builder_class(name: str) -> type:
    """The tfds builder class of ``name``, defined on first use (keeps tfds off import paths)."""
    if name in _BUILDERS:
        return _BUILDERS[name]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}")
    tfds = _tfds()
    from array_record.python.array_record_module import ArrayRecordWriter  # noqa: PLC0415
    from tensorflow_datasets.core import writer as tfds_writer  # noqa: PLC0415

    class _Info(tfds.core.DatasetInfo):  # type: ignore[name-defined]
        def initialize_from_bucket(self) -> None:
            """No public metadata to fetch for our sets (tfds would leave an empty temp dir)."""

    class _UncompressedWriter(tfds_writer.ExampleWriter):
        """ArrayRecord shards without compression: records are JPEG/PNG, already compressed.

        tfds's own adapter uses the default compression, which costs 4x the write time (and
        time on every read) for a record that shrinks by almost nothing.
        """

        def write(self, path: Any, examples: Iterable[tuple[Any, bytes]]) -> None:
            out = ArrayRecordWriter(os.fspath(path), "group_size:1,uncompressed")
            try:
                for _, serialized in examples:
                    out.write(serialized)
            finally:
                out.close()

    class _Builder(tfds.core.ShardBasedBuilder, skip_registration=True):  # type: ignore[name-defined,call-arg]
        VERSION = tfds.core.Version(VERSION)

        def __init__(
            self,
            *,
            shards: Mapping[str, Sequence[ShardFn]] | None = None,
            image_format: str = "jpeg",
            **kwargs: Any,
        ):
            self._shards = shards or {}
            self._image_format = image_format
            super().__init__(**kwargs)

        def _image(self) -> Any:
            return tfds.features.Image(
                shape=(WINDOW, WINDOW, 3), encoding_format=self._image_format
            )

        def _info_with(self, features: dict[str, Any]) -> Any:
            """The set's ``DatasetInfo``: its ``features``, described by the class docstring."""
            return _Info(
                builder=self,
                description=self.__doc__,
                features=tfds.features.FeaturesDict(features),
            )

        # tfds looks for a checksums file next to the builder's module and, for a module inside
        # a package, needs the `importlib_resources` backport for that (not installed, and not
        # needed: we download nothing). No code path, no lookup.
        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls) -> None:
            return None

        def _example_writer(self) -> Any:
            return _UncompressedWriter(file_format=self.info.file_format)

        def _shard_iterators_per_split(self, dl_manager: Any) -> Mapping[str, Sequence[ShardFn]]:
            return self._shards

        def _log_download_bytes(self) -> None:  # tfds prints "Downloading..." to stdout
            pass

        def _log_download_done(self) -> None:
            pass

    class Classification(_Builder, skip_registration=True):  # type: ignore[call-arg]
        """Foreground and background crops: image, label (1 = foreground), image_id."""

        name = "classification"

        def _info(self) -> Any:
            return self._info_with(
                {
                    "image": self._image(),
                    "label": tfds.features.ClassLabel(names=["background", "foreground"]),
                    "image_id": tfds.features.Text(),
                }
            )

    class Regression(_Builder, skip_registration=True):  # type: ignore[call-arg]
        """Foreground crops with raw box deltas (dl, dt, dr, db) in crop pixels."""

        name = "regression"

        def _info(self) -> Any:
            return self._info_with(
                {
                    "image": self._image(),
                    "target": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                    "image_id": tfds.features.Text(),
                }
            )

    class Triplets(_Builder, skip_registration=True):  # type: ignore[call-arg]
        """Product crops of (reference, more similar, less similar) with their image ids."""

        name = "triplets"

        def _info(self) -> Any:
            images = {k: self._image() for k in ("reference", "positive", "negative")}
            ids = {f"{k}_id": tfds.features.Text() for k in images}
            return self._info_with({**images, **ids})

    _BUILDERS.update(classification=Classification, regression=Regression, triplets=Triplets)
    return _BUILDERS[name]


def write_dataset(
    name: str,
    data_dir: Path,
    shards: Mapping[str, Sequence[ShardFn]],
    image_format: str,
) -> Path:
    """Write dataset ``name`` with the given shard generators per split; returns its folder.

    Every split needs at least one shard function (it may yield nothing).
    """
    builder = _builder_class(name)(
        shards=shards,
        image_format=image_format,
        data_dir=os.fspath(data_dir),
        file_format="array_record",
    )
    builder.download_and_prepare()
    return dataset_dir(data_dir, name)


def dataset_dir(data_dir: Path, name: str) -> Path:
    """Where tfds puts dataset ``name`` under ``data_dir``."""
    return Path(data_dir) / name / VERSION


def open_split(folder: Path, split: str) -> Sequence[dict[str, Any]]:
    """tfds random-access source of one split of a written dataset (empty splits included)."""
    builder = _tfds().builder_from_directory(os.fspath(folder))
    info = builder.info.splits.get(split)
    if info is None or not info.num_examples:
        return []
    return builder.as_data_source(split)


# -- crop spool -------------------------------------------------------------------------------
class Spool:
    """Append-only file of pickled blobs, read back by index (a temporary crop store).

    Only the offsets live in memory (one per blob, i.e. per image), so a 10k-image catalog needs
    a few hundred KB here however many crops it has.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._out: io.BufferedWriter | None = open(self.path, "wb")  # noqa: SIM115
        self._offsets: list[int] = [0]
        self._in: io.BufferedReader | None = None

    def append(self, value: Any) -> int:
        assert self._out is not None, "spool already closed for writing"
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self._out.write(data)
        self._offsets.append(self._offsets[-1] + len(data))
        return len(self._offsets) - 2

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> Any:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._in is None:
            self._in = open(self.path, "rb")  # noqa: SIM115
        start, end = self._offsets[index], self._offsets[index + 1]
        self._in.seek(start)
        return pickle.loads(self._in.read(end - start))

    def close(self) -> None:
        for f in (self._out, self._in):
            if f is not None:
                f.close()
        self._out = self._in = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunk_by_weight(items: Iterable[Any], weight: Callable[[Any], int], limit: int) -> list[list]:
    """Consecutive groups of items whose total weight stays within ``limit`` (at least one item).

    Always returns at least one (possibly empty) group, so every split gets a shard.
    """
    groups: list[list] = [[]]
    total = 0
    for item in items:
        w = weight(item)
        if groups[-1] and total + w > limit:
            groups.append([])
            total = 0
        groups[-1].append(item)
        total += w
    return groups
