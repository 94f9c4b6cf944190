"""tiefjax: visual product search on JAX/Flax.

``from tiefjax import Searcher`` is resolved lazily, so ``import tiefjax`` stays light (no JAX).
"""

from __future__ import annotations

import os
from typing import Any

# NumPy's OpenBLAS keeps its threads spinning for 2**28 cycles (~70 ms) after each call, on the
# cores XLA needs: an encoder call right after a NumPy matmul (the descriptor projection) ran
# 50-90% slower, and a batch of 16 upload searches took 95-108 ms instead of 65-67. 2**20 cycles
# (~0.3 ms) keeps back-to-back BLAS calls as fast as before (measured: the SVD fit, 1000 small
# matmuls). Read when NumPy loads: it applies when tiefjax is imported first (CLI, server).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

__all__ = ["Searcher", "build_index"]


def __getattr__(name: str) -> Any:
    if name == "Searcher":
        from tiefjax.search import Searcher

        return Searcher
    if name == "build_index":
        from tiefjax.index.build import build_index

        return build_index
    raise AttributeError(f"module 'tiefjax' has no attribute {name!r}")
