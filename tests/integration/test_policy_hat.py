"""Connection policy: the host access table (docs/policy.md).

Each sender group member syntax against real connections from 127.0.0.x
(and ::1), host name members only for verified PTR names, first match wins
in hat order, CONTINUE rows skipped, banner variables, and HAT errors in the
configuration reported as FILE:LINE:COL.
"""
import os
import re
import socket
import subprocess

import pytest

from conftest import (POSTERND, SourcedSMTP, free_port, policy_gateway, ptr_owner, session_log)

SHOW = {"name": "SHOW", "access": "accept", "banner_text": "group=$Group"}


def quit_close(c):
    try:
        c.cmd("QUIT")
    finally:
        c.close()


def banner_from(gw, ip, port=None, host="127.0.0.1"):
    c = SourcedSMTP(port or gw.port, ip, host=host)
    try:
        return c.banner
    finally:
        quit_close(c)


def named(ip, name, forward):
    """Zone entries: PTR ip -> name, A name -> forward."""
    return {ptr_owner(ip): {"PTR": [name]}, name: {"A": [forward]}}


def test_member_syntaxes(make_gateway, dns_server):
    names = {}
    names.update(named("127.0.0.30", "exact.client.test", "127.0.0.30"))
    # same name, but its forward lookup does not contain .31: not verified
    names[ptr_owner("127.0.0.31")] = {"PTR": ["exact.client.test"]}
    names.update(named("127.0.0.32", "mx.suffix.test", "127.0.0.32"))
    names.update(named("127.0.0.33", "mx2.suffix.test", "192.0.2.9"))   # unverified
    names.update(named("127.0.0.34", "suffix.test", "127.0.0.34"))      # the suffix itself
    names.update(named("127.0.0.35", "a.b.suffix.test", "127.0.0.35"))  # deeper
    dns = dns_server({"names": names})
    groups = [
        ("ADDR", "127.0.0.2"),
        ("CIDR", "127.0.0.8/29"),
        ("RANGE", "127.0.0.20-22"),
        ("PARTIAL", "127.0.1."),
        ("FULLRANGE", "127.0.2.250-127.0.3.5"),
        ("EXACT", "exact.client.test"),
        ("SUFFIX", ".suffix.test"),
    ]
    gw = policy_gateway(
        make_gateway, dns.port,
        sender_groups=[{"name": g, "policy": "SHOW", "members": [m]} for g, m in groups],
        policies=[SHOW, {"name": "ACCEPTED", "banner_text": "group=$Group"}],
        hat=[g for g, _ in groups])
    member = dict(groups)
    cases = [
        ("127.0.0.2", "ADDR"), ("127.0.0.3", "ALL"),
        ("127.0.0.8", "CIDR"), ("127.0.0.15", "CIDR"), ("127.0.0.16", "ALL"),
        ("127.0.0.7", "ALL"),
        ("127.0.0.20", "RANGE"), ("127.0.0.22", "RANGE"), ("127.0.0.23", "ALL"),
        ("127.0.1.5", "PARTIAL"), ("127.0.1.255", "PARTIAL"),
        ("127.0.2.251", "FULLRANGE"), ("127.0.3.5", "FULLRANGE"), ("127.0.3.6", "ALL"),
        ("127.0.0.30", "EXACT"),
        ("127.0.0.31", "ALL"),      # unverified name must not match
        ("127.0.0.32", "SUFFIX"),
        ("127.0.0.33", "ALL"),      # unverified name must not match the suffix either
        ("127.0.0.34", "ALL"),      # ".suffix.test" is below suffix.test, not itself
        ("127.0.0.35", "SUFFIX"),
    ]
    for ip, group in cases:
        assert banner_from(gw, ip) == (220, [f"mx.gw.test group={group}"]), ip
        s = session_log(gw, ip)
        m = "ALL" if group == "ALL" else member[group]
        assert s["decision"].endswith(f"ACCEPT SG {group} match {m} SBRS rfc1918"), \
            (ip, s["decision"])
    assert "reverse dns host exact.client.test verified no" in session_log(gw, "127.0.0.31")["new"]
    assert "reverse dns host mx2.suffix.test verified no" in session_log(gw, "127.0.0.33")["new"]


def test_first_match_wins_in_hat_order_and_continue_is_skipped(make_gateway, dns_server):
    dns = dns_server({"names": {}})
    gw = policy_gateway(
        make_gateway, dns.port,
        # NARROW is defined first, but the hat puts BROAD first: hat order
        # decides, not specificity nor definition order
        sender_groups=[
            {"name": "NARROW", "policy": "SHOW", "members": ["127.0.0.40"]},
            {"name": "BROAD", "policy": "SHOW", "members": ["127.0.0.40/30"]},
            {"name": "SKIPME", "policy": "LOOK", "members": ["127.0.0.44", "127.0.0.45"]},
            {"name": "AFTER", "policy": "SHOW", "members": ["127.0.0.44"]},
        ],
        policies=[SHOW, {"name": "LOOK", "access": "continue", "banner_text": "never shown"},
                  {"name": "ACCEPTED", "banner_text": "group=$Group"}],
        hat=["SKIPME", "BROAD", "NARROW", "AFTER"])
    for ip, group, member in [("127.0.0.40", "BROAD", "127.0.0.40/30"),
                              ("127.0.0.41", "BROAD", "127.0.0.40/30"),
                              ("127.0.0.44", "AFTER", "127.0.0.44"),
                              ("127.0.0.45", "ALL", "ALL")]:
        assert banner_from(gw, ip) == (220, [f"mx.gw.test group={group}"]), ip
        s = session_log(gw, ip)
        assert s["decision"].endswith(f"ACCEPT SG {group} match {member} SBRS rfc1918"), \
            (ip, s["decision"])
    assert "SG SKIPME" not in gw.log()


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_members(make_gateway, dns_server):
    dns = dns_server({"names": {}})
    gw = make_gateway(None, start=False)
    from conftest import policy_overrides
    port6 = free_port()
    hat = ["V6", "ANY6"]
    gw.cfg.update(policy_overrides(
        dns.port,
        sender_groups=[{"name": "V6", "policy": "SHOW", "members": ["::1"]},
                       {"name": "ANY6", "policy": "SHOW", "members": ["::/0"]}],
        policies=[SHOW, {"name": "ACCEPTED", "banner_text": "group=$Group"}]))
    gw.cfg["listeners"] = [
        {"name": "InboundMail", "type": "public", "address": "127.0.0.1", "port": gw.port,
         "hostname": "mx.gw.test", "hat": hat},
        {"name": "Inbound6", "type": "public", "address": "::1", "port": port6,
         "hostname": "mx6.gw.test", "hat": hat},
    ]
    gw.write_config()
    gw.start()
    assert banner_from(gw, "::1", port=port6, host="::1") == (220, ["mx6.gw.test group=V6"])
    s = session_log(gw, "::1")
    assert "interface Inbound6 (::1)" in s["new"]
    assert s["decision"].endswith("ACCEPT SG V6 match ::1 SBRS rfc1918"), s["decision"]
    # an IPv4 client is matched against IPv4 members only: ::/0 is not for it
    assert banner_from(gw, "127.0.0.2") == (220, ["mx.gw.test group=ALL"])


def test_banner_variables(make_gateway, dns_server):
    dns = dns_server({"names": {
        ptr_owner("127.0.0.2"): {"PTR": ["named.client.test"]},
        "named.client.test": {"A": ["127.0.0.2"]},
    }})
    gw = policy_gateway(
        make_gateway, dns.port,
        sender_groups=[{"name": "WHITELIST", "members": ["127.0.0.2"]}],
        policies=[
            {"name": "TRUSTED", "banner_text": "Hello $Hostname of $Group at $RemoteIP",
             "banner_hostname": "shown.gw.test"},
            {"name": "ACCEPTED", "banner_code": 220,
             "banner_text": "[$hostname|$GROUP|$remoteip|$Other|$]"},
        ])
    c = SourcedSMTP(gw.port, "127.0.0.2")
    try:
        assert c.banner == (220, ["shown.gw.test Hello named.client.test of WHITELIST at "
                                  "127.0.0.2"])
        lines = c.ehlo()
        assert lines[0] == "shown.gw.test", "EHLO shows the policy's banner_hostname"
    finally:
        quit_close(c)
    # names are case-insensitive; unknown variables stay as written; no PTR
    # gives Unknown; the implicit row is ALL
    assert banner_from(gw, "127.0.0.3") == (220, ["mx.gw.test [Unknown|ALL|127.0.0.3|$Other|$]"])


def test_reject_text_variables(make_gateway, dns_server):
    """docs/policy.md: "banner_text (and the other texts) may hold" the
    variables: the reject banner and the delayed (RCPT) rejection too."""
    dns = dns_server({"names": {}})
    gw = policy_gateway(
        make_gateway, dns.port,
        sender_groups=[{"name": "BLACKLIST", "members": ["127.0.0.2"]},
                       {"name": "LATE", "policy": "LATE", "members": ["127.0.0.3"]}],
        policies=[{"name": "BLOCKED", "reject_text": "No mail from $RemoteIP ($Group)"},
                  {"name": "LATE", "access": "reject", "reject_at_rcpt": True,
                   "reject_text": "Refused for $RemoteIP"}],
        hat=["BLACKLIST", "LATE"])
    reject_banner = banner_from(gw, "127.0.0.2")
    c = SourcedSMTP(gw.port, "127.0.0.3")
    try:
        c.ehlo()
        c.expect("MAIL FROM:<a@client.test>", 250)
        rcpt = c.cmd("RCPT TO:<user@example.com>")
    finally:
        quit_close(c)
    assert (reject_banner, rcpt) == (
        (554, ["mx.gw.test No mail from 127.0.0.2 (BLACKLIST)"]),
        (554, ["5.7.1 Refused for 127.0.0.3"]))


# ---- configuration errors ----------------------------------------------------

BAD_CONFIGS = {
    "unknown_group_in_hat": ("""\
listeners:
  - name: InboundMail
    port: {port}
    hat: [WHITELIST, NOSUCHGROUP]
""", "NOSUCHGROUP", "NOSUCHGROUP"),
    "bad_member": ("""\
sender_groups:
  - name: WHITELIST
    members:
      - 127.0.0.1
      - "10.1.1"
""", '"10.1.1"', "10.1.1"),
    "bad_cidr_member": ("""\
sender_groups:
  - name: SUSPECTLIST
    members: [127.0.0.0/8, 10.1.1.5/24]
""", "10.1.1.5/24", "10.1.1.5/24"),
    "unknown_policy": ("""\
sender_groups:
  - name: MYGROUP
    policy: NOSUCHPOLICY
    members: [127.0.0.2]
""", "NOSUCHPOLICY", "NOSUCHPOLICY"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_hat_configuration_errors_have_line_and_column(tmp_path, case):
    body, token, quoted = BAD_CONFIGS[case]
    head = (f"hostname: gw.test\npaths:\n  spool: {tmp_path}/spool\n  logs: {tmp_path}/log\n")
    text = head + body.format(port=free_port())
    path = str(tmp_path / "bad.yaml")
    with open(path, "w") as f:
        f.write(text)
    line_no = col = None
    for i, line in enumerate(text.splitlines(), 1):
        if token in line:
            line_no, col = i, line.index(token) + 1
    r = subprocess.run([POSTERND, "-n", "-c", path], capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    m = re.search(re.escape(path) + r":(\d+):(\d+): (.*)", out)
    assert m, f"no FILE:LINE:COL in {out!r}"
    assert (int(m.group(1)), int(m.group(2))) == (line_no, col), out
    assert quoted in m.group(3), out
    assert not os.path.exists(tmp_path / "spool" / "queue.db")
