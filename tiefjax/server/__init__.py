"""The web server: a Starlette JSON API under ``/api`` plus the static site at ``/``."""

from tiefjax.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str):  # keep ``import tiefjax.server`` light (no Starlette/JAX import)
    if name == "create_app":
        from tiefjax.server.app import create_app

        return create_app
    raise AttributeError(name)
