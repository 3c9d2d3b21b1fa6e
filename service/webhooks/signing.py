"""Standard Webhooks signatures (https://www.standardwebhooks.com), by its reference library."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks.webhooks import Webhook


def signature_header(secrets: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """`v1,<base64 HMAC-SHA256 of id.timestamp.body>` per secret, space-separated: during a
    rotation's grace period receivers holding either secret can verify."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)
