"""Prometheus metrics, every name starting with `notifier_`.

The metrics are process-wide by nature and live in one registry of their own (not
prometheus-client's default, whose python_* and process_* names lack the prefix): a web
process exposes it on /metrics, a worker on WORKER_METRICS_PORT. Each process only ever
moves the ones for its role.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(namespace="notifier", registry=REGISTRY)  # CPU, memory, open files

# Web processes -------------------------------------------------------------------------

OPEN_CONNECTIONS = Gauge(
    "notifier_open_connections", "WebSockets open on this web process", registry=REGISTRY
)
USERS_ONLINE = Gauge(
    "notifier_users_online",
    "Users with at least one WebSocket on this web process",
    registry=REGISTRY,
)
MESSAGES_DELIVERED = Counter(
    "notifier_messages_delivered",
    "Messages handed to sockets by the live path, by message type (one per socket)",
    ["type"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "notifier_delivery_latency_seconds",
    "From the created_at (stored by the worker) of the oldest notification in a read from "
    "the bus to its frames being written (one observation per read with notifications)",
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


def delivered(message_type: str) -> Any:
    """The messages-delivered counter of one type (children cached: this is the hot path)."""
    child = _DELIVERED.get(message_type)
    if child is None:
        child = _DELIVERED[message_type] = MESSAGES_DELIVERED.labels(message_type)
    return child


_DELIVERED: dict[str, Any] = {}
