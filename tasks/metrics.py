"""Celery task metrics, served by the worker on WORKER_METRICS_PORT (off when 0).

The worker runs its tasks in threads of one process (the Procfile's `--pool=threads`), so
one prometheus-client registry sees every task. Under a prefork pool the children's
counts would not reach this server.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_init
from prometheus_client import start_http_server

from notifier import metrics
from notifier.settings import Settings

log = logging.getLogger(__name__)
OUTCOMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}
_started: dict[str, float] = {}  # task id -> monotonic start; one entry per running task


def install(settings: Settings) -> None:
    """Count every task, and serve the metrics when the worker starts (not in beat)."""

    @worker_init.connect(weak=False)
    def serve(**_: Any) -> None:
        if settings.worker_metrics_port:
            start_http_server(
                settings.worker_metrics_port, settings.worker_metrics_addr, metrics.REGISTRY
            )
            log.info(
                "worker metrics on http://%s:%d/metrics",
                settings.worker_metrics_addr,
                settings.worker_metrics_port,
            )

    task_prerun.connect(_started_task, weak=False)
    task_postrun.connect(_finished_task, weak=False)


def _started_task(task_id: str, **_: Any) -> None:
    _started[task_id] = time.monotonic()


def _finished_task(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id, None)
    if started is not None:
        metrics.TASK_DURATION.labels(task.name).observe(time.monotonic() - started)
    metrics.TASKS.labels(task.name, OUTCOMES.get(state or "", "other")).inc()
