"""The web process's side of the Celery queue: it sends tasks by name, made at the first send.

Celery (with kombu, yaml, click and billiard) costs a web process 7 MB at import, which
each of WEB_CONCURRENCY processes would carry from start; most of them only hold sockets
and never enqueue (the admin's requests do). So Celery is imported by the first send.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery


class TaskQueue:
    """Sends tasks by name to the broker at `broker_url` (the web process imports no task)."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self._app: Celery | None = None
        self._lock = threading.Lock()  # sends run in threads: the first two may race

    def send(self, task: str, kwargs: dict[str, Any], task_id: str | None = None) -> str:
        """Send `task` (blocking: call it in a thread); its id.

        Raises kombu's OperationalError when the broker is out of reach (broker_unreachable).
        """
        with self._lock:
            if self._app is None:
                from celery import Celery

                self._app = Celery("notifier", broker=self.broker_url, set_as_current=False)
            app = self._app
        return str(app.send_task(task, kwargs=kwargs, task_id=task_id).id)


def broker_unreachable(exc: BaseException) -> bool:
    """True when `exc` says the broker could not be reached (kombu's OperationalError).

    Read without importing kombu: until a send imported it, no exception can be one.
    """
    errors = sys.modules.get("kombu.exceptions")
    return errors is not None and isinstance(exc, errors.OperationalError)
