"""What the HTTP channels (SMS gateway, WeCom robot, WeCom customer contact) share: one `requests.Session` per
batch and the mapping of HTTP answers onto `SendResult`."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import requests

from portal.delivery.channels.base import Outcome, SendResult

DEFAULT_TIMEOUT = 10.0


def classify_http(status: int, detail: str = "", message: str = "") -> SendResult:
    """2xx accepted; 429 and 5xx temporary; 401/403 refuse *us* (pause); other 4xx fail
    this message for good."""
    if 200 <= status < 300:
        return SendResult(Outcome.ACCEPTED, status, detail, message)
    if status == 429 or status >= 500:
        return SendResult(Outcome.RETRY, status, detail, message)
    if status in (401, 403):
        return SendResult(Outcome.PAUSE, status, detail, message)
    return SendResult(Outcome.FAILED, status, detail, message)


class HttpChannel:
    """Base of the HTTP adapters: a reused session, closed with the batch."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, session: requests.Session | None = None) -> None:
        self.timeout = timeout
        self._session = session
        self._own_session = session is None

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def close(self) -> None:
        if self._session is not None and self._own_session:
            self._session.close()
            self._session = None

    def __enter__(self):
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[SendResult | None, int, Any, str]:
        """POST; (a batch-wide RETRY result, 0, None, "") on connection trouble, else
        (None, status, parsed JSON or None, text)."""
        return self._request("POST", url, data=body, headers=headers)

    def _get(self, url: str, params: dict[str, str]) -> tuple[SendResult | None, int, Any, str]:
        """GET, answered as `_post` answers."""
        return self._request("GET", url, params=params)

    def _request(self, method: str, url: str, **kwargs: Any) -> tuple[SendResult | None, int, Any, str]:
        try:
            with self.session.request(method, url, timeout=self.timeout, **kwargs) as reply:
                text = reply.text[:500]
                try:
                    payload = reply.json()
                except ValueError:
                    payload = None
                return None, reply.status_code, payload, text
        except requests.RequestException as error:
            result = SendResult(Outcome.RETRY, 0, "", f"{type(error).__name__}: {error}"[:500], True)
            return result, 0, None, ""
