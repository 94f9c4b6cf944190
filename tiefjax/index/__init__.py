"""The search index: catalog encoding, descriptor reduction, ScaNN / exact search, builds."""

from __future__ import annotations

from typing import Any

__all__ = ["IndexConfig", "IndexReport", "build_index"]


def __getattr__(name: str) -> Any:
    if name == "IndexConfig":
        from tiefjax.index.config import IndexConfig

        return IndexConfig
    if name in ("build_index", "IndexReport"):
        from tiefjax.index import build

        return getattr(build, name)
    raise AttributeError(f"module 'tiefjax.index' has no attribute {name!r}")
