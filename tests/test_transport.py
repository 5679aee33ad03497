"""Two transports behind the delivery engine: the fast path, or Tornado's stock API.

The fast path is taken only on a Tornado it was checked against (web/transport.py); on
any other it is the stock API with a warning, never a crash. `make test` also runs the
live-path tests with WS_TRANSPORT=stock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest
import tornado
from tornado import iostream
from tornado.websocket import websocket_connect

from notifier.dev.embedded import free_port
from notifier.errors import ConfigurationError
from tests.helpers import announcement_message, read_until, spawn, wait_subscribed
from web import transport


def test_the_fast_path_is_taken_on_a_checked_tornado_and_undone_for_stock(
    iostream_as_found: None,
) -> None:
    async def choose() -> None:
        assert transport.choose("auto") is True
        assert getattr(iostream.BaseIOStream, "_lean", False)
        assert transport.choose("stock") is False
        assert not getattr(iostream.BaseIOStream, "_lean", False)  # Tornado's own again
        assert transport.choose("fast") is True

    asyncio.run(choose())


def test_an_unchecked_tornado_gets_the_stock_path_and_a_warning(
    monkeypatch, caplog, iostream_as_found: None
) -> None:
    monkeypatch.setattr(tornado, "version_info", (6, 9, 0, 0))

    async def choose() -> None:
        with caplog.at_level(logging.WARNING, logger="web.transport"):
            assert transport.choose("auto") is False
        assert "stock API" in caplog.text
        with pytest.raises(ConfigurationError, match="WS_TRANSPORT=fast"):
            transport.choose("fast")

    asyncio.run(choose())


@pytest.mark.timeout(60)
def test_python_m_web_on_an_unchecked_tornado_serves_sockets_through_tornados_own_api(
    env, alice, sync_redis, io_loop
) -> None:
    port = free_port()
    code = (
        "import tornado; tornado.version_info = (6, 9, 0, 0); "
        "import runpy; runpy.run_module('web', run_name='__main__')"
    )
    proc = spawn([sys.executable, "-c", code], {**env, "PORT": str(port)})
    seen: list[str] = []
    try:
        read_until(proc, "stock API", 30, seen)
        read_until(proc, f"listening on port {port}", 30, seen)
        wait_subscribed(proc, seen)

        async def scenario() -> None:
            url = f"ws://127.0.0.1:{port}/ws?format=json&token={alice.token}"
            conn = await websocket_connect(url)
            assert json.loads(await conn.read_message())["type"] == "connection-established"
            message = announcement_message(
                {"id": "t1", "message": "hello", "severity": "info", "created_at": "now"}
            )
            from notifier.realtime.bus import BROADCAST

            sync_redis.publish(BROADCAST, message)
            got = json.loads(await asyncio.wait_for(conn.read_message(), 10))
            assert got["data"]["message"] == "hello"
            conn.close()

        io_loop.run_sync(scenario, timeout=30)
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
