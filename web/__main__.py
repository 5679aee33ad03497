"""`python -m web`: the web processes (HTTP, JSON API and /ws) on $PORT.

WEB_CONCURRENCY (default 1) says how many: with more than one, this process checks the
port, forks that many children that share it, then becomes `python -m web.supervisor`,
which waits for them, restarts and stops them (web/supervisor.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile

from notifier import logs
from notifier.settings import ConfigurationError, Settings


def run() -> None:
    """Entry point: read settings, then serve."""
    try:
        config = Settings.from_env()
    except ConfigurationError as e:
        sys.exit(f"notifier: {e}")
    logs.configure(config.production)
    if not config.push_enabled:
        logging.getLogger("web").warning(
            "Web Push is off: set VAPID_PRIVATE_KEY and VAPID_SUBJECT "
            "(`python -m notifier vapid-keys` prints a key pair)"
        )
    created = None
    if config.web_concurrency > 1 and config.metrics_dir is None:
        # Each child's metrics go to files here, so that any child's /metrics sums them all.
        # prometheus-client reads the variable when it is first imported: before web.serve.
        created = tempfile.mkdtemp(prefix="notifier-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = created
        config = dataclasses.replace(config, metrics_dir=created)
    if config.web_concurrency == 1:
        from web import serve

        sys.exit(serve.serve(config))
    from web import supervisor

    try:
        sys.exit(supervisor.supervise(config, remove_metrics_dir=created is not None))
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


if __name__ == "__main__":
    run()
