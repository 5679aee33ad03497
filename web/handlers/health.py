"""Health, readiness and metrics: what load balancers, orchestrators and Prometheus read."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from notifier import metrics
from notifier.errors import NotFound, Unauthorized
from notifier.realtime.subscriber import Subscription
from web.handlers.base import BaseHandler
from web.shapes import Readiness

CHECK_TIMEOUT = 2.0


class ProbeHandler(BaseHandler):
    """Answers without a session: nothing in them is about any user."""

    async def ping(self, checks: dict[str, Awaitable[Any]]) -> dict[str, str]:
        """Run each check with a short timeout: name -> "ok" or "down: <why>"."""
        names = list(checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(checks[n], CHECK_TIMEOUT) for n in names), return_exceptions=True
        )
        return {
            name: f"down: {type(r).__name__}" if isinstance(r, BaseException) else "ok"
            for name, r in zip(names, results, strict=True)
        }


class HealthHandler(ProbeHandler):
    """GET /healthz: 200 when MongoDB and Redis answer, 503 naming what is down."""

    async def get(self) -> None:
        """Ping both, each with a short timeout (the contract's answer)."""
        report: dict[str, str] = {"status": "ok"}
        report |= await self.ping({"mongo": self.db.command("ping"), "redis": self.redis.ping()})
        if any(v != "ok" for k, v in report.items() if k != "status"):
            report["status"] = "unavailable"
        self.set_header("Cache-Control", "no-store")
        self.write_json(report, status=200 if report["status"] == "ok" else 503)


class ReadyHandler(ProbeHandler):
    """GET /readyz: ready to serve sockets, i.e. MongoDB and Redis answer and the bus is live."""

    async def get(self) -> None:
        """200 {"status":"ok",...}, or 503 {"status":"unavailable","down":[...]}."""
        probes = {"mongo": self.db.command("ping"), "redis": self.redis.ping()}
        if self.bus is not self.redis:
            probes["redis_cluster"] = self.bus.ping()
        checks = await self.ping(probes)
        subscription: Subscription = self.settings["subscription"]
        now = asyncio.get_running_loop().time()
        checks["subscriber"] = "ok" if subscription.live(now) else "down: not subscribed"
        down = [name for name, result in checks.items() if result != "ok"]
        report = Readiness("unavailable" if down else "ok", down, checks)
        self.set_header("Cache-Control", "no-store")
        self.write_json(report, status=503 if down else 200)


class MetricsHandler(ProbeHandler):
    """GET /metrics: this process's metrics in Prometheus's text format.

    With METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>` may read them;
    without it they are open in development and not served in production.
    """

    async def prepare(self) -> None:
        """Check the scraper's token before any work (a JWT means nothing here)."""
        token = self.config.metrics_token
        if token is None:
            if self.config.production:
                raise NotFound("set METRICS_TOKEN to serve /metrics")
            return
        given = self.request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized(
                "/metrics needs the METRICS_TOKEN bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )

    def get(self) -> None:
        """The notifier registry's exposition, with this process's socket gauges fresh."""
        fanout = self.settings.get("fanout")
        if fanout is not None:  # deliveries since the last write, in this scrape
            fanout.write_metrics()
        figures = self.registry.stats()
        metrics.OPEN_CONNECTIONS.set(figures["connections"])
        metrics.USERS_ONLINE.set(figures["users"])
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(metrics.exposition(self.config.metrics_dir))


default_handlers = [
    (r"/healthz", HealthHandler),
    (r"/readyz", ReadyHandler),
    (r"/metrics", MetricsHandler),
]
