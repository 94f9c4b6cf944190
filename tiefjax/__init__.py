"""tiefjax: visual product search on JAX/Flax.

``from tiefjax import Searcher`` is resolved lazily, so ``import tiefjax`` stays light (no JAX).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Searcher", "build_index"]


def __getattr__(name: str) -> Any:
    if name == "Searcher":
        from tiefjax.search import Searcher

        return Searcher
    if name == "build_index":
        from tiefjax.index.build import build_index

        return build_index
    raise AttributeError(f"module 'tiefjax' has no attribute {name!r}")
