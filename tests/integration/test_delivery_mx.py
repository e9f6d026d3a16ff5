"""Delivery by MX records (no route, or USEDNS) with the test DNS server:
preference order, failover to the next MX, the implicit MX (A fallback),
NXDOMAIN and null MX bounce (DSN to the sender), SERVFAIL defers and the
retry succeeds once DNS answers.

MX delivery always uses port 25: the sinks listen on 127.0.0.2/.3/.4 port
25 (needs root or CAP_NET_BIND_SERVICE; skipped otherwise)."""
import email
import socket

import pytest

from conftest import (assert_relayed, delivery_overrides, make_content, route, send_message,
                      wait_spool_empty)

SENDER = "mxsender@example.org"

ZONE = {
    "zone": "example.net",
    "names": {
        "pref.example.net": {"MX": ["20 mx2.pref.example.net", "10 mx1.pref.example.net"]},
        "usedns.example.net": {"MX": ["10 mx1.pref.example.net"]},
        "mx1.pref.example.net": {"A": ["127.0.0.2"]},
        "mx2.pref.example.net": {"A": ["127.0.0.3"]},
        "nomx.example.net": {"A": ["127.0.0.4"]},
        "nullmx.example.net": {"MX": ["0 ."]},
        "flaky.example.net": {"rcode": "SERVFAIL"},
    },
}


@pytest.fixture(scope="module")
def port25():
    """Skip unless 127.0.0.2-4 port 25 can be bound here."""
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, 25))
        except OSError as e:
            pytest.skip(f"cannot bind {ip}:25 for MX sinks ({e}); MX delivery always uses port 25")
        finally:
            s.close()


@pytest.fixture
def mx_env(port25, make_gateway, smtp_peer, dns_server):
    """(gateway, dns, sender-side peer, factory for MX sinks on ip:25)."""
    dns = dns_server(ZONE)
    back = smtp_peer("sender-side")
    gw = make_gateway(delivery_overrides(
        [route("example.org", ("127.0.0.1", back.port)),
         route("usedns.example.net", "USEDNS")], dns_port=dns.port))

    def sink(ip):
        return smtp_peer(f"mx-{ip}", host=ip, port=25)
    return gw, dns, back, sink


def test_mx_preference_lowest_first(mx_env):
    gw, dns, back, sink = mx_env
    mx1, mx2 = sink("127.0.0.2"), sink("127.0.0.3")
    contents = [make_content(f"mx pref {i}") for i in range(3)]
    mids = [send_message(gw, SENDER, [f"u{i}@pref.example.net"], c) for i, c in enumerate(contents)]
    msgs = mx1.wait_messages(3)
    for mid in mids:
        gw.wait_log(rf"Message finished MID {mid} done")
    assert mx2.messages() == [] and mx2.connections() == 0
    got = {m["rcpts"][0]: m for m in msgs}
    for i, (mid, c) in enumerate(zip(mids, contents)):
        assert_relayed(got[f"u{i}@pref.example.net"]["body"], c, mid)
    gw.wait_log(r"New SMTP DCID \d+ interface \S+ address 127\.0\.0\.2 port 25$")
    assert ["pref.example.net", "MX"] in dns.queries()
    wait_spool_empty(gw)


def test_mx_usedns_route(mx_env):
    gw, dns, back, sink = mx_env
    mx1 = sink("127.0.0.2")
    content = make_content("usedns")
    mid = send_message(gw, SENDER, ["x@usedns.example.net"], content)
    [m] = mx1.wait_messages(1)
    assert_relayed(m["body"], content, mid)
    wait_spool_empty(gw)


def test_mx_lower_refuses_next_preference(mx_env):
    gw, dns, back, sink = mx_env
    mx2 = sink("127.0.0.3")  # nothing on 127.0.0.2:25: refused
    content = make_content("mx failover")
    mid = send_message(gw, SENDER, ["v@pref.example.net"], content)
    [m] = mx2.wait_messages(1)
    assert_relayed(m["body"], content, mid)
    gw.wait_log(r"Connection Error: DCID \d+ domain: pref\.example\.net IP: 127\.0\.0\.2 "
                r"port: 25 details: .* reason: network error$")
    gw.wait_log(rf"Message done DCID \d+ MID {mid} to RID \[0\]$")
    wait_spool_empty(gw)


def test_no_mx_falls_back_to_a(mx_env):
    gw, dns, back, sink = mx_env
    host = sink("127.0.0.4")
    content = make_content("implicit mx")
    mid = send_message(gw, SENDER, ["w@nomx.example.net"], content)
    [m] = host.wait_messages(1)
    assert_relayed(m["body"], content, mid)
    assert m["rcpts"] == ["w@nomx.example.net"]
    q = dns.queries()
    assert ["nomx.example.net", "MX"] in q and ["nomx.example.net", "A"] in q
    wait_spool_empty(gw)


def dsn_fields(msg):
    dsn = email.message_from_bytes(msg["body"])
    assert dsn.get_content_type() == "multipart/report"
    status = dsn.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    return [dict((k, " ".join(v.split())) for k, v in b.items()) for b in blocks][1:]


@pytest.mark.parametrize("domain,status,why", [
    ("gone.example.net", "5.1.2", "does not exist"),
    ("nullmx.example.net", "5.1.10", "null MX"),
], ids=["nxdomain", "null_mx"])
def test_dns_hard_bounce(mx_env, domain, status, why):
    gw, dns, back, sink = mx_env
    mid = send_message(gw, SENDER, [f"z@{domain}"], make_content(f"dns bounce {domain}"))
    gw.wait_log(rf"Info: Bounced: DCID \d+ MID {mid} to RID 0 - {status} - .*"
                rf"DNS Hard Bounce: domain {domain} .*{why}")
    gw.wait_log(rf"Info: MID \d+ generated for bounce of MID {mid}$")
    [d] = back.wait_messages(1)
    assert d["mail_from"] == "" and d["rcpts"] == [SENDER]
    [r] = dsn_fields(d)
    assert r["Final-Recipient"] == f"rfc822; z@{domain}"
    assert r["Action"] == "failed" and r["Status"] == status
    assert "New SMTP DCID" not in gw.log().split(f"MID {mid} queued for delivery")[1].split(
        "generated for bounce")[0], "no connection for a domain DNS says has no mail host"
    wait_spool_empty(gw)


def test_servfail_defers_then_delivers(mx_env):
    gw, dns, back, sink = mx_env
    mx1 = sink("127.0.0.2")
    content = make_content("servfail")
    mid = send_message(gw, SENDER, ["s@flaky.example.net"], content)
    gw.wait_log(rf"Info: Delayed: DCID \d+ MID {mid} to RID 0 - 4\.\d+\.\d+ - .*flaky\.example\.net")
    gw.wait_log(rf"Info: MID {mid} to \[0\] pending till .* \[fast\]$")
    assert mx1.messages() == []
    zone = {"zone": ZONE["zone"], "names": dict(ZONE["names"])}
    zone["names"]["flaky.example.net"] = {"MX": ["10 mx1.pref.example.net"]}
    dns.set(zone)
    [m] = mx1.wait_messages(1, timeout=20)
    assert_relayed(m["body"], content, mid)
    gw.wait_log(rf"Message done DCID \d+ MID {mid} to RID \[0\]$")
    assert not back.messages(), "a temporary DNS failure must not bounce"
    wait_spool_empty(gw)
