"""Prometheus metrics, every name starting with `notifier_`.

The metrics are process-wide by nature and live in one registry of their own (not
prometheus-client's default, whose python_* and process_* names lack the prefix): a web
process exposes it on /metrics, a worker on WORKER_METRICS_PORT. Each process only ever
moves the ones for its role.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric

REGISTRY = CollectorRegistry()
ProcessCollector(namespace="notifier", registry=REGISTRY)  # CPU, memory, open files

# Web processes -------------------------------------------------------------------------

# With WEB_CONCURRENCY > 1 (prometheus-client's multiprocess mode) these are summed over
# the live web processes.
OPEN_CONNECTIONS = Gauge(
    "notifier_open_connections",
    "WebSockets open on the web process(es)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
USERS_ONLINE = Gauge(
    "notifier_users_online",
    "Users with at least one WebSocket, per web process, summed",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
MESSAGES_DELIVERED = Counter(
    "notifier_messages_delivered",
    "Messages handed to sockets by the live path, by message type (one per socket)",
    ["type"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "notifier_delivery_latency_seconds",
    "From the created_at (stored by the worker) of a notification to its frames being "
    "written: one observation per half second with notifications, the slowest of them",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
PUBSUB_RECONNECTS = Counter(
    "notifier_pubsub_reconnects",
    "Times this process re-subscribed to the bus after losing it",
    registry=REGISTRY,
)
GAP_FILLS = Counter(
    "notifier_gap_fills",
    "Replays from MongoDB started because a socket saw a gap in its stream",
    registry=REGISTRY,
)

# Workers ---------------------------------------------------------------------------------

DEAL_CHECK_DURATION = Histogram(
    "notifier_deal_check_duration_seconds",
    "How long one deal check ran (lock held)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
DEALS_FOUND = Counter("notifier_deals_found", "New deals found by deal checks", registry=REGISTRY)
DEAL_CHECK_ITEM_FAILURES = Counter(
    "notifier_deal_check_item_failures",
    "Items a deal check chunk skipped because their stored data could not make a deal",
    registry=REGISTRY,
)
EMAILS_SENT = Counter(
    "notifier_emails_sent", "Emails handed to the SMTP server (or the outbox)", registry=REGISTRY
)
EMAILS_FAILED = Counter(
    "notifier_emails_failed",
    "Attempts to send an email that failed (each is retried)",
    registry=REGISTRY,
)
PUSHES = Counter(
    "notifier_pushes",
    "Planned pushes by how they ended: sent, seen (acknowledged before sending), failed, cancelled",
    ["outcome"],
    registry=REGISTRY,
)
TASKS = Counter(
    "notifier_celery_tasks",
    "Celery tasks finished, by task and outcome",
    ["task", "outcome"],
    registry=REGISTRY,
)
TASK_DURATION = Histogram(
    "notifier_celery_task_duration_seconds",
    "How long a Celery task ran, by task",
    ["task"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)


def seconds_since(iso_time: str, now: float | None = None) -> float | None:
    """Seconds from an ISO 8601 time (as in a notification's created_at) to now (epoch s)."""
    try:
        then = datetime.fromisoformat(iso_time)  # "Z" included, since Python 3.11
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (time.time() if now is None else now) - then.timestamp())


def exposition(metrics_dir: str | None = None) -> bytes:
    """The metrics in Prometheus's text format: this process's, or with `metrics_dir`
    (prometheus-client's multiprocess directory) every web process's, summed, with each
    live process's CPU, memory and open files labelled by `pid`."""
    if metrics_dir is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    registry.register(_Processes(metrics_dir))
    return generate_latest(registry)


class _Processes:
    """notifier_process_* of every live process writing to a multiprocess directory."""

    def __init__(self, metrics_dir: str) -> None:
        self._dir = metrics_dir

    def collect(self) -> list[Metric]:
        pids = set()
        for name in os.listdir(self._dir):
            stem = name.removesuffix(".db").rsplit("_", 1)[-1]
            if stem.isdigit() and os.path.exists(f"/proc/{stem}"):
                pids.add(int(stem))
        families: dict[str, Metric] = {}
        for pid in sorted(pids):
            collector = ProcessCollector(namespace="notifier", pid=_constant(pid), registry=None)
            for family in collector.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "pid": str(pid)}
                    merged.add_sample(sample.name, labels, sample.value)
        return list(families.values())


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


def delivered(message_type: str) -> Any:
    """The messages-delivered counter of one type (children cached: this is the hot path)."""
    child = _DELIVERED.get(message_type)
    if child is None:
        child = _DELIVERED[message_type] = MESSAGES_DELIVERED.labels(message_type)
    return child


_DELIVERED: dict[str, Any] = {}
