"""GET /healthz: is this process able to serve (MongoDB and Redis reachable)."""

from __future__ import annotations

import asyncio

from web.handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    """200 when MongoDB and Redis answer, 503 naming what is down."""

    async def get(self) -> None:
        """Ping both, each with a short timeout."""
        checks = {"mongo": self.db.command("ping"), "redis": self.redis.ping()}
        report = {"status": "ok"}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check, timeout=2)
                report[name] = "ok"
            except Exception as e:  # any failure to answer means "down"
                report[name] = f"down: {type(e).__name__}"
                report["status"] = "unavailable"
        self.set_header("Cache-Control", "no-store")
        self.write_json(report, status=200 if report["status"] == "ok" else 503)


default_handlers = [(r"/healthz", HealthHandler)]
