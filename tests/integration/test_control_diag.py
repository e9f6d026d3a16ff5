"""Diagnostic operator commands: `trace` (the connection decision without a
connection) against what real connections from the same addresses get,
`status detail` (Rates, system Gauges; --json), and the periodic "Status:"
line of mail_logs (logging.status_interval shortened for the test).
"""
import json
import re
import socket
import time

from conftest import (RawSMTP, SourcedSMTP, make_content, policy_gateway, ptr_owner,
                      session_log)
from test_control import ctl, ctl_json

SHOW = {"name": "SHOW", "access": "accept", "banner_text": "group=$Group ip=$RemoteIP"}


def named(ip, name, forward):
    return {ptr_owner(ip): {"PTR": [name]}, name: {"A": [forward]}}


def connect_from(gw, ip):
    c = SourcedSMTP(gw.port, ip)
    try:
        return c.banner
    finally:
        try:
            c.cmd("QUIT")
        except (OSError, ConnectionError):
            pass
        c.close()


def test_trace_matches_real_connections(make_gateway, dns_server):
    names = named("127.0.0.30", "exact.client.test", "127.0.0.30")
    dns = dns_server({"names": names})
    gw = policy_gateway(
        make_gateway, dns.port,
        sender_groups=[
            {"name": "EXACT", "policy": "SHOW", "members": ["exact.client.test"]},
            {"name": "BLOCKED_NET", "policy": "LATE", "members": ["127.0.0.40/30"]},
            {"name": "RELAYERS", "policy": "RELAYED", "members": ["127.0.0.50"]},
        ],
        policies=[SHOW, {"name": "LATE", "access": "reject", "reject_at_rcpt": True},
                  {"name": "ACCEPTED", "banner_text": "group=$Group"}],
        hat=["EXACT", "BLOCKED_NET", "RELAYERS"])
    cases = [("127.0.0.30", "EXACT", "exact.client.test", "SHOW", "ACCEPT"),
             ("127.0.0.41", "BLOCKED_NET", "127.0.0.40/30", "LATE", "REJECT"),
             ("127.0.0.50", "RELAYERS", "127.0.0.50", "RELAYED", "RELAY"),
             ("127.0.0.60", "ALL", "ALL", "ACCEPTED", "ACCEPT")]
    for ip, group, member, policy, access in cases:
        banner = connect_from(gw, ip)
        s = session_log(gw, ip)
        t = ctl_json(gw, "trace", ip, "someone@remote.test", "user@elsewhere.test")
        d = t["decision"]
        assert (d["group"], d["member"], d["policy"], d["access"]) == \
            (group, member, policy, access), (ip, t)
        assert s["decision"].endswith(
            f"{access} SG {group} match {member} SBRS {t['lookups']['reputation']['sbrs']}"), \
            (s["decision"], t)
        # the banner a real client saw is the one trace predicts
        assert t["params"]["banner"] == f"{banner[0]} {banner[1][0]}", (ip, banner, t)
        rcpt = t["envelope"]["recipient"]
        assert rcpt["accepted"] == (access == "RELAY"), (ip, rcpt)
    t = ctl_json(gw, "trace", "127.0.0.30", "a@b.test", "x@example.com")
    assert t["lookups"]["ptr"]["name"] == "exact.client.test"
    assert t["lookups"]["ptr"]["verified"] is True
    assert t["lookups"]["reputation"]["sbrs"] == "rfc1918"
    assert t["envelope"]["recipient"]["accepted"] is True
    assert t["envelope"]["sender"]["accepted"] is True
    assert t["params"]["banner"] == "220 mx.gw.test group=EXACT ip=127.0.0.30"
    # delayed rejection: connects, but the recipient is refused
    t = ctl_json(gw, "trace", "127.0.0.42", "<>", "x@example.com")
    assert t["envelope"]["sender"]["accepted"] is True
    assert t["envelope"]["recipient"]["accepted"] is False
    assert "delayed rejection" in t["envelope"]["recipient"]["reason"]
    # a real RCPT from that address is refused the same way
    c = SourcedSMTP(gw.port, "127.0.0.42")
    c.ehlo()
    c.expect("MAIL FROM:<>", 250)
    code, _ = c.cmd("RCPT TO:<x@example.com>")
    assert code == 554
    c.close()
    # the text form
    out = ctl(gw, "trace", "127.0.0.30", "a@b.test", "x@example.com").stdout
    for label in ("PTR: ok exact.client.test", "Forward lookup: verified",
                  "Reputation (SBRS): rfc1918", "Sender group: EXACT (match exact.client.test)",
                  "Policy: SHOW", "Access rule: ACCEPT", "Max message size:", "Banner:",
                  "TLS:", "Recipient <x@example.com>: accepted"):
        assert label in out, out
    # errors
    p = ctl(gw, "trace", "not-an-ip", ok=False)
    assert p.returncode == 1 and "IPv4 or IPv6" in p.stderr + p.stdout
    p = ctl(gw, "trace", "127.0.0.1", "--listener", "nope", ok=False)
    assert p.returncode == 1 and "no listener" in p.stderr + p.stdout


def test_trace_relay_domains_default_config(gateway):
    t = ctl_json(gateway, "trace", "127.0.0.1", "a@b.test", "user@example.com")
    assert t["decision"]["group"] == "WHITELIST"
    assert t["envelope"]["recipient"]["accepted"] is True
    t = ctl_json(gateway, "trace", "127.0.0.1", "a@b.test", "user@foreign.test")
    assert t["envelope"]["recipient"]["accepted"] is False
    assert "Relay access denied" in t["envelope"]["recipient"]["reason"]
    t = ctl_json(gateway, "trace", "127.0.0.1", "a@b.test", "user@x.sub.example.net")
    assert t["envelope"]["recipient"]["accepted"] is True


def test_status_detail_and_status_line(make_gateway):
    gw = make_gateway({"logging": {"status_interval": "1s"}})
    r = ctl_json(gw, "status", "detail")
    assert set(r["rates"]) >= {"messages_received", "recipients_received", "delivered",
                               "soft_bounced", "hard_bounced"}
    assert r["rates"]["messages_received"] == {"1m": 0, "5m": 0, "15m": 0}
    sysg = r["system"]
    assert sysg["rss_kb"] > 1000
    assert 0 < sysg["ram_pct"] < 100
    assert sysg["cpu_pct"] >= 0
    names = [t["name"] for t in sysg["cpu_threads"]]
    assert "main loop" in names and "spool-worker" in names, names
    assert sysg["queue_kb_free"] > 0 and sysg["queue_kb_used"] > 0
    assert sysg["resource_conservation"] == 0
    assert "gauges" in r and "counters" in r
    # plain status has no detail sections
    assert "rates" not in ctl_json(gw, "status")
    c = RawSMTP(gw.port)
    for _ in range(2):
        code, _ = c.message("a@b.test", ["x@example.com", "y@example.com"], make_content())
        assert code == 250
    c.cmd("QUIT")
    c.close()
    r = ctl_json(gw, "status", "detail")
    assert r["rates"]["messages_received"]["1m"] == 120
    assert r["rates"]["messages_received"]["15m"] == 8
    assert r["rates"]["recipients_received"]["1m"] == 240
    out = ctl(gw, "status", "detail").stdout
    for label in ("Rates (Events Per Hour):", "RAM Utilization", "CPU Utilization (Total)",
                  "main loop", "spool-worker", "Disk I/O", "Resource Conservation",
                  "Kilobytes Used", "Kilobytes Free"):
        assert label in out, out
    assert re.search(r"Messages Received\s+120\s+24\s+8\s*$", out, re.M), out
    # the status line, every second here
    m = gw.wait_log(r"Info: Status: CPULd \d+ .*InjMsg 2 InjRcp 4 .*WorkQ 0$", timeout=10)
    line = m.group(0)
    for key in ("CPULd", "DskIO", "RAMUtil", "QKUsd", "QKFre", "CrtMID", "CrtICID", "CrtDCID",
                "InjMsg", "InjRcp", "ActvRcp", "CrtCncIn", "CrtCncOut", "ResCon", "WorkQ"):
        assert re.search(rf" {key} \d+", line), (key, line)
    n = len(re.findall(r"Status: CPULd", gw.log()))
    time.sleep(2.5)
    assert len(re.findall(r"Status: CPULd", gw.log())) >= n + 1


# ---- smtpping ------------------------------------------------------------------

def test_smtpping_normal_peer_by_name(make_gateway, smtp_peer, dns_server):
    peer = smtp_peer(rcpt_reply="250 2.1.5 postmaster ok")
    dns = dns_server({"names": {"peer.test": {"A": ["127.0.0.1"]}}})
    gw = make_gateway({"resolver": {"servers": [f"127.0.0.1:{dns.port}"], "timeout": "2s",
                                    "attempts": 1}})
    r = ctl_json(gw, "smtpping", f"peer.test:{peer.port}")
    assert r["error"] is None, r
    assert [a["type"] for a in r["dns"]] == ["A", "AAAA"] or \
        sorted(a["type"] for a in r["dns"]) == ["A", "AAAA"], r
    assert r["address"] == "127.0.0.1"
    assert r["banner"].startswith("peer.test ESMTP"), r
    assert r["banner_ms"] >= 0 and r["connect_ms"] >= 0
    assert "PIPELINING" in r["ehlo"]
    assert r["starttls_offered"] is False and r["tls"] is None
    assert r["mail"].startswith("250") and r["rcpt"] == "250 2.1.5 postmaster ok"
    assert r["rcpt_to"] == "postmaster@peer.test"
    assert r["firewall"] is None
    # never DATA: the peer saw no message
    time.sleep(0.3)
    assert peer.messages() == []
    out = ctl(gw, "smtpping", f"peer.test:{peer.port}").stdout
    for label in ("DNS A peer.test: OK", "Connect time:", "Banner delay:", "Banner: peer.test",
                  "EHLO: ", "STARTTLS: not offered", "MAIL FROM:<>: 250",
                  "RCPT TO:<postmaster@peer.test>: 250", "no DATA"):
        assert label in out, out


def test_smtpping_masked_banner_flags_firewall(gateway, smtp_peer):
    peer = smtp_peer(banner="220 ****2***0**", ehlo="PIPELINING,XXXXXXXA,8BITMIME")
    r = ctl_json(gateway, "smtpping", f"127.0.0.1:{peer.port}")
    assert r["masked_banner"] is True and r["masked_ehlo"] is True, r
    assert "firewall" in r["firewall"] and "ASA" in r["firewall"]
    assert r["rcpt_to"] == "postmaster"
    out = ctl(gateway, "smtpping", f"127.0.0.1:{peer.port}").stdout
    assert "likely an SMTP-inspecting firewall" in out, out
    # an unreachable port is reported, not fatal
    # (a port bound but not listening: refused, whatever else runs here)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        r = ctl_json(gateway, "smtpping", f"127.0.0.1:{s.getsockname()[1]}")
    assert r["error"].startswith("connect"), r


def test_smtpping_starttls(gateway, smtp_peer, tls_cert):
    cert, key = tls_cert
    peer = smtp_peer(starttls=True, cert=cert, key=key)
    # longer than smtpping's own timeouts (10 s connect, 30 s per reply), so
    # a stalled peer shows as smtpping's error, not as a posternctl timeout
    r = json.loads(ctl(gateway, "--json", "smtpping", f"127.0.0.1:{peer.port}",
                       timeout=60).stdout)
    assert r["error"] is None, json.dumps(r)
    assert r["starttls_offered"] is True
    assert r["tls"]["version"].startswith("TLS"), r
    assert r["tls"]["cipher"]
    assert r["rcpt"].startswith("250")
    assert peer.messages() == []
