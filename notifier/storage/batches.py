"""Reading many documents by a list of keys, a bounded batch at a time.

SecantusDB (the embedded development server) evaluates `$in` against every listed value
for every candidate document, so one query with 1,000 values costs 80 times one with
100 (3.2 s against 38 ms, measured); a real MongoDB answers either from its index. Short
batches cost a real MongoDB a few more round trips and keep SecantusDB linear.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError
from pymongo.synchronous.collection import Collection

IN_BATCH = 100  # values per `$in`
DUPLICATE_KEY = 11000  # the server's error code for a unique index refusing a write

T = TypeVar("T")


def batched(values: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    """`values` in consecutive slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def unset_each(collection: Collection[Any], ids: Sequence[Any], field: str) -> None:
    """Remove `field` from each of these documents, in one unordered bulk write.

    One update per _id, sent together: on SecantusDB this is ten times faster than
    update_many with `$in` (0.37 s against 5 s for 1,000), and as cheap on MongoDB.
    """
    if ids:
        collection.bulk_write(
            [UpdateOne({"_id": i}, {"$unset": {field: ""}}) for i in ids], ordered=False
        )


def find_in(
    collection: Collection[Any],
    field: str,
    values: Iterable[Any],
    query: dict[str, Any] | None = None,
    projection: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """The documents whose `field` is one of `values` (and match `query`), batch by batch."""
    for batch in batched(sorted(set(values))):
        yield from collection.find({**(query or {}), field: {"$in": list(batch)}}, projection)


def insert_new(collection: Collection[Any], docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the documents not stored before (their ids are deterministic); returns those."""
    if not docs:
        return []
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as e:
        if any(w.get("code") != DUPLICATE_KEY for w in e.details["writeErrors"]):
            raise
        dup = {w["index"] for w in e.details["writeErrors"]}
        return [d for i, d in enumerate(docs) if i not in dup]
    return docs
