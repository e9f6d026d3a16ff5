"""Connection policy: the pre-banner DNS lookups (gateway-behaviour.md §1).

Why a banner is late (seed 004: PTR, forward and reputation lookups happen
between the connect and the banner), and that one slow host never delays
another: timing of banners under slow PTR answers, the connection_dns
deadline, the "lost before any commands" log line of a client that gives
up, pregreet, the PTR outcomes (verified, unverified, missing, temporary
failure) and the reputation score (SBRS) from weighted DNS lists, None when
no list answers, and the resolver cache.

Clients act as different hosts by connecting from 127.0.0.x; their PTR
records live in the test DNS server the gateway's resolver points at.
"""
import re
import time

from conftest import (SourcedSMTP, dnsbl_owner, policy_gateway, ptr_owner, session_log)


def quit_close(c):
    try:
        c.cmd("QUIT")
    finally:
        c.close()


def dns_ms(line):
    """(total, ptr, forward, reputation) ms of a "DNS lookups took" line."""
    m = re.search(r"DNS lookups took (\d+) ms: PTR (\d+) ms, forward (\d+) ms, "
                  r"reputation (\d+) ms", line)
    assert m, line
    return tuple(int(x) for x in m.groups())


# ---- banner timing ------------------------------------------------------------

def test_slow_ptr_delays_only_its_own_banner(make_gateway, dns_server):
    dns = dns_server({"names": {
        ptr_owner("127.0.0.2"): {"PTR": ["slow.client.test"], "delay_ms": 3000},
        "slow.client.test": {"A": ["127.0.0.2"]},
        ptr_owner("127.0.0.3"): {"PTR": ["fast.client.test"]},
        "fast.client.test": {"A": ["127.0.0.3"]},
    }})
    # resolver timeout above the delay, default deadline (10 s): the slow
    # answer is waited for
    gw = policy_gateway(make_gateway, dns.port, timeout="5s")
    slow = SourcedSMTP(gw.port, "127.0.0.2", banner=False)
    fast = None
    try:
        time.sleep(0.2)  # the slow PTR query is out
        fast = SourcedSMTP(gw.port, "127.0.0.3")
        assert fast.banner[0] == 220
        fast.ehlo()  # served while the other one still waits
        code, _ = slow.read_banner()
        assert code == 220
        # ordering, not absolute timing: the host connecting later got its
        # banner first
        assert fast.t_banner < slow.t_banner
        waited = slow.t_banner - slow.t_connect
        assert waited >= 2.5, f"banner after {waited:.2f} s, PTR answer takes 3 s"
        slow.ehlo()
    finally:
        quit_close(slow)
        if fast:
            quit_close(fast)
    s = session_log(gw, "127.0.0.2")
    assert "reverse dns host slow.client.test verified yes" in s["new"]
    total, ptr, fwd, rep = dns_ms(s["dns"])
    assert ptr >= 2500 and total >= ptr, s["dns"]
    f = session_log(gw, "127.0.0.3")
    assert "reverse dns host fast.client.test verified yes" in f["new"]
    assert dns_ms(f["dns"])[0] < 2500, f["dns"]


def test_deadline_ends_the_wait_with_ptr_tempfail(make_gateway, dns_server):
    dns = dns_server({"names": {
        ptr_owner("127.0.0.2"): {"PTR": ["slow.client.test"], "delay_ms": 3000},
        "slow.client.test": {"A": ["127.0.0.2"]},
    }})
    gw = policy_gateway(make_gateway, dns.port, timeout="5s", deadline="1s", sender_groups=[
        {"name": "SUSPECTLIST", "members": [], "ptr_tempfail": True}])
    c = SourcedSMTP(gw.port, "127.0.0.2")
    try:
        waited = c.t_banner - c.t_connect
        assert c.banner[0] == 220
        assert 0.8 <= waited < 2.5, f"banner after {waited:.2f} s with a 1 s deadline"
    finally:
        quit_close(c)
    s = session_log(gw, "127.0.0.2")
    assert "reverse dns host unknown verified no" in s["new"]
    assert "ACCEPT SG SUSPECTLIST match PTR lookup failed temporarily" in s["decision"]
    total, ptr, _, _ = dns_ms(s["dns"])
    assert 900 <= total < 2500, s["dns"]


def test_client_gone_before_banner_is_logged_with_dns_share(make_gateway, dns_server):
    dns = dns_server({"names": {
        ptr_owner("127.0.0.2"): {"PTR": ["slow.client.test"], "delay_ms": 3000},
        "slow.client.test": {"A": ["127.0.0.2"]},
    }})
    gw = policy_gateway(make_gateway, dns.port, timeout="5s")
    t0 = time.monotonic()
    c = SourcedSMTP(gw.port, "127.0.0.2", banner=False)
    time.sleep(0.5)
    c.close()
    m = gw.wait_log(r"ICID (\d+) Connection from 127\.0\.0\.2 on interface InboundMail "
                    r"\(127\.0\.0\.1\) lost after ([\d.]+) seconds \(DNS query took ([\d.]+) "
                    r"seconds\), before any commands were received", timeout=5)
    icid, total, dns_s = m.group(1), float(m.group(2)), float(m.group(3))
    assert 0.4 <= total <= 2.0, m.group(0)
    assert dns_s == total, "before the banner, all of the wait was DNS"
    # the lookup was cancelled: when the PTR answer comes, nothing is decided
    # for the dead session (and ASan, checked at stop, sees no use after free)
    time.sleep(max(0.0, 3.3 - (time.monotonic() - t0)))
    c2 = SourcedSMTP(gw.port, "127.0.0.3")
    quit_close(c2)
    session_log(gw, "127.0.0.3")
    assert not re.search(rf"ICID {icid} (ACCEPT|REJECT|RELAY|TCPREFUSE) ", gw.log())
    assert not re.search(r"New SMTP ICID \d+ .* address 127\.0\.0\.2 ", gw.log())


def test_pregreet_is_refused(make_gateway, dns_server):
    dns = dns_server({"names": {
        ptr_owner("127.0.0.2"): {"PTR": ["eager.client.test"], "delay_ms": 500},
        ptr_owner("127.0.0.3"): {"PTR": ["patient.client.test"], "delay_ms": 500},
    }})
    gw = policy_gateway(make_gateway, dns.port)
    eager = SourcedSMTP(gw.port, "127.0.0.2", banner=False)
    try:
        eager.send("EHLO eager.client.test\r\n")
        code, lines = eager.reply()
        assert code == 554, lines
        assert lines[-1].startswith("5.5.1 ") and "Protocol error" in lines[-1], lines
        assert eager.closed(), "the connection stays open after a pregreet"
    finally:
        eager.close()
    s = session_log(gw, "127.0.0.2")
    gw.wait_log(rf"ICID {s['icid']} pregreet")
    # a client that waits for the banner is served normally
    patient = SourcedSMTP(gw.port, "127.0.0.3")
    try:
        assert patient.banner[0] == 220
        patient.ehlo()
    finally:
        quit_close(patient)
    p = session_log(gw, "127.0.0.3")
    assert not re.search(rf"ICID {p['icid']} pregreet", gw.log())


# ---- PTR outcomes -------------------------------------------------------------

PTR_ZONE = {"names": {
    ptr_owner("127.0.0.2"): {"PTR": ["verified.client.test"]},
    "verified.client.test": {"A": ["127.0.0.2"]},
    ptr_owner("127.0.0.3"): {"PTR": ["liar.client.test"]},
    "liar.client.test": {"A": ["192.0.2.1"]},
    # 127.0.0.4: no PTR at all (NXDOMAIN)
    ptr_owner("127.0.0.5"): {"rcode": "SERVFAIL"},
}}


def test_ptr_outcomes_logged_matched_and_shown(make_gateway, dns_server):
    dns = dns_server(PTR_ZONE)
    show = "host=$Hostname group=$Group ip=$RemoteIP"
    gw = policy_gateway(
        make_gateway, dns.port,
        sender_groups=[
            {"name": "VERIFIED", "policy": "SHOW", "members": ["verified.client.test"]},
            {"name": "MISMATCH", "policy": "SHOW", "members": [], "ptr_mismatch": True},
            {"name": "MISSING", "policy": "SHOW", "members": [], "ptr_missing": True},
            {"name": "TEMPFAIL", "policy": "SHOW", "members": [], "ptr_tempfail": True},
        ],
        policies=[{"name": "SHOW", "access": "accept", "banner_text": show}],
        hat=["VERIFIED", "MISMATCH", "MISSING", "TEMPFAIL"])
    cases = [
        ("127.0.0.2", "verified.client.test verified yes", "VERIFIED",
         "verified.client.test", "verified.client.test"),
        ("127.0.0.3", "liar.client.test verified no", "MISMATCH",
         "PTR does not match forward lookup", "None"),
        ("127.0.0.4", "unknown verified no", "MISSING", "PTR missing", "Unknown"),
        ("127.0.0.5", "unknown verified no", "TEMPFAIL", "PTR lookup failed temporarily",
         "Unknown"),
    ]
    for ip, rdns, group, member, shown in cases:
        c = SourcedSMTP(gw.port, ip)
        try:
            assert c.banner == (220, [f"mx.gw.test host={shown} group={group} ip={ip}"]), \
                (ip, c.banner)
        finally:
            quit_close(c)
        s = session_log(gw, ip)
        assert s["new"].endswith(f"address {ip} reverse dns host {rdns}"), s["new"]
        assert s["decision"].endswith(f"ACCEPT SG {group} match {member} SBRS rfc1918"), \
            s["decision"]
    # the unverified name was checked forward, the failed PTR never went further
    q = [tuple(x) for x in dns.queries()]
    assert ("liar.client.test", "A") in q
    assert not any(name.startswith("5.0.0.127.") and t != "PTR" for name, t in q)


# ---- reputation -----------------------------------------------------------------

REPUTATION = {
    "lists": [{"zone": "bl.test", "type": "block", "weight": -5.0},
              {"zone": "al.test", "type": "allow", "weight": 2.0}],
    "lookup_private": True,
}


def reputation_zone():
    names = {}

    def listed(ip, zone):
        names[dnsbl_owner(ip, zone)] = {"A": ["127.0.0.2"]}
    listed("127.0.0.2", "bl.test")       # -5 + 2 = -3.0
    listed("127.0.0.2", "al.test")
    # 127.0.0.3: in no list (NXDOMAIN): 0.0
    names[dnsbl_owner("127.0.0.4", "bl.test")] = {"drop": True}   # no list answers: None
    names[dnsbl_owner("127.0.0.4", "al.test")] = {"drop": True}
    listed("127.0.0.5", "dl.test")       # only in the weightless dnslist[] zone: 0.0
    listed("127.0.0.6", "bl.test")       # -5.0
    listed("127.0.0.7", "al.test")       # +2.0
    return {"names": names}


def test_sbrs_scores_none_and_dnslist_members(make_gateway, dns_server):
    dns = dns_server(reputation_zone())
    gw = policy_gateway(
        make_gateway, dns.port, timeout="500ms", deadline="3s", reputation=REPUTATION,
        sender_groups=[
            {"name": "LOW", "policy": "ACCEPTED", "members": ["SBRS[-10:-3]"]},
            {"name": "NOSCORE", "policy": "ACCEPTED", "members": ["SBRS[none]"]},
            {"name": "LISTED", "policy": "ACCEPTED", "members": ["dnslist[dl.test]"]},
            {"name": "GOOD", "policy": "ACCEPTED", "members": ["SBRS[1.5:10]"]},
        ],
        hat=["LOW", "NOSCORE", "LISTED", "GOOD"])
    cases = [
        ("127.0.0.2", "LOW", "SBRS[-10:-3]", "-3.0"),
        ("127.0.0.3", "ALL", "ALL", "0.0"),
        ("127.0.0.4", "NOSCORE", "SBRS[none]", "None"),
        ("127.0.0.5", "LISTED", "dnslist[dl.test]", "0.0"),
        ("127.0.0.6", "LOW", "SBRS[-10:-3]", "-5.0"),
        ("127.0.0.7", "GOOD", "SBRS[1.5:10]", "2.0"),
    ]
    for ip, group, member, sbrs in cases:
        c = SourcedSMTP(gw.port, ip)
        try:
            assert c.banner[0] == 220, (ip, c.banner)
        finally:
            quit_close(c)
        s = session_log(gw, ip)
        assert s["decision"].endswith(f"ACCEPT SG {group} match {member} SBRS {sbrs}"), \
            (ip, s["decision"])
    # every list and the dnslist[] zone were asked for each host
    q = [tuple(x) for x in dns.queries()]
    for zone in ("bl.test", "al.test", "dl.test"):
        assert (dnsbl_owner("127.0.0.3", zone), "A") in q, (zone, q)


def test_sbrs_cache_hit_on_second_connection(make_gateway, dns_server):
    dns = dns_server({"names": {
        ptr_owner("127.0.0.2"): {"PTR": ["cached.client.test"], "delay_ms": 300},
        "cached.client.test": {"A": ["127.0.0.2"], "delay_ms": 100},
        dnsbl_owner("127.0.0.2", "bl.test"): {"A": ["127.0.0.2"], "delay_ms": 300},
        dnsbl_owner("127.0.0.2", "al.test"): {"A": ["127.0.0.2"], "delay_ms": 300},
    }})
    gw = policy_gateway(make_gateway, dns.port, reputation=REPUTATION)
    firsts = []
    for _ in range(2):
        c = SourcedSMTP(gw.port, "127.0.0.2")
        firsts.append(c.t_banner - c.t_connect)
        assert c.banner[0] == 220
        quit_close(c)
    s1 = session_log(gw, "127.0.0.2")
    s2 = session_log(gw, "127.0.0.2", start=s1["end"])
    assert s1["icid"] != s2["icid"]
    for s in (s1, s2):
        assert "reverse dns host cached.client.test verified yes" in s["new"]
        assert s["decision"].endswith("SBRS -3.0"), s["decision"]
    assert dns_ms(s1["dns"])[0] >= 300, s1["dns"]
    assert dns_ms(s2["dns"])[0] < 100, f"second connection not from the cache: {s2['dns']}"
    assert firsts[1] < firsts[0]
    q = [tuple(x) for x in dns.queries()]
    for key in [(ptr_owner("127.0.0.2"), "PTR"), ("cached.client.test", "A"),
                (dnsbl_owner("127.0.0.2", "bl.test"), "A"),
                (dnsbl_owner("127.0.0.2", "al.test"), "A")]:
        assert q.count(key) == 1, (key, q)


def test_reload_while_lookups_are_pending(make_gateway, dns_server):
    """SIGHUP replaces the listener's compiled HAT while a session still
    waits for its PTR answer: the session is decided (by the table in force
    when the answer comes) and nothing is used after it was freed (ASan at
    stop). New connections get the new table."""
    dns = dns_server({"names": {
        ptr_owner("127.0.0.2"): {"PTR": ["slow.client.test"], "delay_ms": 1500},
        "slow.client.test": {"A": ["127.0.0.2"]},
    }})
    gw = policy_gateway(make_gateway, dns.port, timeout="5s",
                        sender_groups=[{"name": "WHITELIST", "members": ["127.0.0.2"]}])
    pending = SourcedSMTP(gw.port, "127.0.0.2", banner=False)
    try:
        time.sleep(0.3)
        gw.cfg["sender_groups"] = [{"name": "BLACKLIST", "members": ["127.0.0.2", "127.0.0.3"]}]
        gw.write_config()
        gw.hup()
        gw.wait_log(r"Configuration reloaded from")
        code, _ = pending.read_banner()
        assert code in (220, 554)
    finally:
        quit_close(pending)
    s = session_log(gw, "127.0.0.2")
    assert re.search(r"(ACCEPT SG WHITELIST|REJECT SG BLACKLIST) match 127\.0\.0\.2 ", s["decision"])
    c = SourcedSMTP(gw.port, "127.0.0.3")
    try:
        assert c.banner == (554, ["mx.gw.test Access denied"])
    finally:
        quit_close(c)
