"""Bounces: a DSN (RFC 3464) to the envelope sender after a 5xx, after the
queue lifetime or retry count ran out, and never to the null sender. The
DSN itself is delivered: the sender's domain has a route to its own peer."""
import email
import email.policy
import re
import time

import pytest

from conftest import (assert_relayed, delivery_overrides, make_content, route, send_message,
                      wait_spool_empty)

SENDER = "bounce@example.org"


def gateway_with_sender_sink(make_gateway, smtp_peer, peer_opts=None, profile=None):
    dest = smtp_peer("dest", **(peer_opts or {}))
    back = smtp_peer("sender-side")
    gw = make_gateway(delivery_overrides(
        [route("example.com", ("127.0.0.1", dest.port)),
         route("example.org", ("127.0.0.1", back.port))], profile=profile))
    return gw, dest, back


def parse_dsn(msg):
    """(the parsed DSN, [per-recipient field dicts], per-message fields)."""
    assert msg["mail_from"] == "", "a DSN is sent with the null reverse-path"
    dsn = email.message_from_bytes(msg["body"], policy=email.policy.compat32)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"] == "auto-replied"
    parts = dsn.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()  # compat32: a list of header blocks
    fields = [dict((k, " ".join(v.split())) for k, v in b.items()) for b in blocks]
    return dsn, fields[1:], fields[0]


def test_dsn_after_rcpt_550(make_gateway, smtp_peer):
    gw, dest, back = gateway_with_sender_sink(
        make_gateway, smtp_peer,
        {"rcpt_replies": {"bad@example.com": "550 5.1.1 <bad@example.com>: no such user"}})
    content = make_content("will half bounce")
    mid = send_message(gw, SENDER, ["good@example.com", "bad@example.com"], content)
    [ok] = dest.wait_messages(1)
    assert ok["rcpts"] == ["good@example.com"]
    assert_relayed(ok["body"], content, mid)
    gw.wait_log(rf"Info: Bounced: DCID \d+ MID {mid} to RID 1 - 5\.1\.1 - .*no such user")
    gw.wait_log(rf"Info: Message done DCID \d+ MID {mid} to RID \[0\]$")
    dmid = int(gw.wait_log(rf"Info: MID (\d+) generated for bounce of MID {mid}$").group(1))
    assert dmid > mid
    [d] = back.wait_messages(1)
    assert d["rcpts"] == [SENDER]
    dsn, rcpts, per_msg = parse_dsn(d)
    assert dsn["To"] == f"<{SENDER}>"
    assert per_msg["X-Postern-MID"] == str(mid)
    assert per_msg["Reporting-MTA"] == "dns; gw.test"
    assert len(rcpts) == 1, "only the failed recipient is reported"
    r = rcpts[0]
    assert r["Final-Recipient"] == "rfc822; bad@example.com"
    assert r["Action"] == "failed"
    assert re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", r["Status"]) and r["Status"] == "5.1.1"
    assert r["Diagnostic-Code"].startswith("smtp; ") and "5.1.1" in r["Diagnostic-Code"]
    assert r["Remote-MTA"] == "dns; 127.0.0.1"
    # the original is returned
    orig = dsn.get_payload()[2]
    assert orig.get_content_type() == "message/rfc822"
    assert orig.get_payload()[0]["Subject"] == "will half bounce"
    gw.wait_log(rf"Message finished MID {dmid} done")
    wait_spool_empty(gw)


@pytest.mark.parametrize("limit", [{"max_retries": 1}, {"max_queue_time": "2s"}],
                         ids=["max_retries", "max_queue_time"])
def test_dsn_after_expiry(make_gateway, smtp_peer, limit):
    gw, dest, back = gateway_with_sender_sink(
        make_gateway, smtp_peer, {"rcpt_reply": "451 4.3.0 try again later"}, profile=limit)
    mid = send_message(gw, SENDER, ["slow@example.com"], make_content("expires"))
    gw.wait_log(rf"Info: Delayed: DCID \d+ MID {mid} to RID 0 - 4\.3\.0 - .*try again later")
    gw.wait_log(rf"Info: MID {mid} to \[0\] pending till .* \[fast\]$")
    gw.wait_log(rf"Info: MID {mid} RID \[0\] expired after \d+ attempts \[fast\]$", timeout=15)
    dmid = int(gw.wait_log(rf"Info: MID (\d+) generated for bounce of MID {mid}$").group(1))
    [d] = back.wait_messages(1)
    assert d["rcpts"] == [SENDER]
    _, rcpts, _ = parse_dsn(d)
    [r] = rcpts
    assert r["Final-Recipient"] == "rfc822; slow@example.com"
    assert r["Action"] == "failed"
    assert r["Status"] == "5.4.7"
    assert "4.3.0 try again later" in r.get("Diagnostic-Code", ""), r
    assert dest.messages() == []
    gw.wait_log(rf"Message finished MID {dmid} done")
    wait_spool_empty(gw)


def test_no_dsn_for_null_sender(make_gateway, smtp_peer):
    gw, dest, back = gateway_with_sender_sink(
        make_gateway, smtp_peer, {"rcpt_reply": "550 5.1.1 no such user"})
    mid = send_message(gw, "", ["bad@example.com"], make_content("null sender"))
    gw.wait_log(rf"Info: Bounced: DCID \d+ MID {mid} to RID 0 - 5\.1\.1 - ")
    gw.wait_log(rf"Info: MID {mid} .*no DSN to the null sender")
    gw.wait_log(rf"Message finished MID {mid} done")
    wait_spool_empty(gw)
    time.sleep(0.5)
    assert back.messages() == [] and back.connections() == 0
    assert not re.search(rf"generated for bounce of MID {mid}\b", gw.log())


def test_dsn_diagnostic_code_is_the_smtp_reply(make_gateway, smtp_peer):
    """RFC 3464 2.3.6 / docs/bounces.md: "Diagnostic-Code: smtp; 550 5.1.1 ..."
    carries the remote reply as SMTP text, not the mail_logs rendering
    ('550', ['5.1.1 ...']); the text part's "Reply:" likewise."""
    gw, dest, back = gateway_with_sender_sink(
        make_gateway, smtp_peer,
        {"rcpt_replies": {"bad@example.com": "550 5.1.1 <bad@example.com>: no such user"}})
    mid = send_message(gw, SENDER, ["bad@example.com"], make_content("diagnostic"))
    gw.wait_log(rf"Info: MID (\d+) generated for bounce of MID {mid}$")
    [d] = back.wait_messages(1)
    dsn, [r], _ = parse_dsn(d)
    assert r["Diagnostic-Code"] == "smtp; 550 5.1.1 <bad@example.com>: no such user", r
    text = dsn.get_payload()[0].get_payload()
    assert "Reply: 550 5.1.1 <bad@example.com>: no such user" in " ".join(text.split()), text
    wait_spool_empty(gw)


def test_undeliverable_dsn_is_a_double_bounce(make_gateway, smtp_peer):
    """The DSN itself is refused: logged as a double bounce, no third message."""
    dest = smtp_peer("dest", rcpt_reply="550 5.1.1 no such user")
    back = smtp_peer("sender-side", rcpt_reply="550 5.1.1 sender gone too")
    gw = make_gateway(delivery_overrides(
        [route("example.com", ("127.0.0.1", dest.port)),
         route("example.org", ("127.0.0.1", back.port))]))
    mid = send_message(gw, SENDER, ["bad@example.com"], make_content("double"))
    dmid = int(gw.wait_log(rf"Info: MID (\d+) generated for bounce of MID {mid}$").group(1))
    gw.wait_log(rf"Info: Bounced: DCID \d+ MID {dmid} to RID 0 - 5\.1\.1 - ")
    gw.wait_log(rf"Info: MID {dmid} double bounce: no DSN to the null sender")
    gw.wait_log(rf"Message finished MID {dmid} done")
    wait_spool_empty(gw)
    time.sleep(0.5)
    assert not re.search(rf"generated for bounce of MID {dmid}\b", gw.log())
    assert back.messages() == [] and dest.messages() == []
