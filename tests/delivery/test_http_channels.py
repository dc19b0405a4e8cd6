"""SMS gateway and WeCom robot adapters against a real local HTTP server."""

from __future__ import annotations

import json

import pytest

from portal.delivery.channels import Outcome
from portal.delivery.channels.sms import SmsChannel, sign
from portal.delivery.channels.wecom import WeComRobot
from tests.conftest import free_port

SECRET = "gateway-secret"


def sms(gateway) -> SmsChannel:
    return SmsChannel(f"{gateway.url}/sms", SECRET, "示例科技")


# -- SMS -----------------------------------------------------------------------------------
def test_sms_posts_signed_json_and_is_accepted(gateway):
    with sms(gateway) as channel:
        result = channel.send("+8613800138000", "【示例科技】您的活动邀请", message_id="d-1")
    assert result.outcome is Outcome.ACCEPTED
    [request] = gateway.requests
    assert json.loads(request["body"]) == {
        "mobile": "+8613800138000",
        "sign_name": "示例科技",
        "content": "【示例科技】您的活动邀请",
        "message_id": "d-1",
    }
    timestamp = request["headers"]["X-Timestamp"]
    assert request["headers"]["X-Signature"] == sign(SECRET, timestamp, request["body"])


def test_sms_signature_does_not_verify_with_another_secret(gateway):
    with sms(gateway) as channel:
        channel.send("+8613800138000", "hi")
    request = gateway.requests[0]
    assert request["headers"]["X-Signature"] != sign("other", request["headers"]["X-Timestamp"], request["body"])


def test_sms_reuses_one_connection_for_a_batch(gateway):
    with sms(gateway) as channel:
        results = [channel.send(f"+861380013800{i}", "hi") for i in range(3)]
        assert len(channel.session.adapters["http://"].poolmanager.pools) == 1
    assert all(r.ok for r in results)


@pytest.mark.parametrize(
    ("status", "payload", "outcome"),
    [
        (429, {"code": "rate_limited"}, Outcome.RETRY),
        (503, "unavailable", Outcome.RETRY),
        (400, {"code": "bad_request"}, Outcome.FAILED),
        (401, {"code": "bad_signature"}, Outcome.PAUSE),
        (200, {"code": "invalid_mobile"}, Outcome.HARD_BOUNCE),
        (200, {"code": "content_rejected"}, Outcome.FAILED),
    ],
)
def test_sms_replies_are_classified(gateway, status, payload, outcome):
    gateway.replies.append((status, payload))
    with sms(gateway) as channel:
        assert channel.send("+8613800138000", "hi").outcome is outcome


def test_sms_gateway_down_is_temporary_for_the_batch():
    channel = SmsChannel(f"http://127.0.0.1:{free_port()}/sms", SECRET, "x", timeout=2)
    with channel:
        result = channel.send("+8613800138000", "hi")
    assert (result.outcome, result.affects_batch) == (Outcome.RETRY, True)


def test_sms_needs_its_configuration():
    with pytest.raises(ValueError):
        SmsChannel.from_config({"SMS_API_URL": "", "SMS_API_SECRET": "", "SMS_SIGN_NAME": ""})


# -- WeCom ---------------------------------------------------------------------------------
def test_wecom_text_message_in_robot_format(gateway):
    with WeComRobot(f"{gateway.url}/cgi-bin/webhook/send?key=abc") as robot:
        result = robot.send("新线索：张三 点击了活动链接", mentioned_mobiles=("+8613800138000",))
    assert result.ok
    [request] = gateway.requests
    assert json.loads(request["body"]) == {
        "msgtype": "text",
        "text": {
            "content": "新线索：张三 点击了活动链接",
            "mentioned_mobile_list": ["+8613800138000"],
        },
    }


def test_wecom_markdown_message_in_robot_format(gateway):
    with WeComRobot(f"{gateway.url}/hook") as robot:
        assert robot.send('**本周活动** <font color="info">已发布</font>', markdown=True).ok
    assert json.loads(gateway.requests[0]["body"]) == {
        "msgtype": "markdown",
        "markdown": {"content": '**本周活动** <font color="info">已发布</font>'},
    }


@pytest.mark.parametrize(
    ("status", "payload", "outcome"),
    [
        (200, {"errcode": 45009, "errmsg": "api freq out of limit"}, Outcome.RETRY),
        (200, {"errcode": -1, "errmsg": "system busy"}, Outcome.RETRY),
        (200, {"errcode": 93000, "errmsg": "invalid webhook url"}, Outcome.PAUSE),
        (200, {"errcode": 40008, "errmsg": "invalid message type"}, Outcome.FAILED),
        (502, "bad gateway", Outcome.RETRY),
        (404, "not found", Outcome.FAILED),
    ],
)
def test_wecom_replies_are_classified(gateway, status, payload, outcome):
    gateway.replies.append((status, payload))
    with WeComRobot(f"{gateway.url}/hook") as robot:
        assert robot.send("hi").outcome is outcome


def test_wecom_content_over_the_robot_limit_is_not_sent(gateway):
    with WeComRobot(f"{gateway.url}/hook") as robot:
        result = robot.send("字" * 700)  # 2,100 bytes of UTF-8
    assert (result.outcome, result.detail) == (Outcome.FAILED, "too_long")
    assert gateway.requests == []
