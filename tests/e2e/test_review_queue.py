"""Both editors open on the review queue the model fills, follow it with n/p, keep the id order
one click away, and show the queue as it is now (after new detections or new judgements)."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
from playwright.sync_api import expect

from .conftest import ODD_ID
from .test_site import enc, give_token, open_page, wait_route

pytestmark = pytest.mark.browser


def api_json(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path) as answer:
        return json.load(answer)


def test_box_editor_opens_on_the_review_queue(page, bare, catalog) -> None:  # noqa: ANN001
    from tiefjax.store import Box, Detection, Store

    todo = [catalog.ids[2], catalog.ids[5]]
    disagreeing = catalog.ids[7]
    with Store(bare.ws.store_path) as store:
        for image_id in todo:
            store.delete_box(image_id, store.get_box(image_id).version)
        far = store.get_image(disagreeing)
        store.put_detections(
            [
                Detection(todo[0], Box(1, 1, 30, 30), 0.99, False, 0.3, "regressors_disagree"),
                Detection(todo[1], Box(1, 1, 30, 30), 0.55, False, 0.9, "near_threshold"),
                Detection(ODD_ID, Box(1, 1, 30, 30), 0.99, False, 0.6, "regressors_disagree"),
                # far from its annotated box (a corner of the photo): queued as disagreeing
                Detection(disagreeing, Box(far.width - 9, far.height - 9, far.width, far.height),
                          0.99, False, 0.1, "regressors_disagree"),
            ]
        )  # fmt: skip
    queue = api_json(bare.url, "api/review/boxes")
    order = [item["id"] for item in queue["items"]]
    assert order == [disagreeing, todo[1], ODD_ID, todo[0]]

    open_page(page, bare.url, "#/boxes")  # no id: the top of the queue
    wait_route(page, f"#/boxes/{order[0]}")
    info = page.locator("#box-queue")
    expect(info).to_contain_text("Review queue 1 of 4")
    expect(info).to_contain_text("differs from the annotated box")
    expect(page.locator("#box-order [aria-checked='true']")).to_have_text("Review queue")
    for n, image_id in enumerate(order[1:], start=2):  # n follows the queue, not the ids
        page.keyboard.press("n")
        wait_route(page, f"#/boxes/{image_id}")
        expect(info).to_contain_text(f"Review queue {n} of 4")
    expect(page.locator("#box-queue")).to_have_attribute("data-reason", "regressors_disagree")
    page.keyboard.press("n")
    expect(page.locator("#box-message")).to_contain_text("end of the review queue")

    # the id order is one click away, and n then walks the catalog by id
    page.click("#box-order [data-value='ids']")
    wait_route(page, f"#/boxes/{order[-1]}?order=ids")
    expect(page.locator("#box-queue")).to_have_attribute("data-state", "ids")
    page.keyboard.press("n")
    after = catalog.ids[catalog.ids.index(order[-1]) + 1]
    wait_route(page, f"#/boxes/{after}?order=ids")

    # accepting a queued detection takes the photo off the queue; new detections reorder it
    open_page(page, bare.url, f"#/boxes/{enc(todo[1])}")
    page.wait_for_selector("#box-stage[data-ready='true']")
    expect(page.locator("#box-queue")).to_contain_text("Review queue 2 of 4")
    page.keyboard.press("d")  # the detection is right: take it as the box
    page.keyboard.press("s")
    give_token(page)
    expect(page.locator("#box-status")).to_have_attribute("data-state", "saved")
    with Store(bare.ws.store_path) as store:
        store.put_detections([Detection(todo[0], Box(1, 1, 30, 30), 0.1, True, 1.0, "no_window")])
    open_page(page, bare.url, "#/boxes")
    wait_route(page, f"#/boxes/{todo[0]}")
    expect(page.locator("#box-queue")).to_contain_text("Review queue 1 of 3")
    expect(page.locator("#box-queue")).to_contain_text("whole photo was used")


def test_similarity_editor_opens_on_the_review_queue(page, bare, catalog) -> None:  # noqa: ANN001
    from tiefjax.store import Store

    shutil.copytree(bare.index_from, bare.ws.index_dir, dirs_exist_ok=True)  # `tiefjax index`
    queue = api_json(bare.url, "api/review/triplets")
    assert queue["reason"] == "near_tie" and queue["items"]
    top = queue["items"][0]

    open_page(page, bare.url, "#/similarity")  # no id: the top of the queue
    wait_route(page, f"#/similarity/{top['reference']}")
    info = page.locator("#sim-queue")
    expect(info).to_contain_text(f"Review queue 1 of {queue['total']}")
    expect(info).to_contain_text("nearly tied")
    pair = page.locator("#sim-grid .candidate[data-pair='true']")
    expect(pair).to_have_count(2)
    assert [pair.nth(i).get_attribute("data-id") for i in range(2)] == [top["first"], top["second"]]
    cards = page.locator("#sim-grid .candidate")
    assert cards.nth(0).get_attribute("data-id") == top["first"]  # the pair comes first

    # n follows the queue's references
    page.keyboard.press("n")
    wait_route(page, f"#/similarity/{queue['items'][1]['reference']}")
    expect(info).to_contain_text(f"Review queue 2 of {queue['total']}")  # the new page is up
    page.keyboard.press("p")
    wait_route(page, f"#/similarity/{top['reference']}")

    # judging the pair takes it off the queue
    pair = page.locator("#sim-grid .candidate[data-pair='true']")
    pair.nth(0).click()
    pair.nth(1).click(modifiers=["Shift"])
    page.click("#sim-save")
    give_token(page)
    expect(page.locator("#sim-message")).to_contain_text("Saved 1 triplet")
    with Store(bare.ws.store_path) as store:
        stored = [(t.positive, t.negative) for t in store.list_triplets(top["reference"])]
    assert (top["first"], top["second"]) in stored
    open_page(page, bare.url, "#/similarity")
    wait_route(page, f"#/similarity/{queue['items'][1]['reference']}")
    expect(page.locator("#sim-queue")).to_contain_text(f"Review queue 1 of {queue['total'] - 1}")

    # the id order is one click away
    page.click("#sim-order [data-value='ids']")
    reference = queue["items"][1]["reference"]
    wait_route(page, f"#/similarity/{reference}?order=ids")
    expect(page.locator("#sim-queue")).to_have_attribute("data-state", "ids")
    after = catalog.ids[(catalog.ids.index(reference) + 1) % len(catalog.ids)]
    expect(page.locator("#sim-next")).to_have_attribute(
        "href", f"#/similarity/{enc(after)}?order=ids"
    )
