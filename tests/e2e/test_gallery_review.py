"""Gallery filters and sorts, bulk "accept detections", why a result matched, and loading states
(issue 15), in Debian's chromium against the real server."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import ODD_ID, serve, shot
from .test_site import give_token, open_page, wait_route

pytestmark = pytest.mark.browser

#: ids[1:5] lose their box (the locator's box is all they have), ids[5] also loses it and its
#: detection is a fallback (no product found); the odd id never had a box nor a detection.
UNBOXED = slice(1, 6)
FALLBACK = 5


@dataclass
class Reviewed:
    ws: object  # a Workspace
    url: str
    ids: list[str]

    def store(self):  # noqa: ANN201
        from tiefjax.store import Store

        return Store(self.ws.store_path)


@pytest.fixture
def reviewed(catalog, tmp_path: Path) -> Iterator[Reviewed]:  # noqa: ANN001
    """A served copy of the catalog with detections for every photo but the odd one."""
    from tiefjax.catalog import init_workspace
    from tiefjax.demo_catalog import load_ground_truth, load_manifest
    from tiefjax.store import Detection, Store
    from tiefjax.workspace import Workspace

    init_workspace(tmp_path / "ws", catalog.demo / "images")
    ws = Workspace(tmp_path / "ws")
    with Store(ws.store_path) as store:
        load_ground_truth(store, load_manifest(catalog.demo), 0)
        ids = store.image_ids()
        photos = [i for i in ids if i != ODD_ID]
        for image_id in photos[UNBOXED]:
            store.delete_box(image_id)
        detections = []
        for n, image_id in enumerate(photos):
            rec = store.get_image(image_id)
            box = (rec.width * 0.1, rec.height * 0.15, rec.width * 0.8, rec.height * 0.9)
            detections.append(Detection(image_id, box, 0.3 + 0.04 * n, n == FALLBACK))
        store.put_detections(detections)
    with serve(ws) as url:
        yield Reviewed(ws, url, photos)


def names(page) -> list[str]:  # noqa: ANN001
    return page.locator("#gallery-grid .card .name").all_inner_texts()


def test_gallery_filters_and_sorts_live_in_the_hash(page, reviewed: Reviewed) -> None:  # noqa: ANN001
    ids = reviewed.ids
    open_page(page, reviewed.url, "#/gallery?size=48")
    expect(page.locator("#gallery-grid .card")).to_have_count(len(ids) + 1)
    assert "null" not in page.locator("main").inner_text()  # no empty slot written out

    page.fill("#gallery-q", "ODD")  # case-insensitive substring of the odd id
    wait_route(page, "#/gallery?page=1&size=48&q=ODD")
    expect(page.locator("#gallery-grid .card")).to_have_count(1)
    assert names(page) == [ODD_ID]
    expect(page.locator("#gallery-q")).to_be_focused()  # typing goes on after the page redraws
    page.click("#clear-filters")
    expect(page.locator("#gallery-grid .card")).to_have_count(len(ids) + 1)

    page.select_option("#gallery-state", "detected")
    wait_route(page, "#/gallery?page=1&size=48&state=detected")
    expect(page.locator("#gallery-grid .card")).to_have_count(4)
    assert names(page) == ids[1:5]
    expect(page.locator("#gallery-grid .chip.detected")).to_have_count(4)

    page.select_option("#gallery-state", "all")
    page.select_option("#gallery-sort", "probability")
    page.select_option("#gallery-order", "desc")
    wait_route(page, "#/gallery?page=1&size=48&sort=probability&order=desc")
    expect(page.locator("#gallery-count")).to_contain_text("only located images are listed")
    expect(page.locator("#gallery-grid .card")).to_have_count(len(ids))  # the odd id: never located
    assert names(page) == ids[::-1]  # probabilities rise with the id
    values = page.locator("#gallery-grid .chip.value").all_inner_texts()
    assert values[0] == f"p {0.3 + 0.04 * (len(ids) - 1):.2f}"
    shot(page, "gallery-sorted")

    page.reload()  # the hash keeps every control
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#gallery-sort")).to_have_value("probability")
    expect(page.locator("#gallery-order")).to_have_value("desc")
    assert names(page) == ids[::-1]

    page.select_option("#gallery-sort", "iou")  # only images with both boxes
    expect(page.locator("#gallery-grid .card")).to_have_count(len(ids) - 5)
    open_page(page, reviewed.url, "#/gallery?state=bogus&sort=nope")  # bad values: the defaults
    expect(page.locator("#gallery-state")).to_have_value("all")
    expect(page.locator("#gallery-grid .card")).to_have_count(len(ids) + 1)


def test_bulk_accept_detections(page, reviewed: Reviewed) -> None:  # noqa: ANN001
    ids = reviewed.ids
    open_page(page, reviewed.url, "#/gallery?page=1&state=detected")
    page.click("#select-mode")
    wait_route(page, "#/gallery?page=1&state=detected&select=1")
    page.click("#select-detected")
    expect(page.locator("#bulk-count")).to_have_text("4 selected")
    page.locator("input.pick").nth(0).uncheck()  # a card can be left out
    expect(page.locator("#bulk-count")).to_have_text("3 selected")
    page.click("#accept-detections")
    give_token(page)
    expect(page.locator("#bulk-message .notice.success")).to_contain_text(
        "Saved 3 detected boxes as annotated boxes."
    )
    expect(page.locator("#gallery-grid .card")).to_have_count(1)  # the one left out
    assert names(page) == [ids[1]]
    with reviewed.store() as store:
        for image_id in ids[2:5]:
            assert store.get_box(image_id).box == store.get_detection(image_id).box
        assert store.get_box(ids[1]) is None
    shot(page, "gallery-bulk-accepted")

    # an image with a box drawn by hand: replaced only after the reviewer confirms
    open_page(page, reviewed.url, f"#/gallery?page=1&q={ids[0]}&select=1")
    page.click("#select-all")
    page.click("#accept-detections")
    expect(page.locator("#overwrite-confirm")).to_contain_text("already have a box drawn by hand")
    page.click("#accept-overwrite")
    expect(page.locator("#bulk-message .notice.success")).to_contain_text("Saved 1 detected box")
    with reviewed.store() as store:
        assert store.get_box(ids[0]).box == store.get_detection(ids[0]).box


def test_results_show_the_box_they_matched_on(page, server_url, catalog) -> None:  # noqa: ANN001
    query = next(i for i in catalog.ids if i != ODD_ID)
    open_page(page, server_url, f"#/image/{query}")
    cards = page.locator("#similar-grid .card")
    expect(cards.first).to_be_visible()
    expect(page.locator(".score-help")).to_contain_text("cosine similarity")
    expect(page.locator(".score-help")).to_contain_text("unsupervised")
    whys = page.locator("#similar-grid .why").all_inner_texts()
    assert len(whys) == cards.count()
    words = "nearly identical|very similar|similar|somewhat similar|not much alike"
    for why, hit_id in zip(whys, page.locator("#similar-grid .card").evaluate_all(
        "cards => cards.map((c) => c.dataset.id)"), strict=True):  # fmt: skip
        source = "annotated box" if hit_id in catalog.annotated else "whole photo"
        assert re.fullmatch(f"({words}) · {source}", why), why
    # one box a card: the one matched on, titled so
    first = cards.first
    expect(first.locator("rect.box")).to_have_count(1)
    assert first.locator("rect.box title").text_content().startswith("matched on its")


def test_loading_states(page, server_url, catalog) -> None:  # noqa: ANN001
    held = []
    page.route(re.compile(r"/api/images\?"), lambda route: held.append(route))
    page.goto(server_url + "#/gallery")
    expect(page.locator(".card.skeleton").first).to_be_visible()  # placeholders while it loads
    expect(page.locator("#gallery-grid")).to_have_count(0)
    page.wait_for_function("() => true")
    assert held, "the gallery page was never requested"
    held[0].continue_()
    page.unroute(re.compile(r"/api/images\?"))
    expect(page.locator("#gallery-grid .card").first).to_be_visible()
    expect(page.locator(".card.skeleton")).to_have_count(0)

    searches = []
    page.route("**/api/search?*", lambda route: searches.append(route))
    open_page(page, server_url, "#/search")
    page.set_input_files("#search-file", str(catalog.image_file(catalog.ids[2])))
    expect(page.locator("#upload-progress")).to_be_attached()
    expect(page.locator("#search-phase")).to_contain_text(re.compile("Upload|search"))
    expect(page.locator("#search-results .card.skeleton").first).to_be_visible()
    page.wait_for_function("() => true")
    assert searches, "the upload was never sent"
    shot(page, "search-uploading")
    searches[0].continue_()
    page.unroute("**/api/search?*")
    expect(page.locator("#search-grid .card").first).to_be_visible()
    expect(page.locator("#search-phase")).to_have_count(0)


def test_static_export_says_filters_need_the_server(page, catalog, tmp_path) -> None:  # noqa: ANN001
    from tiefjax.export_site import export_site

    export_site(catalog.ws, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").as_uri()
    open_page(page, index, "#/gallery?state=annotated&sort=probability&size=48")
    note = page.locator(".notice.warn")
    expect(note).to_contain_text("state=annotated, sort=probability")
    expect(note).to_contain_text("not available in the static export")
    expect(page.locator("#gallery-state")).to_be_disabled()
    expect(page.locator("#select-mode")).to_have_count(0)
    expect(page.locator("#gallery-grid .card")).to_have_count(len(catalog.ids))  # all, by id


def test_the_pager_walks_pages_by_keyset_cursor(page, server_url, catalog) -> None:  # noqa: ANN001
    """Next asks for the page after the last id shown (``after``), not for an offset; a deep
    link still works by offset, and both give the same cards."""
    asked: list[str] = []
    page.on("request", lambda r: "/api/images?" in r.url and asked.append(r.url))
    open_page(page, server_url, "#/gallery?page=1&size=12")
    cards = page.locator("#gallery-grid .card")
    expect(cards).to_have_count(12)
    last_shown = cards.nth(11).get_attribute("data-id")
    asked.clear()
    page.locator(".pager").first.get_by_role("link", name="Next page").click()
    expect(page.locator(".page-info").first).to_have_text("Page 2 of 2")
    by_cursor = [c.get_attribute("data-id") for c in cards.all()]
    assert by_cursor == catalog.ids[12:]
    assert len(asked) == 1 and "offset=" not in asked[0]
    assert f"after={urllib.parse.quote_plus(last_shown)}" in asked[0], asked
    asked.clear()
    page.reload()  # the same page reached by a deep link: by offset
    page.wait_for_selector("body[data-ready='true']")
    expect(cards).to_have_count(len(catalog.ids) - 12)
    assert [c.get_attribute("data-id") for c in cards.all()] == by_cursor
    assert any("offset=12" in url for url in asked), asked
