"""Integration test: ``tiefjax demo --size tiny --no-serve`` end to end through the CLI.

One module-scoped run builds the workspace (catalog → store → prepared sets → three trained
heads → index → evaluation → results.json); the tests check every stage's output, that a second
run resumes instead of redoing work, and that the site serves the result. The measured figures
(box mean IoU, same-product recall@10) are written to the terminal and recorded as properties.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from _processes import interrupt

from tiefjax.cli import main
from tiefjax.demo import RESULTS_NAME, SIZES, demo_settings_text, run_demo
from tiefjax.errors import InvalidInput
from tiefjax.evaluate import same_product_recall
from tiefjax.workspace import Workspace

pytestmark = pytest.mark.slow

#: Every figure of the results table; none may be missing after a full run.
METRICS = (
    "classifier_accuracy",
    "classifier_accuracy_untrained",
    "regressor_iou",
    "box_mean_iou_test",
    "box_mean_iou_all",
    "triplet_accuracy",
    "triplet_accuracy_untrained",
    "recall_at_10_unsupervised",
    "recall_at_10_supervised",
    "scann_recall_unsupervised",
    "scann_recall_supervised",
)
STAGES = (
    "catalog",
    "settings",
    "init",
    "weights",
    "ground truth",
    "prepare",
    "train classifier",
    "train regressor",
    "train ranking",
    "index",
    "evaluate",
)


def _run_cli(ws: Path) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["demo", str(ws), "--size", "tiny", "--no-serve"])
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def _say(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Show ``line`` in the pytest output even without ``-s``."""
    with capsys.disabled():
        print(line, flush=True)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("demo") / "demo-workspace"
    code, out, err, seconds = _run_cli(ws)
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    return ws, out, err, seconds


@pytest.fixture(scope="module")
def results(first) -> dict:
    ws = first[0]
    return json.loads((ws / RESULTS_NAME).read_text())


# -- stage outputs --------------------------------------------------------------------------------
def test_says_it_runs_on_a_random_encoder(first):
    _, out, _, _ = first
    assert "RANDOM INIT" in out.splitlines()[1]


def test_catalog_and_store(first):
    from tiefjax.demo_catalog import load_manifest
    from tiefjax.store import Store

    ws = first[0]
    manifest = load_manifest(ws / "catalog")
    assert 20 <= len(manifest.photos) <= 30
    files = sorted(p.name for p in (ws / "catalog" / "images").iterdir())
    assert files == sorted(Path(p.file).name for p in manifest.photos)
    with Store(Workspace(ws).store_path) as store:
        stats = store.stats()
    assert stats["images"] == len(manifest.photos)
    assert stats["boxes"] == len(manifest.photos)
    assert stats["triplets"] >= len(manifest.photos)  # about two per photo
    assert stats["detections"] == len(manifest.photos)  # every photo located by the evaluation


def test_settings_file_holds_the_demo_settings(first):
    from tiefjax.data.crops import PrepareConfig
    from tiefjax.train.tasks import ClassifierConfig

    ws = Workspace(first[0])
    chosen = SIZES["tiny"].settings
    assert ws.section("prepare", PrepareConfig).test_fraction == chosen["prepare"]["test_fraction"]
    cfg = ws.section("train.classifier", ClassifierConfig)
    assert cfg.steps == chosen["train.classifier"]["steps"]


def test_prepared_sets_are_not_empty(first):
    from tiefjax.prepare import load_split

    ws = Workspace(first[0])
    for dataset in ("classification", "regression", "triplets"):
        for split in ("train", "test"):
            assert len(load_split(ws, dataset, split)) > 0, (dataset, split)


def test_trained_heads_load(first):
    from tiefjax.train.artifacts import load_trained

    ws = Workspace(first[0])
    for task in ("classifier", "regressor", "ranking"):
        trained = load_trained(ws, task)
        assert trained is not None, task
        assert trained.meta["step"] == SIZES["tiny"].settings[f"train.{task}"]["steps"]
    assert "mean" in load_trained(ws, "regressor").meta


def test_index_loads_and_answers(first):
    from tiefjax.search import Searcher

    ws = Workspace(first[0])
    searcher = Searcher.load(ws)
    assert set(searcher.modes) == {"unsupervised", "supervised"}
    query = searcher.ids[0]
    for mode in searcher.modes:
        hits = searcher.neighbours(query, 5, mode)
        assert len(hits) == 5 and query not in {h.id for h in hits}
    result = searcher.search(searcher.ids[1], k=3, mode="supervised")
    assert len(result.hits) == 3


def test_results_json_has_every_metric(first, results, record_property, capsys):
    _, out, _, seconds = first
    assert results["size"] == "tiny" and results["encoder_source"] == "random"
    missing = [m for m in METRICS if results["metrics"].get(m) is None]
    assert not missing, missing
    for name in METRICS:
        assert 0.0 <= results["metrics"][name] <= 1.0, name
    assert [s["name"] for s in results["stages"]] == list(STAGES)
    assert results["counts"]["classification_train"] > 0
    assert "box mean IoU" in out and "same-product recall@10" in out
    m = results["metrics"]
    for name in METRICS:
        record_property(name, m[name])
    record_property("first_run_seconds", round(seconds, 1))
    _say(
        capsys,
        f"\ntiefjax demo tiny ({seconds:.0f}s, random encoder): box mean IoU "
        f"{m['box_mean_iou_test']:.3f} test / {m['box_mean_iou_all']:.3f} all, "
        f"recall@10 unsupervised {m['recall_at_10_unsupervised']:.3f} / supervised "
        f"{m['recall_at_10_supervised']:.3f}, classifier accuracy {m['classifier_accuracy']:.3f}, "
        f"triplet accuracy {m['triplet_accuracy']:.3f}",
    )


# -- resuming -------------------------------------------------------------------------------------
def test_second_run_resumes(first, results, record_property, capsys):
    ws, _, _, first_seconds = first
    final_before = {
        task: json.loads((ws / "train" / task / "final.json").read_text())["dir"]
        for task in ("classifier", "regressor", "ranking")
    }
    build_before = json.loads((ws / "datasets" / "prepared.json").read_text())["build"]

    code, out, err, seconds = _run_cli(ws)
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    again = json.loads((ws / RESULTS_NAME).read_text())
    notes = {s["name"]: s["note"] for s in again["stages"]}
    times = {s["name"]: s["seconds"] for s in again["stages"]}
    assert "re-used" in notes["catalog"]
    assert "0 added" in notes["init"]
    assert notes["prepare"].startswith("up to date")
    assert json.loads((ws / "datasets" / "prepared.json").read_text())["build"] == build_before
    for task in ("classifier", "regressor", "ranking"):
        assert notes[f"train {task}"].startswith("already trained"), notes
        assert (
            json.loads((ws / "train" / task / "final.json").read_text())["dir"]
            == (final_before[task])
        )
    assert notes["index"].startswith("up to date"), notes["index"]
    assert notes["evaluate"].startswith("up to date"), notes["evaluate"]
    first_train = sum(s["seconds"] for s in results["stages"] if s["name"].startswith("train"))
    again_train = sum(v for k, v in times.items() if k.startswith("train"))
    assert again_train < first_train
    # the same workspace gives the same figures
    assert again["metrics"]["classifier_accuracy"] == results["metrics"]["classifier_accuracy"]
    history = again["history"]
    assert len(history) == 2 and history[0]["seconds"] == results["seconds"]
    assert history[1]["seconds"] < history[0]["seconds"]
    assert "run 2 in this workspace" in out
    record_property("second_run_seconds", round(seconds, 1))
    _say(capsys, f"\ntiefjax demo tiny resumed in {seconds:.0f}s (first run {first_seconds:.0f}s)")


# -- serving --------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_served_site_answers(first):
    from starlette.testclient import TestClient

    from tiefjax.server.app import create_app

    ws = first[0]
    app = create_app(Workspace(ws), token="demo-test-token")
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        stats = client.get("/api/stats")
        assert stats.status_code == 200
        body = stats.json()
        assert body["images"] == body["boxes"] > 0
        assert body["index"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_serves_the_site_with_uvicorn(first):
    """The real serving path: a resumed ``tiefjax demo`` prints the URL and token, then
    answers over HTTP until Ctrl-C (SIGINT) stops it cleanly."""
    ws = first[0]
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiefjax", "demo", str(ws), "--size", "tiny", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        url = token = None
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("serving the demo site:"):
                url = line.split(":", 1)[1].strip()
            if "editor token:" in line:
                token = line.split("editor token:", 1)[1].split()[0]
            if line.strip().startswith("ready:"):
                break
        assert url == f"http://127.0.0.1:{port}/" and token, "".join(lines)
        assert lines[-1].strip() == f"ready: {url}   (listening)", "".join(lines)
        # no retry loop: once the ready line is out, the server answers
        with urllib.request.urlopen(url + "api/stats", timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["images"] > 0, "".join(lines)
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
    finally:
        interrupt(proc)
    assert proc.returncode in (0, 130), "".join(lines) + proc.stdout.read()


def test_pretrain_shows_the_figures_before_and_after(first, results, capsys):
    """Last of the module (it changes the workspace's encoder): ``--pretrain`` keeps the figures
    of the base encoder, pretrains, trains and indexes again; a re-run resumes all of it."""
    ws = first[0]
    out, err = io.StringIO(), io.StringIO()
    args = ["demo", str(ws), "--size", "tiny", "--no-serve", "--pretrain"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(args) == 0, f"stdout:\n{out.getvalue()}\nstderr:\n{err.getvalue()}"
    after = json.loads((ws / RESULTS_NAME).read_text())
    names = [s["name"] for s in after["stages"]]
    assert "before: train classifier" in names and names.index("pretrain") > names.index(
        "before: evaluate"
    )
    assert after["pretrained"] and after["before_pretraining"] == results["metrics"]
    assert set(after["metrics"]) == set(results["metrics"])
    ranking = json.loads((ws / "train" / "ranking" / "final.json").read_text())
    assert ranking["encoder_source"] == "pretrained"  # the heads were trained again on it
    assert "before -> after pretraining" in out.getvalue()
    assert "pretrained on the catalog" in out.getvalue()

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(args) == 0
    again = json.loads((ws / RESULTS_NAME).read_text())
    notes = {s["name"]: s["note"] for s in again["stages"]}
    assert not any(n.startswith("before: ") for n in notes)  # pretrained already
    assert notes["train ranking"].startswith("already trained")
    assert again["before_pretraining"] == results["metrics"]


# -- pieces ---------------------------------------------------------------------------------------
def test_same_product_recall_definition():
    product_of = {"a0": "a", "a1": "a", "a2": "a", "b0": "b", "b1": "b", "c0": "c"}
    neighbours = {
        "a0": ["a1", "b0", "a2"],  # both others of a in the top 3: 1.0 at k=3
        "a1": ["b0", "b1", "a0"],  # one of two others: 0.5
        "b0": ["c0", "a0", "b1"],  # min(k=3, 1 other) = 1 slot, found: 1.0
        "c0": ["a0", "a1", "b0"],  # no other photo of c: left out
    }
    value, queries = same_product_recall(neighbours, product_of, k=3)
    assert queries == 3 and value == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    value, queries = same_product_recall(neighbours, product_of, k=1)  # top-1 only
    assert queries == 3 and value == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert same_product_recall({}, product_of) == (None, 0)


def test_settings_text_is_valid_toml_for_every_size():
    for size in SIZES.values():
        parsed = tomllib.loads(demo_settings_text(size))
        for section, values in size.settings.items():
            table = parsed
            for part in section.split("."):
                table = table[part]
            for name, value in values.items():
                assert table[name] == value, (size.name, section, name)


def test_refuses_a_workspace_of_other_photos(tmp_path):
    from PIL import Image

    from tiefjax.catalog import init_workspace

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(photos / "x.png")
    init_workspace(tmp_path / "ws", photos)
    with pytest.raises(InvalidInput, match="not a demo workspace"):
        run_demo(tmp_path / "ws", size="tiny", serve=False, out=lambda line: None)
    with pytest.raises(InvalidInput, match="unknown demo size"):
        run_demo(tmp_path / "other", size="huge", serve=False, out=lambda line: None)


def test_weights_are_ported_once(tmp_path):
    """``--weights`` ports the file; a re-run with the same file does not port it again."""
    import numpy as np

    from tiefjax.demo import _weights

    torch = pytest.importorskip("torch")
    shapes = {
        "features.0": (64, 3, 11, 11),
        "features.3": (192, 64, 5, 5),
        "features.6": (384, 192, 3, 3),
        "features.8": (256, 384, 3, 3),
        "features.10": (256, 256, 3, 3),
    }
    rng = np.random.default_rng(0)
    sd = {}
    for name, shape in shapes.items():
        sd[f"{name}.weight"] = torch.from_numpy(rng.normal(0, 0.01, shape).astype(np.float32))
        sd[f"{name}.bias"] = torch.zeros(shape[0])
    torch.save(sd, tmp_path / "alexnet.pth")
    ws = Workspace(tmp_path / "ws")
    assert _weights(ws, None) == "none given: random-init encoder"
    assert _weights(ws, tmp_path / "alexnet.pth") == "ported alexnet.pth"
    assert (ws.models_dir / "encoder").is_dir()
    assert _weights(ws, tmp_path / "alexnet.pth") == "alexnet.pth already ported"
    assert _weights(ws, None) == "using the ported alexnet.pth"
