"""SMS through the company's gateway: HMAC-signed JSON over HTTPS.

The gateway contract (config `SMS_API_URL`, `SMS_API_SECRET`, `SMS_SIGN_NAME`):

    POST SMS_API_URL
    Content-Type: application/json
    X-Timestamp: <unix seconds>
    X-Signature: hex(HMAC-SHA256(SMS_API_SECRET, "<timestamp>." + body))
    {"mobile": "+8613800138000", "sign_name": "<SMS_SIGN_NAME>", "content": "...",
     "message_id": "<ours, for idempotency on retries>"}

    2xx -> accepted (JSON {"code": 0} or no code; a non-zero code fails the message, and
           code "invalid_mobile" is a hard bounce); 429/5xx -> retry; 401/403 -> pause
           (our secret is refused); other 4xx -> failed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from portal.delivery.channels.base import Outcome, SendResult
from portal.delivery.channels.http import HttpChannel, classify_http

HARD_BOUNCE_CODES = frozenset({"invalid_mobile", "empty_number", "unknown_number"})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class SmsChannel(HttpChannel):
    def __init__(self, api_url: str, secret: str, sign_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not api_url or not secret:
            raise ValueError("SMS_API_URL and SMS_API_SECRET must be set to send SMS")
        self.api_url = api_url
        self.secret = secret
        self.sign_name = sign_name

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> SmsChannel:
        return cls(config["SMS_API_URL"], config["SMS_API_SECRET"], config["SMS_SIGN_NAME"], **kwargs)

    def send(self, mobile: str, content: str, message_id: str = "") -> SendResult:
        """Send `content` (already rendered) to `mobile` (E.164)."""
        body = json.dumps(
            {
                "mobile": mobile,
                "sign_name": self.sign_name,
                "content": content,
                "message_id": message_id,
            },
            ensure_ascii=False,
        ).encode("utf-8")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Timestamp": timestamp,
            "X-Signature": sign(self.secret, timestamp, body),
        }
        failure, status, payload, text = self._post(self.api_url, body, headers)
        if failure is not None:
            return failure
        code = payload.get("code", 0) if isinstance(payload, dict) else 0
        result = classify_http(status, "" if code in (0, "0", "ok") else str(code), text)
        if result.outcome is Outcome.ACCEPTED and code not in (0, "0", "ok"):
            outcome = Outcome.HARD_BOUNCE if code in HARD_BOUNCE_CODES else Outcome.FAILED
            return SendResult(outcome, status, str(code), text)
        return result
