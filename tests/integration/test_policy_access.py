"""Connection policy: access rules and mail flow policy limits.

REJECT (554 banner, then only QUIT), TCPREFUSE (closed without a banner),
delayed rejection at RCPT, RELAY, the TRUSTED limits of a whitelisted host
against the ACCEPTED defaults, and the THROTTLED limits of a SUSPECTLIST
host: messages per connection, recipients per message, recipients per hour
(also across connections), message size and per-IP concurrency, each
logged once per session ("Receiving Failed: ...").
"""
import re
import time

from conftest import SourcedSMTP, free_port, policy_gateway, policy_overrides, session_log


def quit_close(c):
    try:
        c.cmd("QUIT")
    except OSError:
        pass
    finally:
        c.close()


def count(gw, pattern):
    return len(re.findall(pattern, gw.log(), re.M))


def one_message(c, rcpt="user@example.com", body=b"Subject: t\r\n\r\nHi.\r\n"):
    c.expect("MAIL FROM:<sender@client.test>", 250, "2.1.0")
    c.expect(f"RCPT TO:<{rcpt}>", 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(body + b".\r\n")
    code, lines = c.reply()
    assert code == 250, lines


# ---- access rules -------------------------------------------------------------

def test_blacklisted_host_gets_554_banner_then_only_quit(make_gateway, dns_server):
    dns = dns_server({"names": {}})
    # the newer name of the predefined group
    gw = policy_gateway(make_gateway, dns.port,
                        sender_groups=[{"name": "BLOCKED_LIST", "members": ["127.0.0.2"]}])
    c = SourcedSMTP(gw.port, "127.0.0.2")
    try:
        assert c.banner == (554, ["mx.gw.test Access denied"])
        for cmd in ("EHLO client.test", "HELO client.test", "MAIL FROM:<a@client.test>",
                    "RCPT TO:<user@example.com>", "NOOP", "RSET"):
            c.expect(cmd, 503, "5.7.1")
        c.expect("QUIT", 221)
        assert c.closed()
    finally:
        c.close()
    s = session_log(gw, "127.0.0.2")
    assert s["decision"].endswith("REJECT SG BLACKLIST match 127.0.0.2 SBRS rfc1918")
    # another address is not affected
    c = SourcedSMTP(gw.port, "127.0.0.3")
    assert c.banner[0] == 220
    c.ehlo()
    quit_close(c)


def test_tcprefuse_closes_without_banner(make_gateway, dns_server):
    dns = dns_server({"names": {}})
    gw = policy_gateway(
        make_gateway, dns.port,
        sender_groups=[{"name": "NOPE", "policy": "REFUSED", "members": ["127.0.0.3"]}],
        policies=[{"name": "REFUSED", "access": "tcprefuse"}],
        hat=["NOPE"])
    c = SourcedSMTP(gw.port, "127.0.0.3", banner=False)
    try:
        assert c.closed(timeout=5), "TCPREFUSE left the connection open"
        assert c.buf == b"", f"TCPREFUSE sent {c.buf!r}"
    finally:
        c.close()
    s = session_log(gw, "127.0.0.3")
    assert s["decision"].endswith("TCPREFUSE SG NOPE match 127.0.0.3 SBRS rfc1918")
    gw.wait_log(rf"ICID {s['icid']} close$")
    assert not re.search(rf"ICID {s['icid']} Connection from .* lost after", gw.log())


def test_reject_at_rcpt(make_gateway, dns_server):
    dns = dns_server({"names": {}})
    gw = policy_gateway(
        make_gateway, dns.port,
        sender_groups=[{"name": "LATE", "policy": "LATE", "members": ["127.0.0.4"]}],
        policies=[{"name": "LATE", "access": "reject", "reject_at_rcpt": True,
                   "reject_text": "Not accepting mail from you"}],
        hat=["LATE"])
    c = SourcedSMTP(gw.port, "127.0.0.4")
    try:
        assert c.banner == (220, ["mx.gw.test ESMTP"])
        c.ehlo()
        c.expect("MAIL FROM:<a@client.test>", 250, "2.1.0")
        for rcpt in ("user@example.com", "postmaster@example.com"):
            lines = c.expect(f"RCPT TO:<{rcpt}>", 554, "5.7.1")
            assert lines[-1] == "5.7.1 Not accepting mail from you"
        code, lines = c.cmd("DATA")  # no recipient was accepted
        assert code in (503, 554) and lines[-1].startswith("5.5.1"), (code, lines)
    finally:
        quit_close(c)
    s = session_log(gw, "127.0.0.4")
    assert s["decision"].endswith("REJECT SG LATE match 127.0.0.4 SBRS rfc1918")
    assert count(gw, rf"ICID {s['icid']} To: <user@example\.com> Rejected by policy LATE "
                     r"\(delayed rejection\)") == 1


def test_relaylist_may_relay_and_nobody_else(make_gateway, dns_server, tmp_path):
    dns = dns_server({"names": {}})
    gw = make_gateway(None, start=False)
    out_port = free_port()
    gw.cfg.update(policy_overrides(
        dns.port, sender_groups=[{"name": "RELAYLIST", "members": ["127.0.0.2"]}]))
    gw.cfg["listeners"] = [
        {"name": "InboundMail", "type": "public", "address": "127.0.0.1", "port": gw.port,
         "hostname": "mx.gw.test", "hat": ["RELAYLIST", "WHITELIST", "BLACKLIST"]},
        {"name": "OutboundMail", "type": "private", "address": "127.0.0.1", "port": out_port,
         "hostname": "out.gw.test"},
    ]
    gw.write_config()
    gw.start()
    for port, host in ((gw.port, "mx.gw.test"), (out_port, "out.gw.test")):
        c = SourcedSMTP(port, "127.0.0.2")
        try:
            assert c.banner == (220, [f"{host} ESMTP"])
            c.ehlo()
            c.expect("MAIL FROM:<a@client.test>", 250)
            c.expect("RCPT TO:<user@foreign.org>", 250, "2.1.5")
            c.expect("RCPT TO:<user@example.com>", 250, "2.1.5")
        finally:
            quit_close(c)
    s = session_log(gw, "127.0.0.2")
    assert s["decision"].endswith("RELAY SG RELAYLIST match 127.0.0.2 SBRS rfc1918")
    # another host on the public listener: relay domains only
    c = SourcedSMTP(gw.port, "127.0.0.3")
    try:
        assert c.banner[0] == 220
        c.ehlo()
        c.expect("MAIL FROM:<a@client.test>", 250)
        c.expect("RCPT TO:<user@foreign.org>", 554, "5.7.1")
        c.expect("RCPT TO:<user@example.com>", 250, "2.1.5")
    finally:
        quit_close(c)
    s = session_log(gw, "127.0.0.3")
    assert s["decision"].endswith("ACCEPT SG ALL match ALL SBRS rfc1918")
    # and on the private listener it is not even let in (ALL -> BLOCKED)
    c = SourcedSMTP(out_port, "127.0.0.3")
    try:
        assert c.banner == (554, ["out.gw.test Access denied"])
    finally:
        quit_close(c)
    assert re.search(r"interface OutboundMail \(127\.0\.0\.1\) address 127\.0\.0\.3 ", gw.log())


# ---- TRUSTED vs ACCEPTED ---------------------------------------------------------

def test_whitelisted_host_gets_trusted_limits(make_gateway, dns_server):
    dns = dns_server({"names": {}})
    over = policy_overrides(dns.port,
                            sender_groups=[{"name": "ALLOWED_LIST", "members": ["127.0.0.2"]}])
    # listener caps above the policies', so the policies decide
    over["limits"] = {"max_message_size": "200M", "max_recipients": 1000}
    gw = make_gateway(over)
    trusted = SourcedSMTP(gw.port, "127.0.0.2")
    other = SourcedSMTP(gw.port, "127.0.0.3")
    try:
        assert trusted.banner[0] == 220 and other.banner[0] == 220
        assert "SIZE 104857600" in trusted.ehlo()          # TRUSTED: 100M
        assert "SIZE 10485760" in other.ehlo()             # ACCEPTED: 10M
        # recipients per message: TRUSTED 5000, ACCEPTED 50
        for c, n_ok in ((trusted, 60), (other, 50)):
            c.expect("MAIL FROM:<a@client.test>", 250)
            for i in range(n_ok):
                c.expect(f"RCPT TO:<u{i}@example.com>", 250, "2.1.5")
            if c is other:
                c.expect("RCPT TO:<over@example.com>", 452, "4.5.3")
            c.expect("RSET", 250)
        # messages per connection: TRUSTED 5000, ACCEPTED 10
        for _ in range(11):
            one_message(trusted)
        for _ in range(10):
            one_message(other)
        other.expect("MAIL FROM:<a@client.test>", 452, "4.7.0")
        # concurrent connections from one IP: TRUSTED 600, ACCEPTED 10
        more = [SourcedSMTP(gw.port, "127.0.0.2") for _ in range(11)]
        assert all(m.banner[0] == 220 for m in more)
        for m in more:
            quit_close(m)
    finally:
        quit_close(trusted)
        quit_close(other)
    assert session_log(gw, "127.0.0.2")["decision"].endswith(
        "ACCEPT SG WHITELIST match 127.0.0.2 SBRS rfc1918")
    assert session_log(gw, "127.0.0.3")["decision"].endswith("ACCEPT SG ALL match ALL SBRS rfc1918")
    assert count(gw, r"Receiving Failed: .*address 127\.0\.0\.2\)") == 0


# ---- THROTTLED ------------------------------------------------------------------

THROTTLED = {"name": "THROTTLED", "max_messages_per_connection": 2,
             "max_recipients_per_message": 3, "max_recipients_per_hour": 5,
             "rate_limit_text": "Slow down please", "max_message_size": "10K",
             "max_concurrent_connections": 2}


def throttled_gateway(make_gateway, dns_server):
    dns = dns_server({"names": {}})
    return policy_gateway(make_gateway, dns.port,
                          sender_groups=[{"name": "SUSPECTLIST", "members": ["127.0.0.2-9"]}],
                          policies=[THROTTLED])


def test_throttled_messages_per_connection(make_gateway, dns_server):
    gw = throttled_gateway(make_gateway, dns_server)
    c = SourcedSMTP(gw.port, "127.0.0.2")
    try:
        c.ehlo()
        one_message(c)
        one_message(c)
        for _ in range(2):
            c.expect("MAIL FROM:<sender@client.test>", 452, "4.7.0")
    finally:
        quit_close(c)
    s = session_log(gw, "127.0.0.2")
    assert s["decision"].endswith("ACCEPT SG SUSPECTLIST match 127.0.0.2-9 SBRS rfc1918"), \
        s["decision"]
    assert count(gw, rf"ICID {s['icid']} Receiving Failed: message limit of 2 per connection "
                     r"exceeded \(policy THROTTLED, address 127\.0\.0\.2\)$") == 1
    # a new connection may send again
    c = SourcedSMTP(gw.port, "127.0.0.2")
    try:
        c.ehlo()
        one_message(c)
    finally:
        quit_close(c)


def test_throttled_recipients_per_message(make_gateway, dns_server):
    gw = throttled_gateway(make_gateway, dns_server)
    c = SourcedSMTP(gw.port, "127.0.0.3")
    try:
        c.ehlo()
        c.expect("MAIL FROM:<sender@client.test>", 250)
        for i in range(3):
            c.expect(f"RCPT TO:<u{i}@example.com>", 250, "2.1.5")
        for i in range(3, 5):
            c.expect(f"RCPT TO:<u{i}@example.com>", 452, "4.5.3")
    finally:
        quit_close(c)
    s = session_log(gw, "127.0.0.3")
    assert count(gw, rf"ICID {s['icid']} Receiving Failed: recipient limit of 3 per message "
                     r"exceeded \(policy THROTTLED, address 127\.0\.0\.3\)$") == 1


def test_throttled_recipients_per_hour_across_connections(make_gateway, dns_server):
    gw = throttled_gateway(make_gateway, dns_server)
    c = SourcedSMTP(gw.port, "127.0.0.4")
    try:
        c.ehlo()
        c.expect("MAIL FROM:<sender@client.test>", 250)
        for i in range(3):
            c.expect(f"RCPT TO:<a{i}@example.com>", 250)
        c.expect("RSET", 250)        # accepted recipients count even if the message never comes
        c.expect("MAIL FROM:<sender@client.test>", 250)
        for i in range(2):
            c.expect(f"RCPT TO:<b{i}@example.com>", 250)
        for i in range(2):
            lines = c.expect(f"RCPT TO:<c{i}@example.com>", 452, "4.7.1")
            assert lines[-1] == "4.7.1 Slow down please"
    finally:
        quit_close(c)
    # the same IP on a new connection: still over its hourly budget
    c2 = SourcedSMTP(gw.port, "127.0.0.4")
    other = SourcedSMTP(gw.port, "127.0.0.5")
    try:
        c2.ehlo()
        c2.expect("MAIL FROM:<sender@client.test>", 250)
        lines = c2.expect("RCPT TO:<d@example.com>", 452, "4.7.1")
        assert lines[-1] == "4.7.1 Slow down please"
        # another IP of the same group has its own budget
        other.ehlo()
        other.expect("MAIL FROM:<sender@client.test>", 250)
        other.expect("RCPT TO:<e@example.com>", 250, "2.1.5")
    finally:
        quit_close(c2)
        quit_close(other)
    first = session_log(gw, "127.0.0.4")
    second = session_log(gw, "127.0.0.4", start=first["end"])
    for s in (first, second):
        assert count(gw, rf"ICID {s['icid']} Receiving Failed: rate limit of 5 recipients per "
                         r"hour exceeded \(policy THROTTLED, address 127\.0\.0\.4\)$") == 1


def test_throttled_size(make_gateway, dns_server):
    gw = throttled_gateway(make_gateway, dns_server)
    c = SourcedSMTP(gw.port, "127.0.0.6")
    try:
        assert "SIZE 10240" in c.ehlo()
        c.expect("MAIL FROM:<sender@client.test> SIZE=20000", 552, "5.3.4")
        c.expect("MAIL FROM:<sender@client.test> SIZE=20000", 552, "5.3.4")
        c.expect("MAIL FROM:<sender@client.test> SIZE=5000", 250, "2.1.0")
        c.expect("RCPT TO:<user@example.com>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 200 + b".\r\n")
        code, lines = c.reply()
        assert code == 552 and lines[-1].startswith("5.3.4"), (code, lines)
    finally:
        quit_close(c)
    s = session_log(gw, "127.0.0.6")
    n = count(gw, rf"ICID {s['icid']} Receiving Failed: .*size.*\(policy THROTTLED, "
                  r"address 127\.0\.0\.6\)$")
    assert n == 1, f"size limit logged {n} times (want once per session):\n{gw.log()[-3000:]}"


def test_throttled_concurrency_per_ip(make_gateway, dns_server):
    gw = throttled_gateway(make_gateway, dns_server)
    held = [SourcedSMTP(gw.port, "127.0.0.7") for _ in range(2)]
    extra = other = again = None
    try:
        assert all(h.banner[0] == 220 for h in held)
        extra = SourcedSMTP(gw.port, "127.0.0.7")
        assert extra.banner[0] == 421 and extra.banner[1][-1].startswith("4.7.0 "), extra.banner
        assert extra.closed()
        other = SourcedSMTP(gw.port, "127.0.0.8")     # another IP is fine
        assert other.banner[0] == 220
        other.ehlo()
        quit_close(held.pop())
        # the freed slot can be used again
        deadline = time.time() + 5
        while True:
            again = SourcedSMTP(gw.port, "127.0.0.7")
            if again.banner[0] == 220 or time.time() > deadline:
                break
            again.close()
            time.sleep(0.1)
        assert again.banner[0] == 220, again.banner
    finally:
        for c in held + [x for x in (extra, other, again) if x]:
            quit_close(c)
    assert count(gw, r"Receiving Failed: Connection limit exceeded: 2 concurrent connections "
                     r"\(policy THROTTLED, address 127\.0\.0\.7\)$") == 1
