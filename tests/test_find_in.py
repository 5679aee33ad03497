"""find_in: the listed field leads the filter, which is what SecantusDB plans by.

A deal check's live chunk asks for 100 users' watches of one item. With `item_key`
first, SecantusDB walked every watcher of the item for each chunk (the live-first
benchmark: no online watcher of a 20,000-watcher deal heard of it for 85 s).
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import MongoClient, monitoring

from notifier.settings import Settings
from notifier.storage.batches import find_in


class Finds(monitoring.CommandListener):
    """The filters of the find commands a client sent."""

    def __init__(self) -> None:
        self.filters: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(dict(event.command["filter"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_the_listed_field_leads_and_the_query_still_applies(config: Settings, db: Any) -> None:
    users = [str(ObjectId()) for _ in range(3)]
    item = f"item-{ObjectId()}"
    db.watchlists.insert_many(
        [{"user_id": u, "item_key": item} for u in users]
        + [{"user_id": users[0], "item_key": f"other-{ObjectId()}"}]
    )
    finds = Finds()
    client: MongoClient[dict[str, Any]] = MongoClient(config.mongodb_uri, event_listeners=[finds])
    try:
        watchlists = client.get_default_database().watchlists
        query = {"item_key": {"$in": [item]}, "user_id": "ignored: the listed values win"}
        found = list(find_in(watchlists, "user_id", users[:2], query))
    finally:
        client.close()
    assert sorted(w["user_id"] for w in found) == sorted(users[:2])
    assert {w["item_key"] for w in found} == {item}
    assert [list(f) for f in finds.filters] == [["user_id", "item_key"]]
    assert finds.filters[0]["user_id"] == {"$in": sorted(users[:2])}
