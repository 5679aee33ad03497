"""Web Push: the public key, browsers' subscriptions, the service worker and its ack."""

from __future__ import annotations

from typing import Any

from notifier import validation, vapid
from notifier.errors import NotFound
from notifier.notifications.store import NotificationRepository
from notifier.push import endpoints
from notifier.push.acks import PushAck, read_ack_token
from notifier.push.subscriptions import PushRemoval, Subscription, SubscriptionRepository
from web.handlers.base import ApiHandler
from web.handlers.static import STATIC, NotifierStaticFileHandler
from web.shapes import PushPublicKey, PushSubscribed


class PushApiHandler(ApiHandler):
    """Web Push endpoints answer 404 while it is off (production without VAPID keys)."""

    async def prepare(self) -> None:
        """Authenticate as every API call does, then check that push is on."""
        await super().prepare()
        if not self.config.push_enabled:
            raise NotFound("Web Push is not configured on this server", "push_disabled")


class PushPublicKeyHandler(PushApiHandler):
    """GET /api/push/public-key: what browsers subscribe with (applicationServerKey)."""

    public = True

    def get(self) -> None:
        """The VAPID public key, base64url."""
        assert self.config.vapid_private_key is not None
        self.write_json(PushPublicKey(vapid.public_key(self.config.vapid_private_key)))


class PushSubscriptionsHandler(PushApiHandler):
    """POST and DELETE /api/push-subscriptions: this browser's subscription."""

    async def post(self) -> None:
        """Store the browser's PushSubscription.toJSON() (idempotent by endpoint): 201."""
        allow_loopback = not self.config.production
        sub = Subscription.parse(self.json_body(), allow_loopback)
        endpoint = endpoints.parse(sub.endpoint, allow_loopback)
        await endpoints.check_resolved(endpoint, allow_loopback)
        await SubscriptionRepository(self.db).add(self.user.user_id, sub, self.user.version)
        self.write_json(PushSubscribed(sub.endpoint), status=201)

    async def delete(self) -> None:
        """Remove `{"endpoint": url}`, or every one of the caller's with `{"all": true}`: 204."""
        endpoint = PushRemoval.parse(self.json_body())
        await SubscriptionRepository(self.db).remove(self.user.user_id, endpoint)
        self.set_status(204)
        self.finish()


class PushAckHandler(PushApiHandler):
    """POST /api/push/ack: the service worker showed a pushed deal (the page's `ack`).

    The signed token from the push is the whole proof: the worker sends no cookie, so
    there is nothing to forge and no XSRF token to hold (see notifier/push/acks.py).
    """

    public = True

    def check_xsrf_cookie(self) -> None:
        """The token authorizes this request, not a cookie."""

    async def post(self) -> None:
        """Acknowledge the user's notifications up to the token's: 204."""
        given = validation.decode(PushAck, self.json_body())
        ack = read_ack_token(self.config.jwt_secret, given.token)
        await NotificationRepository(self.db).acknowledge(ack.user_id, ack.seq)
        self.set_status(204)
        self.finish()


default_handlers: list[Any] = [
    (r"/api/push/public-key", PushPublicKeyHandler),
    (r"/api/push-subscriptions", PushSubscriptionsHandler),
    (r"/api/push/ack", PushAckHandler),
    # The service worker, at the root so that its scope is the whole site.
    (r"/(sw\.js)", NotifierStaticFileHandler, {"path": str(STATIC)}),
]
