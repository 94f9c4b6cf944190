"""The classic-script bundle an export ships so it opens from file:// (tiefjax/site_bundle.py);
the browser test test_static_export_opens_from_a_file runs it for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tiefjax.errors import InvalidInput
from tiefjax.server.site import require_site_dir
from tiefjax.site_bundle import bundle


def test_every_module_once_dependencies_first() -> None:
    js = require_site_dir() / "js"
    text = bundle(js)
    assert not re.search(r"^\s*(import|export)\b", text, re.M)
    order = re.findall(r'^__modules\["([\w.-]+)"\] = ', text, re.M)
    assert sorted(order) == sorted(p.name for p in js.glob("*.js") if p.name != "bundle.js")
    assert order.index("api.js") < order.index("ui.js") < order.index("gallery.js")
    assert order[-1] == "app.js"


def write(folder: Path, **modules: str) -> Path:
    for name, text in modules.items():
        (folder / f"{name}.js").write_text(text)
    return folder


def test_imports_and_exports_are_rewritten(tmp_path: Path) -> None:
    js = write(
        tmp_path,
        app='import * as a from "./a.js";\nimport { one, two as deux } from "./b.js";\nrun();\n',
        a="export const x = 1;\nexport async function run() {}\n",
        b="export function one() {}\nexport class two {}\n",
    )
    text = bundle(js)
    assert 'const a = __modules["a.js"];' in text
    assert 'const { one, two: deux } = __modules["b.js"];' in text
    assert "return { x, run };" in text and "return { one, two };" in text


@pytest.mark.parametrize(
    ("modules", "says"),
    [
        ({"app": "export default 1;\n"}, "app.js: cannot bundle 'export default 1;'"),
        ({"app": 'import x from "./a.js";\n', "a": ""}, "app.js: cannot bundle"),
        (
            {"app": 'import * as a from "./a.js";\n', "a": 'import * as b from "./app.js";\n'},
            "imports itself",
        ),  # fmt: skip
        ({"app": 'import * as a from "./gone.js";\n'}, "js/gone.js is imported but missing"),
    ],
)
def test_unsupported_forms_are_refused(tmp_path: Path, modules: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(says)):
        bundle(write(tmp_path, **modules))
