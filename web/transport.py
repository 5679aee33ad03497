"""How a socket's frames go out: the fast path, or Tornado's stock API.

The fast path frames each message once and writes it straight to the kernel
(web/frames.py), keeps idle IOStreams without their deques, drops the handshake's state
and reads frames from a task of its own (web/lean.py). It uses Tornado internals
(IOStream.socket and .writing(), its deques, WebSocketProtocol13's receive loop), read
against Tornado 6.4-6.6. At start `choose` takes it only on such a Tornado whose
self-tests pass; otherwise sockets go through Tornado's public API (`write_message`,
`ping`, its own receive loop), with a warning, never a crash. Both serve the delivery
engine's `Transport` (notifier/realtime/delivery.py). WS_TRANSPORT=stock forces the
stock path (`make test` runs the live-path tests once that way), `fast` insists.
"""

from __future__ import annotations

import logging

from notifier.errors import ConfigurationError
from web import lean
from web.frames import iostream_problems

log = logging.getLogger(__name__)

CHOICES = ("auto", "fast", "stock")


def choose(setting: str) -> bool:
    """Whether this process uses the fast path (True) or Tornado's stock API (False).

    Needs a running IOLoop (the self-tests open an IOStream).
    """
    if setting == "stock":
        lean.undo_lazy_stream_buffers()
        return False
    problems = [] if lean.verified_tornado() else ["not a Tornado the fast path was read against"]
    problems += iostream_problems()
    if not problems:
        try:
            lean.lazy_stream_buffers()
        except RuntimeError as e:
            problems.append(str(e))
    if not problems:
        return True
    if setting == "fast":
        raise ConfigurationError("WS_TRANSPORT=fast, but: " + "; ".join(problems))
    log.warning("sockets use Tornado's stock API (slower, more memory): %s", "; ".join(problems))
    return False
