"""Isolation under random interleavings: nothing of one user ever reaches another."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.publishing import NotificationService

operations = st.lists(
    st.tuples(
        st.sampled_from(["notify", "read_all", "read_one"]), st.integers(0, 2), st.integers(0, 2)
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_messages_read_marks_and_counts_stay_with_their_user(
    io_loop, http_server, base_url, db, sync_redis, make_user, ops
):
    users = [make_user(prefix=f"iso{i}") for i in range(3)]
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    mine: dict[str, list[str]] = {u.user_id: [] for u in users}
    marked: dict[str, set[str]] = {u.user_id: set() for u in users}  # the model of read state
    opened: list = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        http = AsyncHTTPClient()
        socks = opened
        for u in users:
            conn = await websocket_connect(
                base_url.replace("http", "ws") + f"/ws?format=json&token={u.token}"
            )
            assert json.loads(await conn.read_message())["type"] == "connection-established"
            socks.append(conn)

        async def notify(u, text):
            doc = await loop.run_in_executor(
                None,
                lambda: service.notify(
                    u.user_id, "system-message", {"message": text, "severity": "info"}
                ),
            )
            mine[u.user_id].append(doc["data"]["notification_id"])

        async def read(u, body):
            request = HTTPRequest(
                base_url + "/api/notifications/read",
                "POST",
                body=json.dumps(body),
                headers={"Authorization": f"Bearer {u.token}"},
            )
            response = await http.fetch(request, raise_error=False)
            assert response.code in (200, 400)

        for op, who, other in ops:
            u = users[who]
            if op == "notify":
                await notify(u, f"for {u.username}")
            elif op == "read_all":
                await read(u, {"all": True})
                marked[u.user_id] |= set(mine[u.user_id])
            else:  # an id that may be someone else's: it can only ever name u's own
                ids = mine[users[other].user_id]
                if ids:
                    await read(u, {"ids": [ids[-1]]})
                    if ids[-1] in mine[u.user_id]:
                        marked[u.user_id].add(ids[-1])
        for u in users:
            await notify(u, f"end for {u.username}")

        for u, conn in zip(users, socks, strict=True):
            got, read_ids, last = [], [], None
            while not got or got[-1] != mine[u.user_id][-1]:
                last = json.loads(await conn.read_message())
                if last["type"] == "system-message":
                    assert last["data"]["message"].endswith(u.username), last
                    got.append(last["data"]["id"])
                elif last["type"] == "notification-read":
                    read_ids += last["data"]["ids"]
            assert got == mine[u.user_id]  # all of u's, in order, and nothing else
            assert set(read_ids) <= marked[u.user_id]  # only u's own read marks
            unread = len(mine[u.user_id]) - len(marked[u.user_id])
            assert last is not None and last["data"]["unread_count"] == unread

    async def closing_all() -> None:
        try:
            await scenario()
        finally:
            for conn in opened:
                conn.close()

    io_loop.run_sync(closing_all, timeout=60)
    for u in users:  # the stored read state is exactly what u itself did
        stored = {
            format(d["seq"], "012d")
            for d in db.notifications.find({"user_id": u.user_id, "read": True})
        }
        assert stored == marked[u.user_id]
