"""WeCom (企业微信) customer contact: messages to customers through mass-send tasks.

A group robot posts into one internal group chat; customers are reached through the
customer-contact API instead (config `WECOM_API_URL`, `WECOM_CORP_ID`, `WECOM_CONTACT_SECRET`,
the secret of the customer-contact app):

    GET  /cgi-bin/gettoken?corpid=ID&corpsecret=SECRET        {"access_token", "expires_in"}
    POST /cgi-bin/externalcontact/add_msg_template             one task per owning employee:
         {"chat_type": "single", "sender": "<userid>", "external_userid": [...],
          "text": {"content": "..."}, "attachments": [...]}  -> {"msgid", "fail_list"}
    POST /cgi-bin/externalcontact/get_groupmsg_task            {"msgid"} -> per employee
    POST /cgi-bin/externalcontact/get_groupmsg_send_result     {"msgid", "userid", "cursor"}
         -> per customer: status 0 not sent yet, 1 sent, 2 not a friend, 3 already received
            another mass message (WeCom's limit)
    GET  /cgi-bin/externalcontact/get_follow_user_list         employees with customers
    POST /cgi-bin/externalcontact/batch/get_by_user            customers of employees

The access token is cached (Redis when given, shared by every worker) until shortly before
it expires, and fetched again when WeCom says it expired or is invalid (40014, 42001).
The employee confirms each task in the WeCom app; the results come later (wecom_tasks.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from portal.delivery.channels.base import Outcome, SendResult
from portal.delivery.channels.http import HttpChannel, classify_http

DEFAULT_API_URL = "https://qyapi.weixin.qq.com"
# The token is invalid or has expired: fetch a new one and try once more.
TOKEN_CODES = frozenset({40014, 42001})
TEMPORARY_CODES = frozenset({-1, 45009, 45033, 45035})
# The app's credentials or permissions are refused: nothing will go until someone fixes them.
PAUSE_CODES = frozenset({40001, 40013, 40056, 41001, 48002, 60011, 60020, 301002})
# A token is used until this many seconds before WeCom says it expires.
TOKEN_MARGIN_SECONDS = 300
# At most this many customers per task (WeCom's limit is 10,000).
MAX_RECIPIENTS = 10_000
ATTACHMENT_KINDS = ("image", "link", "miniprogram")
# Per-customer results of get_groupmsg_send_result.
RESULT_NOT_SENT, RESULT_SENT, RESULT_NOT_FRIEND, RESULT_LIMITED = 0, 1, 2, 3


class AttachmentError(ValueError):
    """An attachment of a WeCom step that WeCom would refuse; carries a code."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def clean_attachments(raw: Any) -> list[dict[str, Any]]:
    """The step's attachments in add_msg_template's form, checked: at most 9, each an image
    (media_id or pic_url), a link (title, url; picurl, desc) or a mini program (title, appid,
    page, pic_media_id)."""
    if not raw:
        return []
    if not isinstance(raw, list) or len(raw) > 9:
        raise AttachmentError("too_many_attachments", limit=9)
    cleaned = []
    for item in raw:
        kind = item.get("msgtype") if isinstance(item, dict) else None
        body = item.get(kind) if kind else None
        if kind not in ATTACHMENT_KINDS or not isinstance(body, dict):
            raise AttachmentError("attachment_kind", kind=str(kind))
        if kind == "image":
            fields = {k: str(body[k]) for k in ("media_id", "pic_url") if body.get(k)}
            if not fields:
                raise AttachmentError("attachment_field", kind=kind, field="media_id")
        elif kind == "link":
            fields = {k: str(body[k]) for k in ("title", "url", "picurl", "desc") if body.get(k)}
            for needed in ("title", "url"):
                if needed not in fields:
                    raise AttachmentError("attachment_field", kind=kind, field=needed)
            if not fields["url"].startswith(("https://", "http://")):
                raise AttachmentError("attachment_field", kind=kind, field="url")
        else:
            fields = {k: str(body[k]) for k in ("title", "appid", "page", "pic_media_id") if body.get(k)}
            for needed in ("title", "appid", "page", "pic_media_id"):
                if needed not in fields:
                    raise AttachmentError("attachment_field", kind=kind, field=needed)
        cleaned.append({"msgtype": kind, kind: fields})
    return cleaned


@dataclass
class TaskCreated:
    """What add_msg_template answered: the result, the task's msgid and the customers WeCom
    refused at once (not friends of the employee, unknown ids)."""

    result: SendResult
    msgid: str = ""
    fail_list: list[str] = field(default_factory=list)


def classify_errcode(status: int, payload: Any, text: str) -> SendResult:
    if not 200 <= status < 300:
        return classify_http(status, "", text)
    errcode = payload.get("errcode", 0) if isinstance(payload, dict) else None
    if errcode == 0:
        return SendResult(Outcome.ACCEPTED, status, "0", "")
    if errcode is None:
        return SendResult(Outcome.RETRY, status, "bad_reply", text)
    if errcode in TEMPORARY_CODES or errcode in TOKEN_CODES:
        return SendResult(Outcome.RETRY, status, str(errcode), text)
    if errcode in PAUSE_CODES:
        return SendResult(Outcome.PAUSE, status, str(errcode), text)
    return SendResult(Outcome.FAILED, status, str(errcode), text)


class WeComCustomerApi(HttpChannel):
    def __init__(
        self,
        corp_id: str,
        secret: str,
        *,
        api_url: str = DEFAULT_API_URL,
        redis: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not corp_id or not secret:
            raise ValueError("WECOM_CORP_ID and WECOM_CONTACT_SECRET must be set to message WeCom customers")
        self.corp_id = corp_id
        self.secret = secret
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.redis = redis
        self._token: tuple[str, float] | None = None
        self._cache_key = "portal:wecom:token:" + hashlib.sha256(f"{corp_id}\0{secret}".encode()).hexdigest()[:16]
        self.token_fetches = 0

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> WeComCustomerApi:
        return cls(config["WECOM_CORP_ID"], config["WECOM_CONTACT_SECRET"], api_url=config["WECOM_API_URL"], **kwargs)

    # -- the access token -----------------------------------------------------------------------
    def _cached_token(self) -> str:
        if self._token is not None and self._token[1] > time.time():
            return self._token[0]
        if self.redis is not None:
            cached = self.redis.get(self._cache_key)
            if cached:
                token = cached.decode() if isinstance(cached, bytes) else str(cached)
                self._token = (token, time.time() + 60)
                return token
        return ""

    def _forget_token(self, token: str) -> None:
        self._token = None
        if self.redis is not None:
            cached = self.redis.get(self._cache_key)
            if cached is not None and (cached.decode() if isinstance(cached, bytes) else cached) == token:
                self.redis.delete(self._cache_key)

    def _fetch_token(self) -> tuple[SendResult | None, str]:
        self.token_fetches += 1
        failure, status, payload, text = self._get(
            f"{self.api_url}/cgi-bin/gettoken", {"corpid": self.corp_id, "corpsecret": self.secret}
        )
        if failure is not None:
            return self._redact(failure), ""
        result = classify_errcode(status, payload, text)
        token = payload.get("access_token", "") if isinstance(payload, dict) else ""
        if not result.ok or not token:
            return (result if not result.ok else SendResult(Outcome.RETRY, status, "no_token", text)), ""
        lifetime = max(int(payload.get("expires_in", 7200)) - TOKEN_MARGIN_SECONDS, 60)
        self._token = (token, time.time() + lifetime)
        if self.redis is not None:
            self.redis.set(self._cache_key, token, ex=lifetime)
        return None, token

    def _redact(self, result: SendResult) -> SendResult:
        """Connection errors quote the URL: never let the token or secret reach the ledger."""
        message = result.message.replace(self.secret, "***")
        if self._token is not None:
            message = message.replace(self._token[0], "***")
        return SendResult(result.outcome, result.code, result.detail, message, result.affects_batch)

    def call(self, path: str, body: dict[str, Any] | None = None) -> tuple[SendResult, dict[str, Any]]:
        """POST `body` (GET when None) to `path` with the access token; a token WeCom calls
        expired or invalid is fetched again once. (result, the reply's JSON)."""
        for attempt in (1, 2):
            token = self._cached_token()
            if not token:
                failure, token = self._fetch_token()
                if failure is not None:
                    return failure, {}
            url = f"{self.api_url}{path}"
            if body is None:
                failure, status, payload, text = self._get(url, {"access_token": token})
            else:
                failure, status, payload, text = self._post(
                    f"{url}?access_token={token}",
                    json.dumps(body, ensure_ascii=False).encode("utf-8"),
                    {"Content-Type": "application/json; charset=utf-8"},
                )
            if failure is not None:
                return self._redact(failure), {}
            errcode = payload.get("errcode") if isinstance(payload, dict) else None
            if errcode in TOKEN_CODES and attempt == 1:
                self._forget_token(token)
                continue
            return classify_errcode(status, payload, text), payload if isinstance(payload, dict) else {}
        raise AssertionError("unreachable")

    # -- mass-send tasks ------------------------------------------------------------------------
    def add_msg_template(
        self, sender: str, external_userids: list[str], text: str, attachments: list[dict[str, Any]] | None = None
    ) -> TaskCreated:
        """Create one mass-send task for the employee `sender` to the given customers."""
        body: dict[str, Any] = {"chat_type": "single", "sender": sender, "external_userid": external_userids}
        if text:
            body["text"] = {"content": text}
        if attachments:
            body["attachments"] = attachments
        result, payload = self.call("/cgi-bin/externalcontact/add_msg_template", body)
        if not result.ok:
            return TaskCreated(result)
        msgid = str(payload.get("msgid") or "")
        if not msgid:
            return TaskCreated(SendResult(Outcome.RETRY, result.code, "no_msgid", json.dumps(payload)[:500]))
        return TaskCreated(result, msgid, [str(x) for x in payload.get("fail_list") or []])

    def task_senders(self, msgid: str) -> tuple[SendResult, list[dict[str, Any]]]:
        """Per employee of the task: {"userid", "status" (0 not sent, 2 sent), "send_time"}."""
        rows: list[dict[str, Any]] = []
        cursor = ""
        while True:
            result, payload = self.call(
                "/cgi-bin/externalcontact/get_groupmsg_task", {"msgid": msgid, "limit": 1000, "cursor": cursor}
            )
            if not result.ok:
                return result, rows
            rows.extend(payload.get("task_list") or [])
            cursor = payload.get("next_cursor") or ""
            if not cursor:
                return result, rows

    def send_results(self, msgid: str, userid: str) -> tuple[SendResult, list[dict[str, Any]]]:
        """Per customer: {"external_userid", "status", "send_time"}, every page."""
        rows: list[dict[str, Any]] = []
        cursor = ""
        while True:
            result, payload = self.call(
                "/cgi-bin/externalcontact/get_groupmsg_send_result",
                {"msgid": msgid, "userid": userid, "limit": 1000, "cursor": cursor},
            )
            if not result.ok:
                return result, rows
            rows.extend(payload.get("send_list") or [])
            cursor = payload.get("next_cursor") or ""
            if not cursor:
                return result, rows

    # -- the customers --------------------------------------------------------------------------
    def follow_users(self) -> tuple[SendResult, list[str]]:
        """The employees who have customer contacts."""
        result, payload = self.call("/cgi-bin/externalcontact/get_follow_user_list")
        return result, [str(u) for u in payload.get("follow_user") or []]

    def customers(self, userids: list[str]) -> Iterator[tuple[SendResult, list[dict[str, Any]]]]:
        """Pages of the customers of `userids` (at most 100 employees a call), each
        {"external_contact": {...}, "follow_info": {"userid", "remark_mobiles", ...}}."""
        for start in range(0, len(userids), 100):
            cursor = ""
            while True:
                result, payload = self.call(
                    "/cgi-bin/externalcontact/batch/get_by_user",
                    {"userid_list": userids[start : start + 100], "cursor": cursor, "limit": 100},
                )
                yield result, list(payload.get("external_contact_list") or [])
                cursor = payload.get("next_cursor") or ""
                if not result.ok or not cursor:
                    break
