"""SMTP throughput: our session + message builder against a bare smtplib loop, both sending
to Postfix's `smtp-sink` (a C sink that does not measure itself).

Prints name=value lines (`make bench`):
    bare_smtplib_msgs_per_s_1proc / _2proc   pre-built bytes, one connection per process
    builder_smtp_msgs_per_s_1proc / _2proc   link rewriting + pixel + unsubscribe token +
                                             MIME fill-in + Message-ID + SMTP, no DKIM
    builder_dkim_smtp_msgs_per_s_1proc / _2proc   the same with DKIM (rsa-sha256, 2048 bits)
    ratio_vs_bare, ratio_vs_bare_dkim        ours / bare, 2 processes each (and _1proc)
    render_us, build_us, dkim_us, smtp_us    time per message in one process
BENCH_SMTP_MESSAGES (default 20000) sets the number of messages per measurement.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port

SMTP_SINK = "/usr/sbin/smtp-sink"
MESSAGES = int(os.environ.get("BENCH_SMTP_MESSAGES", "20000"))
SENDER = "marketing@example.com"
BASE_URL = "https://mkt.example.com"


def realistic_template() -> str:
    """About 20 KB of campaign HTML with 20 tracked links and a {name} placeholder."""
    rows = []
    for i in range(20):
        rows.append(
            f'<tr><td style="padding:12px 24px;font-family:Arial,sans-serif;font-size:14px;'
            f'line-height:22px;color:#333333;"><h3 style="margin:0 0 8px;color:#1a4fd6;">'
            f"第 {i + 1} 节：智能制造解决方案 Smart manufacturing, part {i + 1}</h3>"
            f'<p style="margin:0 0 12px;">尊敬的 {{name}}，我们很高兴向您介绍最新的数字化工厂'
            f"方案，帮助企业提升产能、降低成本，实现可持续增长。Our platform connects machines, "
            f"people and data so that every shift runs better than the last one.</p>"
            f'<p style="margin:0 0 12px;color:#555555;">客户案例：某汽车零部件企业上线三个月后，'
            f"设备综合效率提升 18%，交付周期缩短 25%。Case study: OEE up 18 % and lead time down "
            f"25 % within three months.</p>"
            f'<a href="https://www.example.com/solutions/{i}?utm_source=email&amp;'
            f'utm_medium=edm&amp;utm_campaign=autumn-launch&amp;utm_content=section-{i}" '
            f'style="display:inline-block;padding:8px 16px;background:#1a4fd6;color:#ffffff;'
            f'text-decoration:none;border-radius:4px;">了解更多 Learn more</a></td></tr>'
        )
    html = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>秋季新品发布'
        '</title></head><body style="margin:0;background:#f4f6fa;">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td '
        'align="center"><table role="presentation" width="640" cellpadding="0" '
        'cellspacing="0" style="background:#ffffff;">' + "".join(rows) + "<tr><td style="
        '"padding:24px;font-size:12px;color:#888888;">如不想再收到此类邮件，请'
        '<a href="{unsubscribe}">退订</a>。 If you no longer wish to receive these emails, '
        '<a href="{unsubscribe}">unsubscribe</a>.</td></tr></table></td></tr></table>'
        "</body></html>"
    )
    return html


def start_sink() -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = [SMTP_SINK, "-c"]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]  # smtp-sink refuses to keep root privileges
    args += [f"127.0.0.1:{port}", "1000"]
    sink = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return sink, port


def bare_worker(port: int, count: int, message: bytes) -> tuple[float, float, int]:
    smtp = smtplib.SMTP("127.0.0.1", port)
    smtp.ehlo()
    refused = 0
    started = time.perf_counter()
    for i in range(count):
        refused += len(smtp.sendmail(SENDER, [f"r{i}@example.org"], message))
    ended = time.perf_counter()
    smtp.quit()
    return started, ended, refused


def builder_worker(port: int, count: int, dkim_pem: bytes | None) -> dict:
    from portal.delivery.channels.smtp import SmtpSession, SmtpSettings
    from portal.delivery.mime import DkimSigner, MessageSkeleton, make_message_id
    from portal.delivery.tokens import LinkTracker, TrackingTokens

    template = realistic_template()
    tracker = LinkTracker(TrackingTokens("bench-secret-key"), BASE_URL)
    skeleton = MessageSkeleton("市场部 <marketing@example.com>")
    signer = DkimSigner("bench", "example.com", dkim_pem) if dkim_pem else None
    render = build = dkim = smtp_time = 0.0
    failures = 0
    clock = time.perf_counter
    with SmtpSession(SmtpSettings("127.0.0.1", port, "plain")) as smtp:
        started = clock()
        for i in range(count):
            contact_id = 100_000 + i
            t0 = clock()
            unsubscribe = tracker.unsubscribe_url(i, contact_id)
            name = f"客户{i}"
            html = template.replace("{name}", name).replace("{unsubscribe}", unsubscribe)
            t1 = clock()
            html = tracker.rewrite(html, i, contact_id, unsubscribe_url=unsubscribe)
            data = skeleton.build(
                to_email=f"c{contact_id}@example.org",
                to_name=name,
                subject=f"{name}，秋季新品发布会邀请",
                html=html,
                text=f"尊敬的 {name}，诚邀您参加秋季新品发布会。",
                message_id=make_message_id(i, "mkt.example.com"),
                unsubscribe_url=unsubscribe,
            )
            t2 = clock()
            if signer is not None:
                data = signer.sign(data)
            t3 = clock()
            if not smtp.send(SENDER, f"c{contact_id}@example.org", data).ok:
                failures += 1
            t4 = clock()
            render += t1 - t0
            build += t2 - t1
            dkim += t3 - t2
            smtp_time += t4 - t3
        ended = clock()
    return {
        "started": started,
        "ended": ended,
        "failures": failures,
        "render": render,
        "build": build,
        "dkim": dkim,
        "smtp": smtp_time,
        "bytes": len(data),
    }


def wall_rate(spans: list[tuple[float, float]], total: int) -> float:
    # perf_counter is system-wide (CLOCK_MONOTONIC) on Linux, so spans compare across processes.
    return total / (max(e for _, e in spans) - min(s for s, _ in spans))


def run_parallel(function, processes: int, args: tuple) -> list:
    """`function(*args)` in `processes` fresh processes at once; their results."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        return pool.starmap(function, [args] * processes)


@pytest.fixture(scope="module")
def sink_port():
    if not Path(SMTP_SINK).exists() and not shutil.which("smtp-sink"):
        pytest.skip("Postfix's smtp-sink not found (apt-get install postfix): SMTP benchmark not run")
    sink, port = start_sink()
    yield port
    sink.terminate()
    sink.wait(timeout=10)


@pytest.fixture(scope="module")
def dkim_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def test_smtp_throughput_of_builder_against_bare_smtplib(sink_port, dkim_pem):
    # The bare loop sends what our builder produces for one recipient: same size, same sink.
    sample = builder_worker(sink_port, 1, None)
    assert sample["failures"] == 0
    message = _sample_message()
    print(f"\nmessage_bytes={len(message)}")

    bare = {}
    for processes in (1, 2):
        results = run_parallel(bare_worker, processes, (sink_port, MESSAGES // processes, message))
        assert sum(r[2] for r in results) == 0
        bare[processes] = wall_rate([(r[0], r[1]) for r in results], MESSAGES)
        print(f"bare_smtplib_msgs_per_s_{processes}proc={bare[processes]:.0f}")

    ours: dict[tuple[bool, int], float] = {}
    for with_dkim in (False, True):
        label = "builder_dkim_smtp" if with_dkim else "builder_smtp"
        for processes in (1, 2):
            results = run_parallel(
                builder_worker,
                processes,
                (sink_port, MESSAGES // processes, dkim_pem if with_dkim else None),
            )
            assert sum(r["failures"] for r in results) == 0
            rate = wall_rate([(r["started"], r["ended"]) for r in results], MESSAGES)
            ours[(with_dkim, processes)] = rate
            print(f"{label}_msgs_per_s_{processes}proc={rate:.0f}")
            if processes == 1:
                per = {k: results[0][k] / MESSAGES * 1e6 for k in ("render", "build", "dkim", "smtp")}
                suffix = "_with_dkim" if with_dkim else ""
                print(
                    f"render_us{suffix}={per['render']:.0f} build_us{suffix}={per['build']:.0f} "
                    f"dkim_us{suffix}={per['dkim']:.0f} smtp_us{suffix}={per['smtp']:.0f}"
                )
    # The send pipeline's goal is a ratio of at least 0.6 end to end (with the database);
    # these figures show how much of that budget building and SMTP alone take. They are
    # printed, not asserted: on a shared 2-core machine the 2-process figures swing widely.
    print(f"ratio_vs_bare_1proc={ours[(False, 1)] / bare[1]:.2f}")
    print(f"ratio_vs_bare={ours[(False, 2)] / bare[2]:.2f}")
    print(f"ratio_vs_bare_dkim={ours[(True, 2)] / bare[2]:.2f}")
    print(f"load_average_1min={os.getloadavg()[0]:.2f}")


def _sample_message() -> bytes:
    from portal.delivery.mime import MessageSkeleton, make_message_id
    from portal.delivery.tokens import LinkTracker, TrackingTokens

    tracker = LinkTracker(TrackingTokens("bench-secret-key"), BASE_URL)
    unsubscribe = tracker.unsubscribe_url(1, 1)
    html = realistic_template().replace("{name}", "客户1").replace("{unsubscribe}", unsubscribe)
    return MessageSkeleton("市场部 <marketing@example.com>").build(
        to_email="c1@example.org",
        to_name="客户1",
        subject="客户1，秋季新品发布会邀请",
        html=tracker.rewrite(html, 1, 1, unsubscribe_url=unsubscribe),
        text="尊敬的 客户1，诚邀您参加秋季新品发布会。",
        message_id=make_message_id(1, "mkt.example.com"),
        unsubscribe_url=unsubscribe,
    )
