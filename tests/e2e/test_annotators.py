"""Browser tests: "same product" groups in the similarity editor, annotators' own tokens, and the
history page that names who changed what."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .test_site import enc, open_page, wait_route

pytestmark = pytest.mark.browser


def _triplets(ws) -> set[tuple[str, str, str]]:  # noqa: ANN001
    from tiefjax.store import Store

    with Store(ws.store_path) as store:
        return {(t.reference, t.positive, t.negative) for t in store.list_triplets()}


def test_a_same_product_group_saves_its_triplets_under_the_annotators_name(page, bare) -> None:  # noqa: ANN001
    from tiefjax import triplet_marks
    from tiefjax.store import Store

    with Store(bare.ws.store_path) as store:
        token = store.add_annotator("dora")
        ref = store.image_ids()[0]
    before = _triplets(bare.ws)

    open_page(page, bare.url, f"#/similarity/{enc(ref)}?order=ids")
    cards = page.locator("#sim-grid .candidate")
    expect(cards.first).to_be_visible()
    ids = [cards.nth(i).get_attribute("data-id") for i in range(4)]
    page.get_by_role("radio", name=re.compile("same product", re.I)).click()
    cards.nth(0).click()  # same product
    cards.nth(1).focus()
    page.keyboard.press("m")  # more similar
    cards.nth(2).click(modifiers=["Shift"])  # less similar
    cards.nth(3).click(button="right")  # less similar
    expect(cards.nth(0)).to_have_attribute("data-mark", "same")
    expect(cards.nth(0).locator(".mark-tag")).to_have_text("same product")
    expected = set(triplet_marks.expand(ref, ids[:1], ids[1:2], ids[2:4])) - before
    count = triplet_marks.count(1, 1, 2)
    expect(page.locator("#sim-count")).to_have_text(f"1 same · 1 more · 2 less → {count} triplets")

    page.click("#sim-save")
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", token)
    page.click("#token-save")
    expect(page.locator("#sim-message")).to_contain_text(f"Saved {len(expected)} triplets")
    expect(page.locator("#annotator")).to_have_text("Annotating as dora")
    assert _triplets(bare.ws) - before == expected
    with Store(bare.ws.store_path) as store:
        changes, _ = store.changes(annotator="dora")
    assert len(changes) == len(expected)
    assert {c.action for c in changes} == {"triplet.added"}
    assert {c.image_id for c in changes} == {ref, ids[0]}  # the same-product photo is a reference

    # undo removes exactly what the save added, recorded as dora's too
    page.keyboard.press("Control+z")
    expect(page.locator("#sim-triplets .triplet")).to_have_count(
        len({t for t in before if t[0] == ref})
    )
    assert _triplets(bare.ws) == before

    # the history page lists dora's changes, newest first, with links to the images
    open_page(page, bare.url, "#/history?annotator=dora")
    rows = page.locator("#history-list tbody tr")
    expect(rows).to_have_count(2 * len(expected))
    expect(rows.first).to_have_attribute("data-action", "triplet.deleted")
    expect(rows.last).to_have_attribute("data-action", "triplet.added")
    expect(rows.first.locator("td").nth(1)).to_have_text("dora")
    page.fill("#history-image", ids[0])
    page.click("#history-filters button[type=submit]")
    wait_route(page, f"#/history?image={ids[0]}")
    expect(rows).to_have_count(2 * len([t for t in expected if t[0] == ids[0]]))

    # a revoked token is forgotten on the next visit, so saves ask for a token again
    with Store(bare.ws.store_path) as store:
        store.remove_annotator("dora")
    page.reload()  # a new visit (a goto that changes only the hash would not be one)
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#annotator")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('tiefjax.token')") is None


def test_box_saves_appear_in_the_images_history(page, bare) -> None:  # noqa: ANN001
    from tiefjax.store import Store

    with Store(bare.ws.store_path) as store:
        image = next(i for i in store.image_ids() if store.get_box(i) is not None)
        store.put_box(image, (5, 6, 50, 60), by="erin")
    open_page(page, bare.url, f"#/boxes/{enc(image)}?order=ids")
    page.click("#box-history")
    wait_route(page, f"#/history?image={image}")
    row = page.locator("#history-list tbody tr").first
    expect(row).to_have_attribute("data-action", "box.saved")
    expect(row).to_contain_text("erin")
    expect(row).to_contain_text("5, 6 → 50, 60")
