"""The inbox (issue 20.3 and 20.5): archive and bulk actions with exact counts, announcements
in every user's history, the unread count in the title and icon, and the small ones."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import urllib.parse
from email.message import EmailMessage
from typing import Any

import pytest

import notifier.notifications.bulk as bulk_actions
from notifier.email.service import compose
from notifier.notifications.state import recount
from notifier.notifications.store import NotificationWriter
from notifier.shopping.prices import parse_price_csv
from tests.helpers import announce, form, login, wait_announcement_stored, watchlist


def seed(db, user, count: int, kind: str = "system-message") -> list[str]:
    """`count` unread notifications; their ids, oldest first."""
    writer = NotificationWriter(db)
    data = (
        {"message": "m", "severity": "info"}
        if kind == "system-message"
        else {"job": "price-import", "status": "succeeded", "summary": ""}
    )
    return [
        writer.create(user.user_id, kind, data)["data"]["notification_id"] for _ in range(count)
    ]


async def api(fetch, user, path: str, body: Any = None) -> Any:
    method = "POST" if body is not None else "GET"
    response = await fetch(path, method, body, headers=user.auth)
    assert response.code == 200, response.body
    return json.loads(response.body)


def unread_stored(db, user) -> int:
    return int(db.user_state.find_one({"_id": user.user_id})["unread"])


@pytest.mark.gen_test(timeout=60)
async def test_archiving_marks_read_leaves_the_default_views_and_keeps_counts_exact(
    fetch, db, alice
):
    ids = seed(db, alice, 6)
    await api(fetch, alice, "/api/notifications/read", {"ids": ids[:1]})  # one read already
    result = await api(
        fetch, alice, "/api/notifications/bulk", {"action": "archive", "ids": ids[:3]}
    )
    # Three archived; the two of them that were unread went read: the count drops by two.
    assert result == {"changed": 3, "more": False, "unread_count": 3}
    inbox = await api(fetch, alice, "/api/notifications")
    assert [n["id"] for n in inbox["items"]] == ids[3:][::-1] and inbox["unread_count"] == 3
    archived = await api(fetch, alice, "/api/notifications?archived=true")
    assert [n["id"] for n in archived["items"]] == ids[:3][::-1]
    assert all(n["archived"] is True and n["read"] for n in archived["items"])
    both = await api(fetch, alice, "/api/notifications?archived=all&limit=4")
    assert [n["id"] for n in both["items"]] == ids[2:][::-1] and both["next"] == ids[2]
    # Again: nothing changes; then back to the inbox, still read.
    again = await api(
        fetch, alice, "/api/notifications/bulk", {"action": "archive", "ids": ids[:3]}
    )
    assert again["changed"] == 0 and again["unread_count"] == 3
    back = await api(
        fetch, alice, "/api/notifications/bulk", {"action": "unarchive", "ids": ids[:1]}
    )
    assert back == {"changed": 1, "more": False, "unread_count": 3}
    assert len((await api(fetch, alice, "/api/notifications"))["items"]) == 4
    # The state document agrees with a recount from scratch.
    assert unread_stored(db, alice) == 3
    recount(db, [alice.user_id])
    assert unread_stored(db, alice) == 3


@pytest.mark.gen_test(timeout=60)
async def test_pages_of_the_inbox_skip_archived_ones_without_gaps(fetch, db, alice):
    ids = seed(db, alice, 30)
    await api(fetch, alice, "/api/notifications/bulk", {"action": "archive", "ids": ids[5:25]})
    seen, before = [], ""
    while True:
        page = await api(fetch, alice, f"/api/notifications?limit=4{before}")
        seen += [n["id"] for n in page["items"]]
        if page["next"] is None:
            break
        before = f"&before={page['next']}"
    assert seen == (ids[:5] + ids[25:])[::-1]


@pytest.mark.gen_test(timeout=60)
async def test_bulk_by_filter_goes_through_every_match_a_batch_at_a_time(
    fetch, db, alice, monkeypatch
):
    monkeypatch.setattr(bulk_actions, "BULK_LIMIT", 4)
    jobs = seed(db, alice, 6, "job-complete")
    notes = seed(db, alice, 3)
    body = {"action": "read", "filter": {"type": "jobs"}}
    first = await api(fetch, alice, "/api/notifications/bulk", body)
    assert first == {"changed": 4, "more": True, "unread_count": 5}
    second = await api(fetch, alice, "/api/notifications/bulk", body)
    assert second == {"changed": 2, "more": False, "unread_count": 3}
    unread = await api(fetch, alice, "/api/notifications?unread=true")
    assert sorted(n["id"] for n in unread["items"]) == notes
    archive = {"action": "archive", "filter": {"type": "jobs", "archived": False}}
    assert (await api(fetch, alice, "/api/notifications/bulk", archive))["more"] is True
    assert (await api(fetch, alice, "/api/notifications/bulk", archive))["more"] is False
    archived = await api(fetch, alice, "/api/notifications?archived=true&limit=10")
    assert sorted(n["id"] for n in archived["items"]) == jobs


@pytest.mark.gen_test(timeout=60)
async def test_history_selects_and_archives_without_javascript(fetch, db, alice):
    ids = seed(db, alice, 3)
    _, browser = await login(fetch, alice.username, alice.password)
    page = (await fetch("/history", headers=browser)).body.decode()
    assert page.count('form="bulk"') == 3 and 'action="/history/bulk"' in page
    body = (
        form(_xsrf=browser["X-XSRFToken"], action="archive", back="/history")
        + "&"
        + "&".join(f"ids={i}" for i in ids[:2])
    )
    done = await fetch("/history/bulk", "POST", body, headers={"Cookie": browser["Cookie"]})
    assert done.code == 303 and done.headers["Location"] == "/history?done=archive&count=2"
    after = (await fetch(done.headers["Location"], headers=browser)).body.decode()
    assert "Archived 2 notifications." in after
    assert re.findall(r'<li id="notification-(\d{12})"', after) == [ids[2]]
    # "All matching these filters": the archived view's filter, back to the inbox.
    body = form(
        _xsrf=browser["X-XSRFToken"],
        action="unarchive",
        scope="matching",
        filter_archived="true",
        back="/history?archived=true&done=archive&count=2",
    )
    done = await fetch("/history/bulk", "POST", body, headers={"Cookie": browser["Cookie"]})
    assert done.headers["Location"] == "/history?archived=true&done=unarchive&count=2"
    nothing = form(_xsrf=browser["X-XSRFToken"], action="archive")
    refused = await fetch("/history/bulk", "POST", nothing, headers={"Cookie": browser["Cookie"]})
    assert refused.code == 400 and "tick at least one" in refused.body.decode()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("worker")
async def test_an_announcement_is_in_the_history_of_every_user_who_existed(
    fetch, db, alice, admin, make_user
):
    posted = await announce(fetch, admin, "Closed on Monday", "warning")
    later = make_user(prefix="later")  # an account made after it
    loop = asyncio.get_running_loop()
    for user in (alice, admin):
        await loop.run_in_executor(
            None, wait_announcement_stored, db, user.user_id, "Closed on Monday"
        )
    page = await api(fetch, alice, "/api/notifications?type=announcements")
    [copy] = page["items"]
    assert copy["data"]["message"] == "Closed on Monday" and copy["data"]["severity"] == "warning"
    assert copy["data"]["announcement_id"] == posted["id"]
    assert page["unread_count"] == 1 and not copy["read"]
    assert db.notifications.count_documents({"user_id": later.user_id}) == 0
    # Its live fragment shows the row and the badge, but no second toast.
    from notifier.realtime.render import PayloadRenderer

    html = PayloadRenderer().notification({"notification": copy, "unread_count": 1}, "html")
    assert 'id="notification-' in html and "#toasts" not in html


@pytest.mark.gen_test
async def test_the_title_counts_unread_and_the_icon_shows_it(fetch, db, alice):
    seed(db, alice, 3)
    _, browser = await login(fetch, alice.username, alice.password)
    page = (await fetch("/history", headers=browser)).body.decode()
    assert "<title>(3) History · notifier</title>" in page
    assert 'href="/icons/unread-3.svg"' in page
    for n, label in ((0, None), (7, "7"), (42, "42"), (100, "99+"), (123456, "99+")):
        icon = await fetch(f"/icons/unread-{n}.svg")
        assert icon.code == 200 and icon.headers["Content-Type"] == "image/svg+xml"
        body = icon.body.decode()
        assert (f">{label}</text>" in body) if label else "<text" not in body
    assert (await fetch("/icons/unread-x.svg")).code == 404


@pytest.fixture
def app_config(config):
    """Development without SMTP_URL: emails go to var/outbox/ and /dev/outbox lists them."""
    return dataclasses.replace(config, smtp_url=None)


def write_eml(folder, name: str, to: str, subject: str) -> None:
    msg = EmailMessage()
    msg["To"], msg["From"], msg["Subject"] = to, "notifier <n@localhost>", subject
    msg.set_content("hello")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(msg.as_bytes())


@pytest.mark.gen_test
async def test_the_dev_outbox_shows_a_shopper_only_their_own_emails(
    fetch, app_config, alice, bob, admin
):
    outbox = app_config.var_dir / "outbox"
    mine, theirs = f"{alice.username}-x.eml", f"{bob.username}-x.eml"
    write_eml(outbox, mine, f"{alice.username}@example.test", "For alice")
    write_eml(outbox, theirs, f"{bob.username}@example.test", "For bob")
    _, as_alice = await login(fetch, alice.username, alice.password)
    listing = (await fetch("/dev/outbox", headers=as_alice)).body.decode()
    assert "For alice" in listing and "For bob" not in listing
    assert (await fetch(f"/dev/outbox/{mine}", headers=as_alice)).code == 200
    assert (await fetch(f"/dev/outbox/{theirs}", headers=as_alice)).code == 404
    _, as_admin = await login(fetch, admin.username, admin.password)
    everything = (await fetch("/dev/outbox", headers=as_admin)).body.decode()
    assert "For alice" in everything and "For bob" in everything
    assert (await fetch(f"/dev/outbox/{theirs}", headers=as_admin)).code == 200


def test_the_plain_text_email_has_a_line_per_deal_and_blank_lines_between(config):
    deal = {"item_name": "Milk 1L", "best_price_in_cents": 256, "store_name": "Value Foods"}
    notes = [
        {"data": {"headline": "Milk 1L $2.56 at Value Foods, 22% off", "message": "m",
                  "deals": [{**deal, "regular_price_in_cents": 329}],
                  "deal_details": [{"discount_percent": 22, "lowest_in_days": 90}]}},
        {"data": {"message": "You have 2 new deal(s) on your watched items!",
                  "deals": [deal, {**deal, "item_name": "Bananas"}]}},
    ]  # fmt: skip
    user = {"_id": "a" * 24, "username": "alice", "email": "alice@example.test"}
    email = {"_id": "e1", "kind": "digest"}
    text = compose(config, email, user, notes).message.get_body(("plain",)).get_content()
    lines = text.splitlines()
    assert lines[2:9] == [
        "Milk 1L $2.56 at Value Foods, 22% off",
        "  - Milk 1L: $2.56 (was $3.29) at Value Foods, 22% off, lowest in 90 days",
        "",
        "You have 2 new deal(s) on your watched items!",
        "  - Milk 1L: $2.56 at Value Foods",
        "  - Bananas: $2.56 at Value Foods",
        "",
    ]
    assert lines[9].startswith("See them all: ")


def test_a_rejected_csv_row_says_which_column_and_what_it_held():
    parsed = parse_price_csv(
        "store_name,item_name,price_in_cents,regular_price_in_cents\n"
        "Fresh Mart,Milk,2.49,300\n"
        "Fresh Mart,Milk,500,400\n"
        ",Milk,100,200\n"
    )
    assert [r["reason"] for r in parsed.rejected] == [
        'The price must be a whole number of cents between 0 and 100000000 (column price_in_cents: "2.49")',
        'The price must not exceed the regular price (columns price_in_cents: "500", regular_price_in_cents: "400")',
        "The store is required and must be a non-empty string (column store_name: empty)",
    ]


@pytest.mark.gen_test
async def test_a_removed_watch_can_be_put_back_only_by_its_owner(fetch, alice, bob, item):
    await fetch(
        "/api/watchlist",
        "POST",
        {"item_name": item, "target_price_in_cents": 150},
        headers=alice.auth,
    )
    _, as_alice = await login(fetch, alice.username, alice.password)
    htmx = {**as_alice, "HX-Request": "true"}
    removed = await fetch(
        f"/fragments/watchlist/{urllib.parse.quote(item)}", "DELETE", headers=htmx
    )
    undo = re.search(r'name="undo" value="([0-9a-f]{24})"', removed.body.decode()).group(1)
    _, as_bob = await login(fetch, bob.username, bob.password)
    stolen = await fetch(
        "/fragments/watchlist-undo",
        "POST",
        form(undo=undo),
        headers={**as_bob, "HX-Request": "true"},
    )
    assert stolen.code == 404
    assert await watchlist(fetch, bob) == []
    restored = await fetch("/fragments/watchlist-undo", "POST", form(undo=undo), headers=htmx)
    assert restored.code == 200
    assert await watchlist(fetch, alice) == [
        {
            "item_name": item,
            "target_price_in_cents": 150,
            "min_discount_percent": None,
            "realert_hours": None,
        }
    ]
