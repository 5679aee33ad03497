"""Web Push: the step between the live socket and the email.

A deal notification no page acknowledged within PUSH_ACK_WAIT seconds is pushed to the
user's subscribed browsers (their service worker shows it and acknowledges it), before
EMAIL_ACK_WAIT decides its email. keys.py holds the VAPID key pair, endpoints.py the
server-side request forgery defence, subscriptions.py the browsers' subscriptions,
acks.py the service worker's acknowledgement tokens and service.py the decisions and
the sending (workers).
"""
