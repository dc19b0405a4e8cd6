"""WeCom (企业微信) group robot messages through its webhook (`WECOM_WEBHOOK_URL`).

    POST <webhook>  {"msgtype": "text", "text": {"content": "...", "mentioned_mobile_list": [...]}}
                    {"msgtype": "markdown", "markdown": {"content": "..."}}
    reply           {"errcode": 0, "errmsg": "ok"}

errcode 0 is accepted; 45009 (API frequency limit, 20 messages/minute per robot) and -1
(system busy) are temporary; 93000 (invalid webhook URL) and 40001-ish credential errors
pause; anything else fails the message. HTTP 429/5xx are temporary.
"""

from __future__ import annotations

import json
from typing import Any

from portal.delivery.channels.base import Outcome, SendResult
from portal.delivery.channels.http import HttpChannel, classify_http

TEMPORARY_CODES = frozenset({-1, 45009, 45033})
PAUSE_CODES = frozenset({93000, 93004, 40001, 40014, 42001})
# The robot's limits on content, in UTF-8 bytes.
MAX_BYTES = {"text": 2048, "markdown": 4096}


class WeComRobot(HttpChannel):
    def __init__(self, webhook_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not webhook_url:
            raise ValueError("WECOM_WEBHOOK_URL must be set to send WeCom messages")
        self.webhook_url = webhook_url

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> WeComRobot:
        return cls(config["WECOM_WEBHOOK_URL"], **kwargs)

    def send(self, content: str, *, markdown: bool = False, mentioned_mobiles: tuple[str, ...] = ()) -> SendResult:
        """Post `content` (already rendered) to the group; mobiles are @-mentioned in text."""
        kind = "markdown" if markdown else "text"
        if len(content.encode("utf-8")) > MAX_BYTES[kind]:
            return SendResult(Outcome.FAILED, 0, "too_long", f"{kind} over {MAX_BYTES[kind]} bytes")
        message: dict[str, Any] = {"content": content}
        if mentioned_mobiles and not markdown:
            message["mentioned_mobile_list"] = list(mentioned_mobiles)
        body = json.dumps({"msgtype": kind, kind: message}, ensure_ascii=False).encode("utf-8")
        failure, status, payload, text = self._post(
            self.webhook_url, body, {"Content-Type": "application/json; charset=utf-8"}
        )
        if failure is not None:
            return failure
        if not 200 <= status < 300:
            return classify_http(status, "", text)
        errcode = payload.get("errcode") if isinstance(payload, dict) else None
        if errcode == 0:
            return SendResult(Outcome.ACCEPTED, status, "0", text)
        if errcode in TEMPORARY_CODES:
            return SendResult(Outcome.RETRY, status, str(errcode), text)
        if errcode in PAUSE_CODES:
            return SendResult(Outcome.PAUSE, status, str(errcode), text)
        return SendResult(Outcome.FAILED, status, str(errcode), text)
