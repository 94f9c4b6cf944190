"""The settings template documents every section, and the workspace reads it back typed."""

from __future__ import annotations

import re
import tomllib

import pytest

from tiefjax.errors import InvalidInput
from tiefjax.settings import SECTIONS, config_template, section_class
from tiefjax.workspace import Workspace

SETTING_LINE = re.compile(r"^# (\w+ = .*?)(\s+# .*)?$")


def _uncommented(template: str) -> str:
    """The template with every setting line switched on (values = the defaults)."""
    out = []
    for line in template.splitlines():
        match = SETTING_LINE.match(line)
        out.append(match.group(1) if match and " = " in match.group(1) else line)
    return "\n".join(out)


def test_template_lists_every_setting_with_its_default(tmp_path):
    template = config_template()
    tomllib.loads(template)  # valid as shipped (all commented out)
    ws = Workspace(tmp_path)
    ws.ensure_config(_uncommented(template))
    for name, path in SECTIONS:
        cls = section_class(path)
        assert ws.section(name, cls) == cls(), name
        for field_name in cls.__dataclass_fields__:
            assert f"# {field_name} = " in template, (name, field_name)


def test_overrides_are_typed_and_unknown_names_rejected(tmp_path):
    from tiefjax.locate import LocateConfig

    ws = Workspace(tmp_path)
    ws.ensure_config("[locate]\nthreshold = 1\nshort_sides = [256, 512]\n")
    config = ws.section("locate", LocateConfig)
    assert config.threshold == 1.0 and config.short_sides == (256, 512)

    ws.config_path.write_text("[locate]\nthreshhold = 0.7\n")
    with pytest.raises(InvalidInput, match="unknown setting.*threshhold"):
        ws.section("locate", LocateConfig)
    ws.config_path.write_text("[locate]\nthreshold = 'high'\n")
    with pytest.raises(InvalidInput, match="threshold .* should be float"):
        ws.section("locate", LocateConfig)
    ws.config_path.write_text("[locate\n")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        ws.section("locate", LocateConfig)


def test_existing_settings_file_is_never_overwritten(tmp_path):
    ws = Workspace(tmp_path)
    ws.ensure_config("[locate]\nthreshold = 0.9\n")
    ws.ensure_config(config_template())
    assert "threshold = 0.9" in ws.config_path.read_text()
