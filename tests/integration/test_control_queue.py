"""Operator queue and listener commands (cmd_queue.c) against a running
posternd: showrecipients, deleterecipients and bouncerecipients (by host,
sender, all), redirectrecipients, showmessage, suspenddel/resumedel
(and workqueue pause), suspendlistener/resumelistener. Mail is kept queued
by routing it to a closed port with an hour-long retry."""
import json
import socket
import time

from conftest import (RawSMTP, delivery_overrides, free_port, make_content, route,
                      send_message)
from test_control import ctl, ctl_json, wait_until

HOUR = {"initial_retry": "1h", "max_retry": "1h"}


def queued_gateway(make_gateway, smtp_peer=None, extra_routes=()):
    """example.com and sub.example.net go to a closed port: mail stays queued."""
    closed = free_port()
    routes = [route("example.com", ("127.0.0.1", closed)),
              route("a.sub.example.net", ("127.0.0.1", closed))] + list(extra_routes)
    return make_gateway(delivery_overrides(routes, profile=HOUR))


def counters(gw):
    return ctl_json(gw, "status")["counters"]


def test_show_delete_by_host_sender_all(make_gateway):
    gw = queued_gateway(make_gateway)
    m1 = send_message(gw, "s1@example.org", ["a@example.com", "b@example.com"], make_content("m1"))
    m2 = send_message(gw, "s2@example.org", ["c@a.sub.example.net"], make_content("m2"))
    m3 = send_message(gw, "s2@example.org", ["d@example.com"], make_content("m3"))
    for m in (m1, m2, m3):
        gw.wait_log(rf"MID {m} to \[0\] pending till")
    js = ctl_json(gw, "showrecipients")
    assert js["count"] == 4
    assert [(r["mid"], r["recipient"]) for r in js["recipients"]] == [
        (m1, "a@example.com"), (m1, "b@example.com"), (m2, "c@a.sub.example.net"),
        (m3, "d@example.com")]
    r0 = js["recipients"][0]
    assert r0["state"] == "waiting" and r0["attempts"] == 1 and r0["sender"] == "s1@example.org"
    assert r0["destination"] == "example.com" and r0["size"] > 0
    text = ctl(gw, "showrecipients", "host", "example.com").stdout
    assert "a@example.com" in text and "c@a.sub.example.net" not in text
    assert ctl_json(gw, "showrecipients", "sender", "s2@example.org")["count"] == 2

    # destructive: refused without --yes
    p = ctl(gw, "deleterecipients", "all", ok=False)
    assert p.returncode == 2
    out = ctl(gw, "--yes", "deleterecipients", "host", "a.sub.example.net").stdout
    assert "1 recipient(s) of 1 message(s) deleted" in out
    gw.wait_log(rf"MID {m2} deleted by operator \(1 recipients\)")
    gw.wait_log(rf"Message finished MID {m2} done")
    out = json.loads(ctl(gw, "--yes", "--json", "deleterecipients", "sender",
                         "s1@example.org").stdout)
    assert out["recipients"] == 2 and out["messages"] == 1 and out["skipped_active"] == 0
    gw.wait_log(rf"MID {m1} deleted by operator \(2 recipients\)")
    ctl(gw, "--yes", "deleterecipients", "all")
    gw.wait_log(rf"Message finished MID {m3} done")
    gw.wait_log(r"Control: deleterecipients \{\"all\":true\} by uid")
    assert ctl_json(gw, "showrecipients")["count"] == 0
    c = counters(gw)
    assert c["deleted"]["uptime"] == 4 and c["completed"]["uptime"] == 4
    assert ctl_json(gw, "hoststatus", "example.com")["counters"]["deleted"] == 3
    wait_until(lambda: gw.spool_messages() == [], what="spool empty")
    # gone from the queue: showmessage tells its story from message tracking
    # (the tracking worker writes in batches, so allow it a moment)
    wait_until(lambda: "deleted by operator" in ctl(gw, "showmessage", str(m1), ok=False).stdout,
               what="showmessage from tracking")
    out = ctl(gw, "showmessage", str(m1)).stdout
    assert "Not in the queue any more" in out and f"MID {m1} deleted by operator" in out


def test_bounce_sends_dsn_and_showmessage(make_gateway, smtp_peer):
    peer = smtp_peer("senders")
    closed = free_port()
    gw = make_gateway(delivery_overrides(
        [route("example.com", ("127.0.0.1", closed)),
         route("example.org", ("127.0.0.1", peer.port))], profile=HOUR,
        relay_domains=["example.com", "example.org"]))
    mid = send_message(gw, "sender@example.org", ["x@example.com", "y@example.com"],
                       make_content("bounce me"))
    gw.wait_log(rf"MID {mid} to \[1\] pending till")
    js = ctl_json(gw, "showmessage", str(mid))
    assert js["mid"] == mid and js["sender"] == "sender@example.org"
    assert js["subject"] == "bounce me" and js["message_id"] == "<bounce-me@client.test>"
    assert js["helo"] == "client.test" and js["client_ip"] == "127.0.0.1"
    assert js["listener"] == "InboundMail"
    assert [(r["recipient"], r["state"]) for r in js["recipients"]] == [
        ("x@example.com", "waiting"), ("y@example.com", "waiting")]
    text = ctl(gw, "showmessage", str(mid)).stdout
    assert "sender@example.org" in text and "bounce me" in text

    out = ctl(gw, "--yes", "bouncerecipients", "host", "example.com").stdout
    assert "2 recipient(s) of 1 message(s) bounced" in out
    gw.wait_log(rf"MID {mid} bounced by operator \(2 recipients\)")
    [dsn] = peer.wait_messages(1)
    assert dsn["rcpts"] == ["sender@example.org"] and dsn["mail_from"] in ("", "<>")
    assert b"bounced by operator" in dsn["body"] and b"Status: 5.0.0" in dsn["body"]
    c = counters(gw)
    assert c["hard_other"]["uptime"] == 2 and c["hard_bounced"]["uptime"] == 2


def test_redirect_delivers_queued_mail(make_gateway, smtp_peer):
    peer = smtp_peer("elsewhere")
    gw = queued_gateway(make_gateway)
    mid = send_message(gw, "s@example.org", ["r@example.com"], make_content("redir"))
    gw.wait_log(rf"MID {mid} to \[0\] pending till")
    assert ctl(gw, "redirectrecipients", f"127.0.0.1:{peer.port}", ok=False).returncode == 2
    js = json.loads(ctl(gw, "--yes", "--json", "redirectrecipients",
                        f"127.0.0.1:{peer.port}").stdout)
    assert js["port"] == peer.port and js["rescheduled"] == 1
    [msg] = peer.wait_messages(1)
    assert msg["rcpts"] == ["r@example.com"]
    gw.wait_log(rf"Message finished MID {mid} done")
    gw.wait_log(r"All deliveries redirected by operator to 127.0.0.1")
    ctl(gw, "--yes", "redirectrecipients", "clear")
    gw.wait_log(r"Redirect of all deliveries cleared by operator")


def test_suspenddel_keeps_mail_until_resumedel(make_gateway, smtp_peer):
    peer = smtp_peer("sink")
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", peer.port))]))
    assert "Delivery suspended for all" in ctl(gw, "suspenddel").stdout
    assert "Delivery suspended" in ctl(gw, "status").stdout
    assert ctl_json(gw, "workqueue")["status"] == "Delivery suspended"
    mid = send_message(gw, "s@example.org", ["r@example.com"], make_content("held"))
    time.sleep(1.0)
    assert peer.messages() == []
    assert ctl_json(gw, "showrecipients")["recipients"][0]["state"] == "ready"
    ctl(gw, "resumedel")
    peer.wait_messages(1)
    gw.wait_log(rf"Message finished MID {mid} done")
    # one domain, and workqueue pause/resume
    ctl(gw, "suspenddel", "example.com")
    mid = send_message(gw, "s@example.org", ["r@example.com"], make_content("held2"))
    time.sleep(1.0)
    assert len(peer.messages()) == 1
    assert ctl_json(gw, "status")["system_status"] == "Online"
    ctl(gw, "workqueue", "pause")
    assert json.loads(ctl(gw, "--json", "resumedel", "example.com").stdout)["all_suspended"]
    time.sleep(0.5)
    assert len(peer.messages()) == 1
    ctl(gw, "workqueue", "resume")
    peer.wait_messages(2)
    gw.wait_log(r"Delivery suspended by operator for example.com")
    gw.wait_log(r"Control: suspenddel \{\"host\":\"example.com\"\} by uid")


def accepts(port, timeout=1.5):
    """True if a banner arrives within timeout."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return False
    try:
        s.settimeout(timeout)
        return s.recv(100).startswith(b"220")
    except OSError:
        return False
    finally:
        s.close()


def test_suspendlistener_and_resume(make_gateway):
    gw = make_gateway()
    c = RawSMTP(gw.port)  # a session in progress continues
    c.ehlo()
    js = json.loads(ctl(gw, "--json", "suspendlistener", "InboundMail").stdout)
    assert js["listeners"][0]["suspended"] is True
    assert ctl(gw, "resumelistener", "nosuch", ok=False).returncode == 1
    assert not accepts(gw.port)
    assert ctl_json(gw, "status")["system_status"] == "Receiving suspended"
    c.expect("NOOP", 250)
    c.cmd("QUIT")
    c.close()
    gw.wait_log(r"Listener InboundMail suspended by operator")
    ctl(gw, "resumelistener")
    gw.wait_log(r"Listener InboundMail resumed by operator")
    assert accepts(gw.port)
    ctl(gw, "suspendlistener")
    assert not accepts(gw.port)
    ctl(gw, "resumelistener", "InboundMail")
    assert accepts(gw.port)
