"""The kinds of notification: one name for each, wherever a type is written, read or shown.

A leaf module (it imports nothing of notifier), so storage, realtime, email and the web
layer all read the same names without depending on one another.
"""

from __future__ import annotations

from enum import StrEnum


class NotificationType(StrEnum):
    """A stored notification's `type`, as the API, the socket and the templates show it.

    A StrEnum: each member is the string itself, so documents, JSON and comparisons with
    stored strings need no conversion.
    """

    DEAL = "deal-notification"
    SYSTEM = "system-message"
    JOB = "job-complete"


# The short names the history filter also takes (?type=deals), as its menu offers them.
TYPE_NAMES = {
    "deals": NotificationType.DEAL,
    "announcements": NotificationType.SYSTEM,
    "jobs": NotificationType.JOB,
}
