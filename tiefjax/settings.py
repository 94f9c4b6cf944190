"""The settings file template: every section's settings, commented out, with their defaults.

Each area keeps its settings dataclass next to its code (fields made with :func:`setting`, which
carries the help text); this module only lists them so that ``tiefjax init`` can write a
``tiefjax.toml`` that documents every knob.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any, TypeVar

T = TypeVar("T")

#: (section, "module:Class") in the order they appear in the file.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("compute", "tiefjax.models:ComputeConfig"),
    ("pretrain", "tiefjax.pretrain:PretrainConfig"),
    ("prepare", "tiefjax.data.crops:PrepareConfig"),
    ("train.classifier", "tiefjax.train.tasks:ClassifierConfig"),
    ("train.regressor", "tiefjax.train.tasks:RegressorConfig"),
    ("train.ranking", "tiefjax.train.tasks:RankingConfig"),
    ("locate", "tiefjax.locate:LocateConfig"),
    ("index", "tiefjax.index.config:IndexConfig"),
    ("server", "tiefjax.server.config:ServerConfig"),
)

HEADER = """\
# tiefjax workspace settings. Every setting is shown with its default, commented out:
# uncomment a line and change the value to override it. Unknown names are rejected.
"""


def setting(default: Any, help: str) -> Any:  # noqa: A002 - "help" is the metadata key read below
    """A settings dataclass field: its default, and the help text the template shows beside it."""
    return dataclasses.field(default=default, metadata={"help": help})


def with_overrides(cfg: T, what: str, **overrides: Any) -> T:
    """``cfg`` with ``overrides`` applied (``None`` values ignored: an option not given);
    a name the settings class lacks is an InvalidInput naming ``what`` settings it knows."""
    from tiefjax.errors import InvalidInput

    fields = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise InvalidInput(f"unknown {what} setting(s) {unknown}; known: {sorted(fields)}")
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def section_class(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def toml_value(value: Any) -> str:
    """A Python default as a TOML literal (bool, number, string, tuple of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def render_section(name: str, cls: type) -> str:
    lines = [f"[{name}]"]
    defaults = cls()
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        lines.append(f"# {f.name} = {toml_value(getattr(defaults, f.name))}")
        if help_text:
            lines[-1] = f"{lines[-1]:<40} # {help_text}"
    return "\n".join(lines) + "\n"


def config_template() -> str:
    """The full commented ``tiefjax.toml`` written by ``tiefjax init``."""
    parts = [HEADER]
    for name, path in SECTIONS:
        parts.append(render_section(name, section_class(path)))
    return "\n".join(parts)
