"""CSV price imports run on a worker and report applied and rejected rows to the uploader."""

from __future__ import annotations

import json
import uuid

import pytest

from notifier.errors import InputError
from notifier.shopping.prices import parse_price_csv
from tests.helpers import login, watch

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.gen_test(timeout=60)
async def test_an_import_applies_good_rows_reports_bad_lines_and_finds_deals(
    fetch, ws_connect, db, alice, admin, item
):
    await watch(fetch, alice, item)
    alice_ws = await ws_connect(f"?format=json&token={alice.token}")
    admin_ws = await ws_connect(f"?format=json&token={admin.token}")
    other = f"Rye bread {uuid.uuid4().hex[:6]}"
    csv_text = (
        "store_name,item_name,price_in_cents,regular_price_in_cents\n"
        f"Fresh Mart,{item},150,300\n"  # line 2: a deal for alice
        f"Fresh Mart,{other},400,300\n"  # line 3: price above regular
        f"Green Grocer,{other},250,300\n"  # line 4
        f"Green Grocer,{other},cheap,300\n"  # line 5: not a number
    )
    response = await fetch(
        "/api/price-imports", "POST", csv_text, headers={**admin.auth, "Content-Type": "text/csv"}
    )
    assert response.code == 202
    job_id = json.loads(response.body)["job_id"]

    done = await admin_ws.recv_type("job-complete", timeout=30, skip=("job-progress",))
    data = done["data"]
    assert (data["job"], data["job_id"], data["status"]) == ("price-import", job_id, "partial")
    assert data["applied"] == 2
    assert [r["line"] for r in data["rejected"]] == [3, 5]
    assert "must not exceed" in data["rejected"][0]["reason"]
    assert "line 3" in data["summary"] and "2 row(s) applied, 2 rejected" in data["summary"]
    assert (
        db.prices.find_one({"item_name": other, "store_name": "Green Grocer"})["price_in_cents"]
        == 250
    )
    assert db.prices.find_one({"item_name": other, "store_name": "Fresh Mart"}) is None
    deal = await alice_ws.recv_type("deal-notification", timeout=30)
    assert deal["data"]["deals"][0]["item_name"] == item


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"store,item,price\nA,B,1\n", "missing: store_name"),
        (b"", "empty"),
        (
            "store_name,item_name,price_in_cents,regular_price_in_cents\nA,\xe9,1,2\n".encode(
                "latin-1"
            ),
            "UTF-8",
        ),
    ],
)
async def test_an_unusable_file_is_refused_and_nothing_is_applied(fetch, db, admin, body, message):
    before = db.prices.count_documents({})
    response = await fetch("/api/price-imports", "POST", body, headers=admin.auth)
    assert response.code == 400
    assert message in json.loads(response.body)["error"]["message"]
    assert db.prices.count_documents({}) == before


@pytest.mark.gen_test
async def test_shoppers_cannot_import(fetch, alice):
    response = await fetch("/api/price-imports", "POST", "x", headers=alice.auth)
    assert response.code == 403


@pytest.mark.gen_test(timeout=60)
async def test_the_admin_page_uploads_a_file(fetch, ws_connect, admin, item):
    admin_ws = await ws_connect(f"?format=json&token={admin.token}")
    _, browser = await login(fetch, admin.username, admin.password)
    boundary = "notifier-test-boundary"
    content = (
        f"store_name,item_name,price_in_cents,regular_price_in_cents\nCorner Market,{item},99,199\n"
    )
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="prices.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n{content}\r\n--{boundary}--\r\n"
    )
    headers = {
        **browser,
        "HX-Request": "true",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    response = await fetch("/fragments/admin/price-imports", "POST", body, headers=headers)
    assert response.code == 200 and "Importing prices.csv" in response.body.decode()
    done = await admin_ws.recv_type("job-complete", timeout=30, skip=("job-progress",))
    assert done["data"]["status"] == "succeeded" and done["data"]["file"] == "prices.csv"


HEADER = "store_name,item_name,price_in_cents,regular_price_in_cents\n"


@pytest.mark.parametrize(
    "text",
    [
        "store_name\x00,item_name,price_in_cents,regular_price_in_cents\n",  # NUL in the header
        "þG\r\x1a\n",  # a new line inside an unquoted field, found by schemathesis
    ],
)
def test_a_file_that_is_not_csv_is_refused_as_input(text):
    with pytest.raises(InputError):
        parse_price_csv(text)


def test_rows_with_odd_values_are_rejected_with_their_line():
    parsed = parse_price_csv(HEADER + "Fresh Mart,Oats,²,300\nFresh Mart,Oats,1,2,extra\n")
    assert [r["line"] for r in parsed.rejected] == [2]
    assert len(parsed.rows) == 1
