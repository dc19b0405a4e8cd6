import re
import smtplib
import subprocess
import sys
from email.message import EmailMessage

import pytest

from tests.conftest import ROOT, free_port, wait_for_port


@pytest.fixture
def smtp_sink(outbox_dir):
    """The development SMTP sink, as `make run` starts it, writing into the test outbox."""
    for old in outbox_dir.glob("*.eml"):
        old.unlink()
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portal.dev.smtp_sink",
            "--port",
            str(port),
            "--dir",
            str(outbox_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def send_sample(port: int) -> None:
    message = EmailMessage()
    message["Subject"] = "[TEST] 春季新品发布会邀请"
    message["From"] = "Marketing <marketing@example.com>"
    message["To"] = "王小明 <xiaoming@example.com>"
    message["List-Unsubscribe"] = "<https://portal.example.com/u/abc>"
    message.set_content("您好，王小明：欢迎参加发布会。")
    message.add_alternative("<p>您好，<b>王小明</b>：欢迎参加发布会。</p><script>alert(1)</script>", subtype="html")
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(message, to_addrs=["xiaoming@example.com"])


def test_sink_keeps_the_message_and_the_outbox_lists_it(client, login_as, smtp_sink):
    send_sample(smtp_sink)
    login_as("operations_specialist")
    listing = client.get("/outbox/").get_data(as_text=True)
    assert "[TEST] 春季新品发布会邀请" in listing
    assert "xiaoming@example.com" in listing


def test_outbox_message_shows_headers_text_and_sandboxed_html(client, login_as, smtp_sink, outbox_dir):
    send_sample(smtp_sink)
    login_as("operations_specialist")
    key = next(outbox_dir.glob("*.eml")).stem
    html = client.get(f"/outbox/{key}").get_data(as_text=True)
    assert "List-Unsubscribe" in html
    assert "您好，王小明：欢迎参加发布会。" in html
    # The HTML part is shown only inside a sandboxed iframe, served from its own URL under a
    # policy that runs nothing (an iframe's srcdoc would inherit the page's own policy).
    assert 'sandbox=""' in html
    assert "alert(1)" not in html
    frame = client.get(re.search(r'<iframe[^>]* src="([^"]+)"', html).group(1))
    assert frame.status_code == 200 and "<script>alert(1)</script>" in frame.get_data(as_text=True)
    policy = frame.headers["Content-Security-Policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy and "script-src" not in policy


def test_outbox_refuses_path_tricks_and_unknown_keys(client, login_as):
    login_as("operations_specialist")
    assert client.get("/outbox/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/outbox/nope").status_code == 404


def test_outbox_needs_its_permission(client, login_as):
    login_as("reviewer")
    assert client.get("/outbox/").status_code == 403
