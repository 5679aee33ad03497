"""Store prices: the input a price arrives as, and how it is recorded."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from bson import ObjectId

from notifier import validation
from notifier.errors import InputError
from notifier.shopping.checks import changed
from notifier.shopping.history import daily_low, history_entry
from notifier.shopping.items import known
from notifier.storage.writes import Upsert

RegularCents = Annotated[int, validation.CENTS, msgspec.Meta(description="at least price_in_cents")]
ValidUntil = Annotated[
    datetime,
    validation.must(
        "must be an ISO 8601 date-time string",
        description="in the future; without a zone, UTC",
        extra_json_schema={"format": "date-time"},
    ),
]


class PriceInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A store's current price for an item, as posted by an admin, the feed or an import."""

    store_name: validation.Name
    item_name: validation.Name
    price_in_cents: validation.Cents
    regular_price_in_cents: RegularCents
    valid_until: ValidUntil | None = None

    @classmethod
    def parse(cls, body: object) -> PriceInput:
        """Read a price from a JSON body; raise InputError naming the bad field.

        valid_until is read as Python reads ISO 8601 (a form's "2026-05-01T12:00" too)
        before the shape is checked: msgspec's date-times want seconds.
        """
        if isinstance(body, dict) and isinstance(body.get("valid_until"), str):
            body = {
                **body,
                "valid_until": validation.future_time(body["valid_until"], "valid_until"),
            }
        price = validation.decode(cls, body)
        if price.price_in_cents > price.regular_price_in_cents:
            raise InputError("price_in_cents must not exceed regular_price_in_cents")
        return msgspec.structs.replace(
            price,
            store_name=validation.name(price.store_name, "store_name"),
            item_name=validation.name(price.item_name, "item_name"),
        )


def store_id_for(store_name: str) -> str:
    """A stable, readable id for a store name ("Fresh Mart" -> "fresh-mart")."""
    key = validation.item_key(store_name)
    slug = re.sub(r"[^a-z0-9]+", "-", key).strip("-")
    return slug or "store-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def record_price(
    price: PriceInput, now: datetime | None = None, price_id: str | None = None
) -> tuple[str, list[Upsert]]:
    """The writes that make `price` the store's current price; returns (price_id, writes).

    Every path that sets a price applies these writes, so each gets its history entry.
    A caller that may retry (an import task) passes a `price_id` of its own that a retry
    repeats, so the history records the price once.
    """
    now = now or datetime.now(UTC)
    store_id = store_id_for(price.store_name)
    price_id = price_id or str(ObjectId())
    key = validation.item_key(price.item_name)
    return price_id, [
        Upsert("stores", {"_id": store_id}, {"$setOnInsert": {"name": price.store_name}}),
        Upsert(
            "prices",
            {"store_id": store_id, "item_key": key},
            {
                "$set": {
                    "price_id": price_id,
                    "store_name": price.store_name,
                    "item_name": price.item_name,
                    "price_in_cents": price.price_in_cents,
                    "regular_price_in_cents": price.regular_price_in_cents,
                    "valid_until": price.valid_until,
                    "updated_at": now,
                }
            },
        ),
        changed(key, now),  # the next check of changed items looks at this one
        known(key, price.item_name, now),  # the watch form suggests it from now on
        history_entry(
            price_id,
            store_id,
            price.store_name,
            key,
            price.item_name,
            price.price_in_cents,
            price.regular_price_in_cents,
            now,
        ),
        daily_low(store_id, price.store_name, key, price.item_name, price.price_in_cents, now),
    ]


CSV_COLUMNS = ("store_name", "item_name", "price_in_cents", "regular_price_in_cents")
CSV_FIELDS = (*CSV_COLUMNS, "valid_until")  # other columns are ignored
MAX_CSV_ROWS = 10_000


@dataclass
class PriceFile:
    """A parsed price CSV: the rows that can be applied and the rejected ones, by line."""

    rows: list[tuple[int, PriceInput]]
    rejected: list[dict[str, object]]


def parse_price_csv(text: str) -> PriceFile:
    """Read a CSV with a header of CSV_COLUMNS (and optionally valid_until).

    A file that cannot be read as such raises InputError and nothing is applied; a bad
    row is rejected with its line number and reason, and the good rows stand.
    """
    try:
        return _read_price_csv(csv.DictReader(io.StringIO(text)))
    except csv.Error as e:
        raise InputError(f"the file is not valid CSV: {e}") from None


def _read_price_csv(reader: csv.DictReader[str]) -> PriceFile:
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise InputError(
            "the CSV header must name "
            + ", ".join(CSV_COLUMNS)
            + "; missing: "
            + ", ".join(missing)
        )
    reader.fieldnames = header
    parsed = PriceFile([], [])
    for record in reader:
        line = reader.line_num
        if len(parsed.rows) + len(parsed.rejected) >= MAX_CSV_ROWS:
            raise InputError(f"a price file holds at most {MAX_CSV_ROWS} rows")
        body: dict[str, object] = {
            k: (v or "").strip() for k, v in record.items() if k in CSV_FIELDS
        }
        for column in ("price_in_cents", "regular_price_in_cents"):
            value = str(body.get(column, ""))
            body[column] = int(value) if value.isascii() and value.isdigit() else value
        body["valid_until"] = body.get("valid_until") or None
        try:
            parsed.rows.append((line, PriceInput.parse(body)))
        except InputError as e:
            parsed.rejected.append({"line": line, "reason": csv_reason(e.message, record)})
    return parsed


CSV_LABELS = {
    "store_name": "the store",
    "item_name": "the item",
    "price_in_cents": "the price",
    "regular_price_in_cents": "the regular price",
    "valid_until": "valid until",
}


def csv_reason(message: str, record: dict[str, str | None]) -> str:
    """Why a row was rejected, in words, naming the columns and what they held.

    "price_in_cents must be a whole number of cents..." becomes "The price must be a whole
    number of cents... (column price_in_cents: "2.49")".
    """
    named = [c for c in CSV_FIELDS if re.search(rf"\b{c}\b", message)]
    for column in sorted(named, key=len, reverse=True):
        message = re.sub(rf"\b{column}\b", CSV_LABELS[column], message)
    message = message[:1].upper() + message[1:]
    held = []
    for column in named:
        value = (record.get(column) or "").strip()
        shown = f'"{value[:40]}{"…" if len(value) > 40 else ""}"' if value else "empty"
        held.append(f"{column}: {shown}")
    columns = "columns" if len(held) > 1 else "column"
    return f"{message} ({columns} {', '.join(held)})" if held else message
