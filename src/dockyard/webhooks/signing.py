"""Standard Webhooks signatures (https://www.standardwebhooks.com/), with the `standardwebhooks` package.

Each endpoint has its own secret, `whsec_` + base64 of 32 random bytes, shown once (on create and
rotate) and stored sealed with the key-encryption key. Every request carries `webhook-id` (the
event's idempotency key, the same on every attempt), `webhook-timestamp` (Unix seconds) and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_headers(secret: str, message_id: str, timestamp: datetime, body: bytes,
                      *others: str) -> dict[str, str]:
    """The three headers; with `others` (the previous secret during a rotation's overlap) the
    signature header carries one `v1,…` per secret, space-separated, as the spec allows."""
    signatures = [Webhook(s).sign(msg_id=message_id, timestamp=timestamp, data=body) for s in (secret, *others)]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
