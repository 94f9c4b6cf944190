"""``[index]`` settings: how the catalog is encoded, reduced and indexed.

Every field has a default that suits catalogs from a hundred to a few million images; the
index kind is chosen from the catalog size N unless ``kind`` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tiefjax.errors import InvalidInput
from tiefjax.settings import setting


@dataclass(frozen=True)
class IndexConfig:
    """Settings of ``tiefjax index`` / search (section ``[index]`` of tiefjax.toml)."""

    batch_size: int = setting(32, "images per encoder call (a short one is padded to a power of 2)")
    workers: int = setting(2, "threads decoding and resizing images ahead of the encoder")
    prefetch_depth: int = setting(64, "decoded images allowed to wait for the encoder")
    chunk_size: int = setting(
        4096, "images per chunk written to disk: a killed build resumes from its last whole one"
    )
    locate: bool = setting(True, "find the product box with the trained locator when unannotated")
    mirror: bool = setting(
        True, "descriptors invariant to mirroring (photo and mirror encoded together: 2x the time)"
    )
    trim_borders: bool = setting(
        True, "whole-photo fallback: trim plain borders/padding before encoding"
    )
    copy_check: bool = setting(
        True,
        "uploads: align the first hits' photos with the upload pixel by pixel and list the "
        "photo it is a copy of first (about 100 ms an upload on 2 CPU cores)",
    )
    copy_check_hits: int = setting(10, "uploads: how many first hits the copy check aligns")
    copy_threshold: float = setting(
        0.9, "alignment score (normalised cross-correlation) from which a hit is the source"
    )
    copy_floor: float = setting(
        0.7, "a hit aligning at least this and copy_margin above every other goes first too"
    )
    copy_margin: float = setting(0.15, "see copy_floor (such a hit is not named copy_of)")
    reduction: str = setting("svd", "'svd' (projection fitted on the catalog) or 'none'")
    dim: int = setting(256, "descriptor dimension after reduction (widened until recall holds)")
    min_reduction_recall: float = setting(
        0.95, "recall@10 the reduced descriptors must keep against the full score"
    )
    fit_sample: int = setting(8192, "catalog rows used to fit the reduction")
    vectors_budget_mb: int = setting(
        4096, "largest reduced catalog (N x width float32, MB) the reduction may widen to"
    )
    kind: str = setting("auto", "'auto', 'exact', 'brute_force', 'ah' or 'tree'")
    exact_below: int = setting(2000, "auto: exact NumPy search below this many images")
    brute_force_below: int = setting(20000, "auto: ScaNN brute force below this many images")
    tree_from: int = setting(50000, "auto: partition tree + AH + reorder from this many images")
    num_leaves: int = setting(0, "tree leaves (0 = about sqrt(N))")
    leaves_to_search: int = setting(
        0, "tree leaves searched per query (0 = tuned at build time to reach target_recall)"
    )
    reorder: int = setting(0, "candidates re-scored exactly (0 = tuned at build time)")
    target_recall: float = setting(0.95, "recall@10 vs exact search the auto-tuning aims for")
    dims_per_block: int = setting(2, "asymmetric hashing: dimensions per 4-bit code")
    anisotropic_threshold: float = setting(0.2, "asymmetric hashing: anisotropic loss threshold")
    training_sample: int = setting(100000, "vectors used to train the tree and the AH codebooks")
    neighbours_k: int = setting(50, "precomputed neighbours per catalog image (similar-by-id)")
    recall_sample: int = setting(200, "queries used to measure recall@10 after each build")
    keep_builds: int = setting(2, "finished index builds kept on disk (current one included)")

    def __post_init__(self) -> None:
        kinds = ("auto", "exact", "brute_force", "ah", "tree")
        problems = []
        if self.kind not in kinds:
            problems.append(f"kind must be one of {', '.join(kinds)}, not {self.kind!r}")
        if self.reduction not in ("svd", "none"):
            problems.append(f"reduction must be 'svd' or 'none', not {self.reduction!r}")
        for name in (
            "batch_size",
            "workers",
            "prefetch_depth",
            "chunk_size",
            "dim",
            "fit_sample",
            "vectors_budget_mb",
            "copy_check_hits",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if not -1.0 < self.copy_threshold <= 1.0 or not -1.0 < self.copy_floor <= 1.0:
            problems.append("copy_threshold and copy_floor must lie in (-1, 1]")
        if not 0.0 <= self.copy_margin <= 2.0:
            problems.append("copy_margin must lie in [0, 2]")
        for name in ("min_reduction_recall", "target_recall"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1]")
        if self.neighbours_k < 1 or self.recall_sample < 1 or self.keep_builds < 1:
            problems.append("neighbours_k, recall_sample and keep_builds must be at least 1")
        if problems:
            raise InvalidInput("[index] settings: " + "; ".join(problems))

    @classmethod
    def tiny(cls) -> IndexConfig:
        """Small, fast settings for tests."""
        return cls(batch_size=4, workers=2, prefetch_depth=8, dim=32, recall_sample=50)

    def with_(self, **changes) -> IndexConfig:
        return replace(self, **changes)
