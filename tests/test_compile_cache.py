"""The command line's persistent compilation cache: where it goes, how it is turned off, and
that a compiled program really lands there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tiefjax import cli
from tiefjax.compile_cache import cache_dir

PROBE = """
import json, sys
from tiefjax.compile_cache import use_compile_cache
folder = use_compile_cache()
import jax, jax.numpy as jnp
jax.jit(lambda x: x * 3 + 1)(jnp.ones(5)).block_until_ready()
print(json.dumps(str(folder) if folder else None))
"""


def _probe(env: dict[str, str]) -> str | None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "TIEFJAX_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cache_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TIEFJAX_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tiefjax" / "xla"
    monkeypatch.setenv("TIEFJAX_COMPILE_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "", " OFF "):
        monkeypatch.setenv("TIEFJAX_COMPILE_CACHE", off)
        assert cache_dir() is None


def test_a_compiled_program_lands_in_the_cache_and_off_writes_nothing(tmp_path):
    folder = tmp_path / "xla"
    assert _probe({"TIEFJAX_COMPILE_CACHE": str(folder)}) == str(folder)
    assert any(p.name.endswith("-cache") for p in folder.iterdir())
    home = tmp_path / "home"
    assert _probe({"TIEFJAX_COMPILE_CACHE": "off", "HOME": str(home)}) is None
    assert not home.exists()
    # a folder the user gave JAX itself wins
    theirs = tmp_path / "theirs"
    env = {"TIEFJAX_COMPILE_CACHE": str(folder), "JAX_COMPILATION_CACHE_DIR": str(theirs)}
    assert _probe(env) == str(theirs) and any(theirs.iterdir())


def test_every_command_turns_the_cache_on(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "use_compile_cache", lambda: calls.append(1))
    assert cli.main(["locate", str(tmp_path / "no-workspace"), "x.jpg"]) == 2
    assert calls == [1]


def test_a_folder_that_cannot_be_written_is_named_once_and_skipped(monkeypatch, tmp_path, capsys):
    from tiefjax.compile_cache import use_compile_cache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TIEFJAX_COMPILE_CACHE", str(blocker))
    assert use_compile_cache() is None
    err = capsys.readouterr().err
    assert f"cannot write in {blocker}" in err and "TIEFJAX_COMPILE_CACHE" in err
