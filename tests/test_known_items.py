"""Issue 20 #4: items as people type them. A case or spacing variant of a priced item is that
item, under its display name; the watch form suggests known items (a <datalist>, no script);
an item no store has priced may be watched and is marked as not yet priced."""

from __future__ import annotations

import html
import json
import uuid

import pytest

from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.publishing import NotificationService
from notifier.shopping.deals import DealCheck
from notifier.validation import item_key
from tests.helpers import form, login, post_price, watchlist


@pytest.mark.gen_test(timeout=60)
async def test_a_variant_of_a_known_item_is_watched_under_its_display_name(
    fetch, db, sync_redis, alice, admin
):
    tag = uuid.uuid4().hex[:6]
    known = f"Coffee beans 500g {tag}"
    await post_price(fetch, admin, known, price=499, regular=699)
    typed = f"  coffee BEANS   500G {tag.upper()} "
    added = await fetch("/api/watchlist", "POST", {"item_name": typed}, headers=alice.auth)
    assert added.code == 201, added.body
    assert json.loads(added.body)["item_name"] == known
    again = await fetch(
        "/api/watchlist",
        "POST",
        {"item_name": f"COFFEE beans 500g {tag}", "target_price_in_cents": 550},
        headers=alice.auth,
    )
    assert again.code == 201 and json.loads(again.body)["item_name"] == known
    items = await watchlist(fetch, alice)
    assert [(i["item_name"], i["target_price_in_cents"]) for i in items] == [(known, 550)]

    # The alert says the display name too (the deal check reads the watch's name).
    check = DealCheck(db, NotificationService(NotificationWriter(db), Publisher(sync_redis)))
    check.run([item_key(known)])
    [note] = db.notifications.find({"user_id": alice.user_id, "type": "deal-notification"})
    assert [d["item_name"] for d in note["data"]["deals"]] == [known]


@pytest.mark.gen_test(timeout=60)
async def test_the_watch_form_suggests_known_items_without_script(fetch, alice, admin):
    tag = uuid.uuid4().hex[:6]
    known = f"Aardvark tea {tag}"  # early in item-key order, among the suggested
    await post_price(fetch, admin, known)
    _, browser = await login(fetch, alice.username, alice.password)
    page = (await fetch("/", headers=browser)).body.decode()
    assert 'list="known-items"' in page
    datalist = page[page.index('<datalist id="known-items">') :]
    datalist = datalist[: datalist.index("</datalist>")]
    assert f'<option value="{html.escape(known)}">' in datalist


@pytest.mark.gen_test(timeout=60)
async def test_an_unknown_item_is_allowed_and_marked_not_yet_priced(fetch, db, alice):
    unknown = f"Dragonfruit {uuid.uuid4().hex[:6]}"
    _, browser = await login(fetch, alice.username, alice.password)
    htmx = {**browser, "HX-Request": "true"}
    added = await fetch("/fragments/watchlist", "POST", form(item_name=unknown), headers=htmx)
    assert added.code == 200, added.body
    fragment = added.body.decode()
    assert f"Watching {unknown}. No store has priced it yet" in fragment
    row = fragment[fragment.index(f'data-item-key="{item_key(unknown)}"') :]
    row = row[: row.index("</li>")]
    assert "Not yet priced" in row and "/items/" not in row
    assert db.watchlists.find_one({"user_id": alice.user_id})["item_name"] == unknown
