"""Local stand-ins that behave like WeCom's services, served over HTTP on 127.0.0.1.

`CustomerApi`: the customer-contact API. Access tokens from the corp id and secret that
expire when told to (`expire_tokens`: the next call with an old token gets 42001); mass-send
tasks per employee (customers who are not the employee's friends come back in fail_list);
the employee confirms a task (`confirm`), and each customer's result is then 1 (sent) or
3 (already had `per_customer_limit` mass messages: WeCom's limit); the follow-user list and
the customers of each employee, paged.

`Robot`: a group robot webhook that answers errcode 45009 to a post when it has accepted
`per_window` posts in the last `window` seconds (sliding, as WeCom counts a minute).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import defaultdict

from werkzeug.wrappers import Request, Response


def _json(payload: dict) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), mimetype="application/json")


class CustomerApi:
    def __init__(self, corp_id: str = "ww-corp", secret: str = "contact-secret", per_customer_limit: int = 4) -> None:  # noqa: S107 - a stub's own
        self.corp_id, self.secret = corp_id, secret
        self.per_customer_limit = per_customer_limit
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.calls: list[tuple[str, dict]] = []
        # employee userid -> {external_userid: remark mobile}
        self.customers: dict[str, dict[str, str]] = defaultdict(dict)
        self.tasks: dict[str, dict] = {}
        self.received: dict[str, int] = defaultdict(int)
        self.page_size = 2  # small pages, so that the client must follow cursors

    def add_customer(self, owner: str, external_userid: str, mobile: str = "") -> None:
        self.customers[owner][external_userid] = mobile

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def confirm(self, msgid: str | None = None) -> None:
        """The employee confirms the task (every task when None) in the WeCom app."""
        with self.lock:
            for task_id, task in self.tasks.items():
                if msgid not in (None, task_id) or task["confirmed"]:
                    continue
                task["confirmed"] = int(time.time())
                for external in task["recipients"]:
                    if self.received[external] >= self.per_customer_limit:
                        task["results"][external] = 3
                    else:
                        self.received[external] += 1
                        task["results"][external] = 1

    def task_bodies(self) -> list[dict]:
        return [body for path, body in self.calls if path.endswith("add_msg_template")]

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = json.loads(request.get_data() or b"{}")
        path = request.path
        with self.lock:
            self.calls.append((path, body))
            response = self._answer(request, path, body)
        return response(environ, start_response)

    def _answer(self, request, path: str, body: dict) -> Response:
        if path == "/cgi-bin/gettoken":
            self.token_requests += 1
            if request.args.get("corpid") != self.corp_id or request.args.get("corpsecret") != self.secret:
                return _json({"errcode": 40001, "errmsg": "invalid credential"})
            token = f"token-{next(self.numbers)}"
            self.tokens.add(token)
            return _json({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200})
        if request.args.get("access_token") not in self.tokens:
            return _json({"errcode": 42001, "errmsg": "access_token expired"})
        if path.endswith("/add_msg_template"):
            sender = body.get("sender", "")
            friends = self.customers.get(sender, {})
            wanted = list(body.get("external_userid") or [])
            fail = [e for e in wanted if e not in friends]
            msgid = f"msg{next(self.numbers)}"
            self.tasks[msgid] = {
                "sender": sender,
                "recipients": [e for e in wanted if e in friends],
                "confirmed": 0,
                "results": {},
                "body": body,
            }
            return _json({"errcode": 0, "errmsg": "ok", "fail_list": fail, "msgid": msgid})
        if path.endswith("/get_groupmsg_task"):
            task = self.tasks.get(body.get("msgid"))
            if task is None:
                return _json({"errcode": 41063, "errmsg": "msgid not found"})
            status = 2 if task["confirmed"] else 0
            return _json(
                {
                    "errcode": 0,
                    "task_list": [{"userid": task["sender"], "status": status, "send_time": task["confirmed"]}],
                }
            )
        if path.endswith("/get_groupmsg_send_result"):
            task = self.tasks.get(body.get("msgid"))
            if task is None or task["sender"] != body.get("userid"):
                return _json({"errcode": 41063, "errmsg": "msgid not found"})
            rows = [
                {
                    "external_userid": external,
                    "userid": task["sender"],
                    "status": task["results"].get(external, 0),
                    "send_time": task["confirmed"] if task["results"].get(external) == 1 else 0,
                }
                for external in task["recipients"]
            ]
            return _json({"errcode": 0, **self._page(rows, body.get("cursor"), "send_list")})
        if path.endswith("/get_follow_user_list"):
            return _json({"errcode": 0, "follow_user": sorted(self.customers)})
        if path.endswith("/batch/get_by_user"):
            rows = [
                {
                    "external_contact": {"external_userid": external, "name": external},
                    "follow_info": {"userid": owner, "remark_mobiles": [mobile] if mobile else []},
                }
                for owner in body.get("userid_list") or []
                for external, mobile in self.customers.get(owner, {}).items()
            ]
            return _json({"errcode": 0, **self._page(rows, body.get("cursor"), "external_contact_list")})
        return _json({"errcode": 404, "errmsg": "unknown path"})

    def _page(self, rows: list, cursor: str | None, name: str) -> dict:
        start = int(cursor or 0)
        end = start + self.page_size
        return {name: rows[start:end], "next_cursor": str(end) if end < len(rows) else ""}


class Robot:
    def __init__(self, per_window: int = 20, window: float = 60.0) -> None:
        self.per_window, self.window = per_window, window
        self.lock = threading.Lock()
        self.accepted: list[tuple[float, str]] = []
        self.refused = 0

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = json.loads(request.get_data() or b"{}")
        now = time.monotonic()
        with self.lock:
            recent = [t for t, _ in self.accepted if t > now - self.window]
            if len(recent) >= self.per_window:
                self.refused += 1
                payload = {"errcode": 45009, "errmsg": "api freq out of limit"}
            else:
                self.accepted.append((now, body["text"]["content"]))
                payload = {"errcode": 0, "errmsg": "ok"}
        return _json(payload)(environ, start_response)
