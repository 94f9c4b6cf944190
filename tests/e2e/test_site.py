"""The site in a real browser (Debian chromium via Playwright) against the real server.

Screenshots of every page land in test-artifacts/e2e/ (gitignored; CI keeps them).
"""

from __future__ import annotations

import io
import re
from urllib.parse import quote

import pytest
from PIL import Image
from playwright.sync_api import expect

from .conftest import ODD_ID, TOKEN, shot

pytestmark = pytest.mark.browser


def open_page(page, base: str, route: str) -> None:  # noqa: ANN001
    page.goto(base + route)
    page.wait_for_selector("body[data-ready='true']")


def enc(image_id: str) -> str:
    """An id as JavaScript's encodeURIComponent writes it into a route."""
    return quote(image_id, safe="!~*'()")


def wait_route(page, prefix: str) -> None:  # noqa: ANN001
    """Wait until the (decoded) location hash starts with ``prefix``."""
    page.wait_for_function("p => decodeURIComponent(location.hash).startsWith(p)", arg=prefix)


def images_load(page, within: str) -> bool:  # noqa: ANN001
    """True when every picture (<img> or SVG <image>) under ``within`` loads."""
    return page.evaluate(
        """within => {
            const nodes = [...document.querySelectorAll(`${within} img, ${within} image`)];
            const urls = nodes.map((n) => (n.tagName === "IMG" ? n.src : n.href.baseVal));
            return Promise.all(urls.map((url) => new Promise((done) => {
                const probe = new Image();
                probe.onload = () => done(probe.naturalWidth > 0);
                probe.onerror = () => done(false);
                probe.src = url;
            }))).then((ok) => ok.length > 0 && ok.every(Boolean));
        }""",
        within,
    )


def give_token(page) -> None:  # noqa: ANN001
    """Answer the token dialog the editors open on their first write."""
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.click("#token-save")
    expect(dialog).to_be_hidden()


# ---- gallery ----------------------------------------------------------------------------------


def test_gallery_click_shows_neighbours(page, server_url, catalog) -> None:  # noqa: ANN001
    open_page(page, server_url, "#/gallery")
    cards = page.locator("#gallery-grid .card")
    expect(cards).to_have_count(len(catalog.ids))
    # product boxes are drawn over the thumbnails (annotated ground truth: solid)
    expect(page.locator("#gallery-grid rect.box-annotated")).to_have_count(len(catalog.annotated))
    expect(page.locator("footer")).to_contain_text(f"{len(catalog.ids)} images")
    shot(page, "gallery")

    first = catalog.ids[0]
    assert first == ODD_ID  # spaces, %, +, parentheses and non-ASCII survive the round trip
    cards.first.click()
    wait_route(page, f"#/image/{first}")
    hits = page.locator("#similar-grid .card")
    expect(hits.first).to_be_visible()
    assert 1 <= hits.count() <= len(catalog.ids) - 1
    ids = [hits.nth(i).get_attribute("data-id") for i in range(hits.count())]
    assert first not in ids and set(ids) <= set(catalog.ids)
    scores = [float(s) for s in page.locator("#similar-grid .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    # the scores are explained, and bars spread them out from the list's lowest to its highest
    expect(page.locator("section.results .score-help")).to_contain_text("cosine similarity")
    bars = page.locator("#similar-grid .score-bar > span").evaluate_all(
        "spans => spans.map((s) => parseFloat(s.style.width))"
    )
    assert len(bars) == len(scores) and bars[0] == 100 and bars[-1] == 0
    assert bars == sorted(bars, reverse=True)
    # each result shows the box its descriptor came from
    annotated_hits = [i for i in ids if i in catalog.annotated]
    assert annotated_hits
    expect(page.locator("#similar-grid rect.box-annotated")).to_have_count(len(annotated_hits))
    assert images_load(page, "#similar-grid")
    expect(page.locator(".reference .ref-name")).to_have_text(first)
    # only the unsupervised index exists: the supervised toggle is disabled, not broken
    expect(page.get_by_role("radio", name=re.compile("^supervised$", re.I))).to_be_disabled()
    shot(page, "similar")

    # a neighbour's card opens its own neighbours; Esc goes back to the gallery
    hits.first.click()
    wait_route(page, f"#/image/{ids[0]}")
    expect(page.locator(".reference .ref-name")).to_have_text(ids[0])  # the new view, not the old
    expect(page.locator("#similar-grid .card").first).to_be_visible()
    page.keyboard.press("Escape")
    wait_route(page, "#/gallery")
    expect(cards).to_have_count(len(catalog.ids))
    # every image and thumbnail loaded, and no probe for a static export
    assert page.bad_responses == []


def test_gallery_keyboard_paging_and_deep_links(page, server_url, catalog) -> None:  # noqa: ANN001
    n = len(catalog.ids)
    assert 12 < n <= 24
    open_page(page, server_url, "#/gallery?page=5&size=12")
    wait_route(page, "#/gallery?page=2&size=12")  # past the end -> the last page
    expect(page.locator("#gallery-grid .card")).to_have_count(n - 12)

    open_page(page, server_url, "#/gallery?page=1&size=12")
    cards = page.locator("#gallery-grid .card")
    expect(cards).to_have_count(12)
    page.keyboard.press("ArrowRight")  # focus enters the grid
    page.keyboard.press("ArrowRight")
    expect(cards.nth(1)).to_be_focused()
    page.keyboard.press("Enter")
    wait_route(page, f"#/image/{catalog.ids[1]}")
    expect(page.locator("#similar-grid .card").first).to_be_visible()
    page.keyboard.press("Escape")
    wait_route(page, "#/gallery?page=1&size=12")
    expect(cards.nth(1)).to_be_focused()  # focus returns to the image just seen
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")
    expect(cards.nth(10)).to_be_focused()
    shot(page, "gallery-keyboard-focus")
    page.keyboard.press("PageDown")
    wait_route(page, "#/gallery?page=2&size=12")
    expect(cards).to_have_count(n - 12)
    expect(cards.first).to_be_focused()
    page.keyboard.press("PageUp")
    wait_route(page, "#/gallery?page=1&size=12")
    expect(cards).to_have_count(12)

    # the page size selector keeps the first image in view
    page.select_option("#page-size", "24")
    wait_route(page, "#/gallery?page=1")
    expect(cards).to_have_count(n)

    # a deep link straight to an image's neighbours
    open_page(page, server_url, f"#/image/{enc(catalog.ids[3])}?mode=unsupervised")
    expect(page.locator(".reference .ref-name")).to_have_text(catalog.ids[3])
    expect(page.locator("#similar-grid .card").first).to_be_visible()
    shot(page, "similar-deep-link")


# ---- search by upload --------------------------------------------------------------------------


def test_escape_leaves_an_image_while_its_results_load(page, server_url, catalog) -> None:  # noqa: ANN001
    held = []  # the similar-images request is held open: the results stay "loading"
    page.route("**/similar?*", lambda route: held.append(route))
    open_page(page, server_url, "#/gallery")
    page.locator("#gallery-grid .card").nth(1).click()
    wait_route(page, f"#/image/{catalog.ids[1]}")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the page never asked for similar images"
    expect(page.locator("section.results[aria-busy='true']")).to_be_visible()
    page.keyboard.press("Escape")
    wait_route(page, "#/gallery")
    expect(page.locator("#gallery-grid .card")).to_have_count(len(catalog.ids))
    for route in held:
        route.abort()


def test_upload_shows_box_and_results(page, server_url, catalog) -> None:  # noqa: ANN001
    query = catalog.ids[3]
    width, height = catalog.size(query)
    open_page(page, server_url, "#/search")
    page.set_input_files("#search-file", str(catalog.image_file(query)))
    grid = page.locator("#search-grid .card")
    expect(grid.first).to_be_visible()
    assert grid.count() >= 5
    # the detected box (here: the whole image, the locator is untrained) is drawn on the query
    expect(page.locator("#search-query svg rect.box")).to_have_count(1)
    expect(page.locator("#search-detection")).to_contain_text(f"{width} × {height} px")
    scores = [float(s) for s in page.locator("#search-grid .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    expect(page.locator("#search-grid rect.box-annotated").first).to_be_attached()
    shot(page, "search")

    # the catalog's own file is a copy of itself: named, and first
    expect(page.locator("#search-copy")).to_contain_text(query)
    expect(grid.first).to_have_attribute("data-id", query)

    # a copy of a catalog photo on a wider backdrop: the copy check names it and lists it first
    with Image.open(catalog.image_file(query)) as img:
        padded = Image.new("RGB", (img.width + 90, img.height + 60), (245, 240, 230))
        padded.paste(img.convert("RGB"), (50, 20))
    buf = io.BytesIO()
    padded.save(buf, "JPEG", quality=92)
    page.set_input_files(
        "#search-file",
        files=[{"name": "copy.jpg", "mimeType": "image/jpeg", "buffer": buf.getvalue()}],
    )
    expect(page.locator("#search-detection")).to_contain_text(f"{width + 90} × {height + 60} px")
    expect(page.locator("#search-copy")).to_contain_text(query)
    expect(grid.first).to_have_attribute("data-id", query)

    # a file that is not an image: the server's own message, no crash
    page.set_input_files(
        "#search-file",
        files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"this is not a JPEG"}],
    )
    error = page.locator("#search-status .notice.error")
    expect(error).to_be_visible()
    assert "JPEG" in error.inner_text() or "image" in error.inner_text().lower()
    shot(page, "search-error")

    # drag & drop and paste work too (a File built in the page from a catalog image)
    for event in ("drop", "paste"):
        page.evaluate(
            """async ([id, event]) => {
                const url = `api/images/${encodeURIComponent(id)}/file`;
                const blob = await (await fetch(url)).blob();
                const dt = new DataTransfer();
                dt.items.add(new File([blob], `${event}.jpg`, { type: "image/jpeg" }));
                if (event === "drop") {
                    const zone = document.querySelector("#dropzone");
                    zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
                } else {
                    document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt }));
                }
            }""",
            [catalog.ids[5], event],
        )
        expect(page.locator("#search-query .ref-name")).to_have_text(f"{event}.jpg")
        expect(page.locator("#search-grid .card").first).to_be_visible()
        expect(page.locator("#search-status .notice")).to_have_count(0)


# ---- box editor --------------------------------------------------------------------------------


def drag(page, locator, start: tuple[float, float], end: tuple[float, float]) -> None:  # noqa: ANN001
    """Drag between two points given as fractions of the element's size."""
    box = locator.bounding_box()
    x0, y0 = box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"]
    x1, y1 = box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()


def test_draw_and_save_box_persists(page, server_url, catalog) -> None:  # noqa: ANN001
    from tiefjax.store import Store

    image_id = sorted(catalog.annotated)[3]
    with Store(catalog.ws.store_path) as store:
        before = store.get_box(image_id)
        rec = store.get_image(image_id)
    assert before is not None  # ground truth

    open_page(page, server_url, f"#/boxes/{enc(image_id)}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    expect(page.locator("#box-status")).to_have_attribute("data-state", "saved")
    expect(page.locator("#box-progress")).to_contain_text(f"of {len(catalog.ids)} annotated")

    page.keyboard.press("c")  # clear, then draw a new box by dragging
    expect(page.locator("#box-selection")).to_be_hidden()
    img = page.locator("#box-stage img")
    drag(page, img, (0.1, 0.2), (0.6, 0.7))
    expect(page.locator("#box-status")).to_have_attribute("data-state", "unsaved")
    # then adjust it with the bottom-right handle
    handle = page.locator("#box-selection .h-se")
    hb = handle.bounding_box()
    ib = img.bounding_box()
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(ib["x"] + 0.8 * ib["width"], ib["y"] + 0.9 * ib["height"], steps=5)
    page.mouse.up()
    shot(page, "box-editor-unsaved")

    page.keyboard.press("s")
    give_token(page)  # first write asks for the token once
    expect(page.locator("#box-status")).to_have_attribute("data-state", "saved")

    with Store(catalog.ws.store_path) as store:
        saved = store.get_box(image_id)
    assert saved.version == before.version + 1
    w, h = rec.width, rec.height
    box = saved.box
    for value in (box.left, box.top, box.right, box.bottom):
        assert float(value) == round(float(value)), "coordinates are whole image pixels"
    assert abs(box.left - 0.1 * w) <= 3 and abs(box.top - 0.2 * h) <= 3
    assert abs(box.right - 0.8 * w) <= 3 and abs(box.bottom - 0.9 * h) <= 3
    shot(page, "box-editor-saved")

    page.reload()
    page.wait_for_selector("#box-stage[data-ready='true']")
    expect(page.locator("#box-status")).to_have_attribute("data-state", "saved")
    left, top, right, bottom = (int(v) for v in (box.left, box.top, box.right, box.bottom))
    expect(page.locator("#box-coords")).to_contain_text(
        f"left {left}, top {top}, right {right}, bottom {bottom}"
    )
    # the token was kept: the next save does not ask again
    page.keyboard.press("c")
    page.keyboard.press("s")
    expect(page.locator("#box-status")).to_have_attribute("data-state", "empty")
    with Store(catalog.ws.store_path) as store:
        assert store.get_box(image_id) is None
        store.put_box(image_id, before.box, None)  # put the ground truth back


def test_box_conflict_is_reported(page, server_url, catalog) -> None:  # noqa: ANN001
    from tiefjax.store import Box, Store

    annotated = sorted(catalog.annotated)
    image_id, following, todo = annotated[4], annotated[5], annotated[7]
    with Store(catalog.ws.store_path) as store:
        todo_box = store.get_box(todo)
        store.delete_box(todo)
    open_page(page, server_url, f"#/boxes/{enc(image_id)}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    # a token gone stale since the page loaded (revoked): the first save is refused (401) and
    # the dialog asks again (a stale token found at load is dropped before any save)
    page.evaluate("localStorage.setItem('tiefjax.token', 'stale-token')")
    with Store(catalog.ws.store_path) as store:  # someone else saves meanwhile
        other = store.put_box(image_id, Box(10, 20, 300, 400), None)
    page.keyboard.press("c")
    drag(page, page.locator("#box-stage img"), (0.2, 0.2), (0.5, 0.5))
    page.keyboard.press("s")
    expect(page.locator("#token-reason")).to_contain_text("rejected")
    give_token(page)
    expect(page.locator("#box-status")).to_have_attribute("data-state", "conflict")
    expect(page.locator("#box-conflict")).to_contain_text(f"version {other.version}")
    shot(page, "box-editor-conflict")
    page.click("#box-reload")
    expect(page.locator("#box-status")).to_have_attribute("data-state", "saved")
    expect(page.locator("#box-coords")).to_contain_text("left 10, top 20, right 300, bottom 400")

    # n moves on to the next image, u jumps to the next one without a box
    page.keyboard.press("n")
    wait_route(page, f"#/boxes/{following}")
    expect(page.locator(".page-head .ref-name")).to_have_text(following)  # the new page
    page.wait_for_selector("#box-stage[data-ready='true']")
    page.keyboard.press("u")
    wait_route(page, f"#/boxes/{todo}")
    expect(page.locator(".page-head .ref-name")).to_have_text(todo)
    page.wait_for_selector("#box-stage[data-ready='true']")
    expect(page.locator("#box-status")).to_have_attribute("data-state", "empty")
    with Store(catalog.ws.store_path) as store:
        store.put_box(todo, todo_box.box, None)


# ---- similarity editor -------------------------------------------------------------------------


def test_similarity_editor_writes_triplets(page, server_url, catalog) -> None:  # noqa: ANN001
    from tiefjax.store import Store

    ref = catalog.ids[0]
    with Store(catalog.ws.store_path) as store:
        before = {(t.reference, t.positive, t.negative) for t in store.list_triplets()}

    open_page(page, server_url, f"#/similarity/{enc(ref)}")
    cards = page.locator("#sim-grid .candidate")
    expect(cards.first).to_be_visible()
    assert cards.count() >= 4
    ids = [cards.nth(i).get_attribute("data-id") for i in range(4)]
    cards.nth(0).click()  # more similar
    cards.nth(1).click()
    cards.nth(2).click(modifiers=["Shift"])  # less similar
    cards.nth(3).click(button="right")  # less similar
    expect(cards.nth(0)).to_have_attribute("data-mark", "more")
    expect(cards.nth(2)).to_have_attribute("data-mark", "less")
    expect(cards.nth(3)).to_have_attribute("data-mark", "less")
    expect(page.locator("#sim-count")).to_contain_text("4 triplets")
    shot(page, "similarity-editor-marked")

    page.click("#sim-save")
    give_token(page)
    expect(page.locator("#sim-message")).to_contain_text("Saved 4 triplets")
    expected = {(ref, p, n) for p in ids[:2] for n in ids[2:]}
    with Store(catalog.ws.store_path) as store:
        stored = store.list_triplets(reference=ref)
        now = {(t.reference, t.positive, t.negative) for t in store.list_triplets()}
    assert expected <= {(t.reference, t.positive, t.negative) for t in stored}
    assert now - before == expected - before
    assert all(t.reference == ref for t in stored), "the real reference id, never empty"
    assert not any(t.reference == "" for t in store_triplets(catalog))

    # the stored triplets are listed; judged images leave the candidates
    rows = page.locator("#sim-triplets .triplet")
    expect(rows).to_have_count(len(stored))
    remaining = [cards.nth(i).get_attribute("data-id") for i in range(cards.count())]
    assert not set(ids) & set(remaining)
    shot(page, "similarity-editor-saved")

    # delete one from the list
    victim = next(t for t in stored if (t.positive, t.negative) == (ids[0], ids[2]))
    page.locator(f"#sim-triplets .triplet[data-tid='{victim.id}'] button").click()
    expect(rows).to_have_count(len(stored) - 1)
    with Store(catalog.ws.store_path) as store:
        assert victim.id not in {t.id for t in store.list_triplets(reference=ref)}


def store_triplets(catalog):  # noqa: ANN001, ANN201
    from tiefjax.store import Store

    with Store(catalog.ws.store_path) as store:
        return store.list_triplets()


# ---- static export -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_root(catalog, tmp_path_factory):  # noqa: ANN001, ANN201
    """A static export at ROOT/shop/catalog."""
    from tiefjax.export_site import export_site

    root = tmp_path_factory.mktemp("static-host")
    # small export pages, so a gallery page is stitched together from several of them
    export_site(catalog.ws, root / "shop" / "catalog", page_size=5)
    return root


@pytest.fixture(scope="module")
def static_url(static_root):  # noqa: ANN001, ANN201
    """The static export served by `python -m http.server` from a sub-path."""
    import subprocess
    import sys
    import time
    import urllib.request

    from .conftest import free_port

    root = static_root

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/shop/catalog/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "static/manifest.js", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("python -m http.server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_static_export_gallery_and_similar(page, static_url, catalog) -> None:  # noqa: ANN001
    open_page(page, static_url, "")
    expect(page.locator("#mode-badge")).to_have_text("static export")
    cards = page.locator("#gallery-grid .card")
    expect(cards).to_have_count(len(catalog.ids))
    expect(page.locator("#gallery-grid rect.box").first).to_be_attached()
    expect(page.locator("footer")).to_contain_text("static export")
    shot(page, "static-gallery")

    cards.first.click()  # the odd id: its export files are found through its hashed key
    wait_route(page, f"#/image/{ODD_ID}")
    hits = page.locator("#similar-grid .card")
    expect(hits.first).to_be_visible()
    assert hits.count() >= 5
    assert images_load(page, "#similar-grid")  # thumbnails really load from static/thumbs/
    assert page.bad_responses == []  # every page, image, thumbnail and similar list was there
    shot(page, "static-similar")

    open_page(page, static_url, "#/gallery?page=2&size=12")
    expect(cards).to_have_count(len(catalog.ids) - 12)
    names = page.locator("#gallery-grid .card .name").all_inner_texts()
    assert names == catalog.ids[12:]

    # a deep link straight into an image works too, and the server-only pages say so
    open_page(page, static_url, f"#/image/{enc(catalog.ids[3])}")
    expect(page.locator("#similar-grid .card").first).to_be_visible()
    for route, what in [("#/search", "Search by upload"), ("#/boxes", "The box editor"),
                        ("#/similarity", "The similarity editor")]:  # fmt: skip
        open_page(page, static_url, route)
        expect(page.locator(".static-note")).to_contain_text(f"{what} needs the tiefjax server")
    shot(page, "static-editor-notice")


def test_static_export_opens_from_a_file(page, static_root, catalog) -> None:  # noqa: ANN001
    """Double-clicking index.html: no ES modules and no fetch() on file://, yet it all works."""
    index = static_root / "shop" / "catalog" / "index.html"
    open_page(page, index.as_uri(), "")
    expect(page.locator("#mode-badge")).to_have_text("static export")
    cards = page.locator("#gallery-grid .card")
    expect(cards).to_have_count(len(catalog.ids))
    expect(page.locator("footer")).to_contain_text(f"{len(catalog.ids)} images")
    cards.first.click()  # the odd id: its files (hashed names) load from disk too
    wait_route(page, f"#/image/{ODD_ID}")
    expect(page.locator("#similar-grid .card").first).to_be_visible()
    assert page.locator("#similar-grid .card").count() >= 5
    assert images_load(page, "#similar-grid")
    shot(page, "static-file-similar")
    open_page(page, index.as_uri(), "#/boxes")
    expect(page.locator(".static-note")).to_contain_text("The box editor needs the tiefjax server")


def test_box_editor_notices_never_move_the_image(page, server_url, catalog) -> None:  # noqa: ANN001
    """A notice coming or going must not shift the image under a drag; at 1366×768 the whole
    image, conflict panel or not, stays on screen."""
    from tiefjax.store import Box, Store

    image_id = sorted(catalog.annotated)[2]
    w, h = catalog.size(image_id)
    with Store(catalog.ws.store_path) as store:
        before = store.get_box(image_id)
    page.set_viewport_size({"width": 1366, "height": 768})
    open_page(page, server_url, f"#/boxes/{enc(image_id)}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    page.keyboard.press("c")
    page.keyboard.press("c")
    expect(page.locator("#box-message")).to_contain_text("There is no box to clear.")
    img = page.locator("#box-stage img")
    drag(page, img, (0.1, 0.2), (0.6, 0.7))
    expect(page.locator("#box-message .notice")).to_have_count(0)  # the drag dismissed it
    left, top, right, bottom = (round(f * s) for f, s in ((0.1, w), (0.2, h), (0.6, w), (0.7, h)))
    coords = page.locator("#box-coords").inner_text()
    got = [int(v) for v in coords.split("·")[0].replace(",", " ").split() if v.isdigit()]
    assert all(abs(a - b) <= 0.01 * h for a, b in zip(got, [left, top, right, bottom], strict=True))

    with Store(catalog.ws.store_path) as store:  # someone else saves meanwhile: a conflict
        store.put_box(image_id, Box(10, 20, 300, 400), None)
    page.keyboard.press("s")
    give_token(page)
    expect(page.locator("#box-status")).to_have_attribute("data-state", "conflict")
    shot(page, "box-editor-conflict-1366x768")
    assert page.evaluate("scrollY") == 0
    for node in (img, page.locator("#box-selection .h-se")):
        b = node.bounding_box()
        assert b["y"] + b["height"] <= 768, "below the fold"
    with Store(catalog.ws.store_path) as store:
        store.put_box(image_id, before.box, None)

    expect(page.locator(".overlay-box.conflict")).to_be_visible()  # the stored box, dashed


def test_box_editor_guards_unsaved_work_and_knows_what_is_left(page, server_url, catalog) -> None:  # noqa: ANN001
    from tiefjax.store import Store

    todo = ODD_ID  # the one image without a ground-truth box
    assert todo not in catalog.annotated
    open_page(page, server_url, f"#/boxes/{enc(todo)}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    expect(page.locator("#box-status")).to_have_attribute("data-state", "empty")
    expect(page.locator("#box-progress")).to_contain_text(
        f"{len(catalog.ids) - 1} of {len(catalog.ids)} annotated"
    )
    page.keyboard.press("u")  # the only unannotated image is this one
    expect(page.locator("#box-message")).to_contain_text("This is the only image without a box")
    assert page.bad_responses == []  # no 404 for the box it does not have

    # an unsaved box: the top bar and a typed address stay on the page and warn, like n/p/u
    drag(page, page.locator("#box-stage img"), (0.2, 0.2), (0.7, 0.8))
    expect(page.locator("#box-status")).to_have_attribute("data-state", "unsaved")
    page.click("nav [data-nav='gallery']")
    expect(page.locator("#box-message")).to_contain_text("Unsaved changes")
    wait_route(page, f"#/boxes/{todo}")
    page.evaluate("location.hash = '#/search'")
    expect(page.locator("#box-message")).to_contain_text("Unsaved changes")
    wait_route(page, f"#/boxes/{todo}")
    expect(page.locator("#box-status")).to_have_attribute("data-state", "unsaved")
    expect(page.locator("#box-selection")).to_be_visible()
    page.click("nav [data-nav='gallery']")
    page.click("nav [data-nav='gallery']")  # asked twice: leave without saving
    wait_route(page, "#/gallery")
    expect(page.locator("#gallery-grid .card")).to_have_count(len(catalog.ids))

    # the other tab deleted the box this one edits: said so, nothing claimed to be drawn
    image_id = sorted(catalog.annotated)[6]
    with Store(catalog.ws.store_path) as store:
        before = store.get_box(image_id)
    open_page(page, server_url, f"#/boxes/{enc(image_id)}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    with Store(catalog.ws.store_path) as store:
        store.delete_box(image_id)
    drag(page, page.locator("#box-stage img"), (0.3, 0.3), (0.6, 0.6))
    page.keyboard.press("s")
    give_token(page)
    expect(page.locator("#box-status")).to_have_attribute("data-state", "conflict")
    expect(page.locator("#box-conflict")).to_contain_text("The stored box was deleted")
    expect(page.locator("#box-conflict")).not_to_contain_text("drawn")
    expect(page.locator(".overlay-box.conflict")).to_be_hidden()
    with Store(catalog.ws.store_path) as store:
        store.put_box(image_id, before.box, None)


def test_gallery_for_assistive_technology(page, server_url, catalog) -> None:  # noqa: ANN001
    """Cards are links inside list items, a skip link comes first, and disabled pager links
    are out of the Tab order."""
    open_page(page, server_url, "#/gallery?page=1&size=12")
    grid = page.locator("#gallery-grid")
    expect(grid.get_by_role("listitem")).to_have_count(12)
    expect(grid.get_by_role("listitem").get_by_role("link")).to_have_count(12)
    expect(grid.get_by_role("link", name=f"{catalog.ids[0]}: show similar images")).to_be_visible()

    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    assert page.evaluate("location.hash") == "#/gallery?page=1&size=12"

    expect(page.locator(".pager a[aria-disabled='true']")).to_have_count(4)  # « and ‹, twice
    page.focus("#page-size")  # the top pager follows: Tab skips its disabled « and ‹
    page.keyboard.press("Tab")
    expect(page.locator(".pager").first.get_by_role("link", name="Next page")).to_be_focused()
    shot(page, "gallery-skip-link")


def test_phone_layout_and_touch(phone, server_url, static_url, catalog) -> None:  # noqa: ANN001
    page, width, height = phone, 390, 844
    open_page(page, server_url, "#/gallery")
    links = page.locator("nav[aria-label='Main'] a")
    expect(links).to_have_count(5)
    for link in links.all():  # every link whole and on screen, nothing to scroll sideways
        box = link.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, link.inner_text()
        assert link.evaluate("a => a.scrollWidth <= a.clientWidth"), link.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    shot(page, "phone-gallery")

    # results start on the first screen, the query image is a preview above them
    open_page(page, server_url, f"#/image/{enc(catalog.ids[2])}")
    first = page.locator("#similar-grid .card").first
    expect(first).to_be_visible()
    assert first.bounding_box()["y"] + 100 <= height
    shot(page, "phone-similar")

    # the similarity editor: "less similar" with taps only
    open_page(page, server_url, f"#/similarity/{enc(catalog.ids[1])}")
    cards = page.locator("#sim-grid .candidate")
    expect(cards.first).to_be_visible()
    assert cards.first.bounding_box()["y"] + 100 <= height
    page.get_by_role("radio", name=re.compile("less similar", re.I)).tap()
    cards.nth(0).tap()
    expect(cards.nth(0)).to_have_attribute("data-mark", "less")
    page.get_by_role("radio", name=re.compile("more similar", re.I)).tap()
    cards.nth(1).tap()
    expect(cards.nth(1)).to_have_attribute("data-mark", "more")
    expect(page.locator("#sim-count")).to_contain_text("1 triplet")
    shot(page, "phone-similarity-editor")

    # the box editor's handles are big enough for a fingertip
    open_page(page, server_url, f"#/boxes/{enc(sorted(catalog.annotated)[0])}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    handle = page.locator(".handle").first.bounding_box()
    assert handle["width"] >= 24 and handle["height"] >= 24, handle

    open_page(page, static_url, "")  # the static-export badge is on screen
    expect(page.locator("#mode-badge")).to_be_in_viewport(ratio=1)


# ---- before and after the first index ------------------------------------------------------------


def test_similarity_editor_works_before_any_index(page, bare, catalog) -> None:  # noqa: ANN001
    """serve -> annotate comes before index (README): the editor offers catalog order."""
    from tiefjax.store import Store

    ref = catalog.ids[1]
    with Store(bare.ws.store_path) as store:
        judged = {i for t in store.list_triplets(reference=ref) for i in (t.positive, t.negative)}
    expected = [i for i in catalog.ids[2:] + catalog.ids[:1] if i not in judged]
    open_page(page, bare.url, f"#/similarity/{enc(ref)}")
    expect(page.locator(".candidates-view > .notice.info")).to_contain_text("no search index yet")
    cards = page.locator("#sim-grid .candidate")
    expect(cards).to_have_count(len(expected))
    ids = [cards.nth(i).get_attribute("data-id") for i in range(cards.count())]
    assert ids == expected  # the images after the reference, in catalog order, not judged yet
    cards.nth(0).click()
    cards.nth(1).click(modifiers=["Shift"])
    cards.nth(2).click(button="right")
    page.click("#sim-save")
    give_token(page)
    expect(page.locator("#sim-message")).to_contain_text("Saved 2 triplets")
    with Store(bare.ws.store_path) as store:
        stored = {(t.positive, t.negative) for t in store.list_triplets(reference=ref)}
    assert {(ids[0], ids[1]), (ids[0], ids[2])} <= stored
    expect(cards).to_have_count(len(expected) - 3)  # judged ones leave the candidates


def test_a_new_index_is_found_by_the_next_page_load(page, bare, catalog) -> None:  # noqa: ANN001
    import shutil

    image = f"#/image/{enc(catalog.ids[2])}"
    open_page(page, bare.url, image)
    expect(page.locator("section.results")).to_contain_text("No search index yet")
    expect(page.locator("footer")).to_contain_text("no index yet")
    # `tiefjax index` finishes (here: the catalog's index, built from the same photos)
    shutil.copytree(bare.index_from, bare.ws.index_dir, dirs_exist_ok=True)
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#similar-grid .card").first).to_be_visible()
    expect(page.locator("footer")).to_contain_text("index: ")


# ---- zoom, pan, undo ---------------------------------------------------------------------------


def natural_at(page, img, x: float, y: float) -> tuple[float, float]:  # noqa: ANN001
    """The image pixel under the client point (x, y)."""
    w, h = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    b = img.bounding_box()
    return (x - b["x"]) / b["width"] * w, (y - b["y"]) / b["height"] * h


def test_box_editor_zoom_and_pan(page, server_url, catalog) -> None:  # noqa: ANN001
    image_id = sorted(catalog.annotated)[5]
    w, h = catalog.size(image_id)
    open_page(page, server_url, f"#/boxes/{enc(image_id)}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    img = page.locator("#box-stage img")
    viewport = page.locator("#box-viewport")
    page.wait_for_function("() => document.querySelector('#box-stage img').naturalWidth > 0")

    # fit: the whole image inside the viewport; 1: one CSS pixel per image pixel
    v, b = viewport.bounding_box(), img.bounding_box()
    assert b["x"] >= v["x"] and b["x"] + b["width"] <= v["x"] + v["width"] + 1
    assert b["y"] >= v["y"] and b["y"] + b["height"] <= v["y"] + v["height"] + 1
    page.keyboard.press("1")
    expect(page.locator("#box-zoom")).to_have_text("100%")
    assert abs(img.bounding_box()["width"] - w) <= 1

    # the wheel zooms around the pointer: the image point under it stays put
    x, y = b["x"] + 0.3 * b["width"], b["y"] + 0.4 * b["height"]
    page.mouse.move(x, y)
    before = natural_at(page, img, x, y)
    for _ in range(3):
        page.mouse.wheel(0, -300)
    page.wait_for_function("() => parseInt(document.querySelector('#box-zoom').textContent) > 300")
    after = natural_at(page, img, x, y)
    assert abs(after[0] - before[0]) <= 1 and abs(after[1] - before[1]) <= 1
    assert img.bounding_box()["width"] > 3 * w
    shot(page, "box-editor-zoomed")

    # drawing while zoomed saves image pixels
    page.keyboard.press("c")
    v = viewport.bounding_box()
    start, end = (v["x"] + 100, v["y"] + 80), (v["x"] + 300, v["y"] + 260)
    expected = [natural_at(page, img, *start), natural_at(page, img, *end)]
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=5)
    page.mouse.up()
    coords = page.locator("#box-coords").inner_text().split("·")[0]
    got = [int(t) for t in coords.replace(",", " ").split() if t.isdigit()]
    want = [expected[0][0], expected[0][1], expected[1][0], expected[1][1]]
    assert all(abs(g - e) <= 1 for g, e in zip(got, want, strict=True)), (got, want)

    # pan with space held: the view moves, the box does not
    scroll = viewport.evaluate("v => [v.scrollLeft, v.scrollTop]")
    page.keyboard.down(" ")
    page.mouse.move(v["x"] + 400, v["y"] + 300)
    page.mouse.down()
    page.mouse.move(v["x"] + 250, v["y"] + 200, steps=5)
    page.mouse.up()
    page.keyboard.up(" ")
    moved = viewport.evaluate("v => [v.scrollLeft, v.scrollTop]")
    assert moved[0] - scroll[0] == pytest.approx(150, abs=2)
    assert moved[1] - scroll[1] == pytest.approx(100, abs=2)
    expect(page.locator("#box-coords")).to_contain_text(coords.strip())

    page.keyboard.press("0")  # back to the whole image
    b, v = img.bounding_box(), viewport.bounding_box()
    assert b["x"] >= v["x"] and b["y"] >= v["y"]
    assert b["y"] + b["height"] <= v["y"] + v["height"] + 1


def test_box_editor_undo_and_redo(page, server_url, catalog) -> None:  # noqa: ANN001
    image_id = sorted(catalog.annotated)[8]
    open_page(page, server_url, f"#/boxes/{enc(image_id)}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    status, coords = page.locator("#box-status"), page.locator("#box-coords")
    expect(status).to_have_attribute("data-state", "saved")
    stored = coords.inner_text()
    img = page.locator("#box-stage img")

    page.keyboard.press("c")  # 1: cleared
    drag(page, img, (0.1, 0.1), (0.5, 0.5))  # 2: a new box
    first = coords.inner_text()
    drag(page, page.locator("#box-selection"), (0.5, 0.5), (0.9, 0.9))  # 3: moved
    moved = coords.inner_text()
    assert len({stored, first, moved}) == 3

    page.keyboard.press("Control+z")
    expect(coords).to_have_text(first)
    page.keyboard.press("Control+z")
    expect(status).to_have_text("Unsaved: box cleared")
    page.keyboard.press("Control+z")
    expect(coords).to_have_text(stored)
    expect(status).to_have_attribute("data-state", "saved")  # back to what is stored
    page.keyboard.press("Control+z")
    expect(page.locator("#box-message")).to_contain_text("Nothing to undo")
    expect(page.locator("#box-undo")).to_be_disabled()

    page.keyboard.press("Control+Shift+z")
    expect(status).to_have_text("Unsaved: box cleared")
    page.keyboard.press("Control+y")
    expect(coords).to_have_text(first)
    page.click("#box-redo")
    expect(coords).to_have_text(moved)
    expect(page.locator("#box-redo")).to_be_disabled()
    page.click("#box-undo")
    expect(coords).to_have_text(first)
    drag(page, img, (0.2, 0.6), (0.4, 0.9))  # a new change drops what could be redone
    expect(page.locator("#box-redo")).to_be_disabled()


def test_box_editor_nudges_the_box_with_alt_arrows(page, server_url, catalog) -> None:  # noqa: ANN001
    image_id = sorted(catalog.annotated)[9]
    open_page(page, server_url, f"#/boxes/{enc(image_id)}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    coords = page.locator("#box-coords")
    drag(page, page.locator("#box-stage img"), (0.3, 0.3), (0.6, 0.6))
    start = [int(v) for v in re.findall(r"(?:left|top|right|bottom) (\d+)", coords.inner_text())]
    page.keyboard.press("Alt+ArrowRight")
    page.keyboard.press("Alt+ArrowRight")
    page.keyboard.press("Alt+Shift+ArrowDown")
    page.keyboard.press("Alt+ArrowUp")
    want = [start[0] + 2, start[1] + 9, start[2] + 2, start[3] + 9]  # moved, same size
    expect(coords).to_contain_text(
        f"left {want[0]}, top {want[1]}, right {want[2]}, bottom {want[3]}"
    )
    page.keyboard.press("Control+z")  # each nudge is one undo step
    expect(coords).to_contain_text(f"top {want[1] + 1},")
    for _ in range(300):  # never past the image's edge
        page.keyboard.press("Alt+Shift+ArrowLeft")
    expect(coords).to_contain_text(f"left 0, top {want[1] + 1}, right {want[2] - want[0]},")
    page.keyboard.press("c")
    page.keyboard.press("Alt+ArrowLeft")
    expect(page.locator("#box-message")).to_contain_text("There is no box to move")


def test_similarity_editor_undo_and_redo(page, server_url, catalog) -> None:  # noqa: ANN001
    ref = catalog.ids[4]

    def stored() -> set[tuple[str, str]]:
        return {(t.positive, t.negative) for t in store_triplets(catalog) if t.reference == ref}

    before = stored()
    page.add_init_script(f"localStorage.setItem('tiefjax.token', '{TOKEN}')")
    open_page(page, server_url, f"#/similarity/{enc(ref)}")
    cards = page.locator("#sim-grid .candidate")
    expect(cards.first).to_be_visible()
    more, less = (cards.nth(i).get_attribute("data-id") for i in (0, 1))

    def card(cid: str):  # noqa: ANN202
        return page.locator(f"#sim-grid .candidate[data-id='{cid}']")

    card(more).click()
    card(less).click(button="right")
    page.click("#sim-save")
    expect(page.locator("#sim-message")).to_contain_text("Saved 1 triplet")
    assert stored() == before | {(more, less)}
    expect(card(more)).to_have_count(0)  # judged: no longer a candidate

    page.keyboard.press("Control+z")  # the save: the triplet goes, the marks come back
    expect(card(less)).to_have_attribute("data-mark", "less")
    expect(card(more)).to_have_attribute("data-mark", "more")
    assert stored() == before
    page.keyboard.press("Control+z")  # the "less" mark
    expect(card(less)).to_have_attribute("data-mark", "")
    page.keyboard.press("Control+Shift+z")
    expect(card(less)).to_have_attribute("data-mark", "less")
    page.keyboard.press("Control+y")  # the save again
    expect(card(more)).to_have_count(0)
    expect(page.locator("#sim-redo")).to_be_disabled()
    assert stored() == before | {(more, less)}

    # a deleted triplet comes back with Ctrl+Z, and goes again with Ctrl+Shift+Z
    row = page.locator("#sim-triplets .triplet").filter(has_text=f"{more} over {less}")
    row.locator("button").click()
    expect(row).to_have_count(0)
    assert stored() == before
    page.keyboard.press("Control+z")
    expect(row).to_have_count(1)
    assert stored() == before | {(more, less)}
    page.click("#sim-redo")
    expect(row).to_have_count(0)
    assert stored() == before
