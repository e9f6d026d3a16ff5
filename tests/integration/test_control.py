"""The operator control socket and posternctl against a running posternd:
status counters after mail, resetcounters (and its confirmation), tophosts
order per sort key with the '*' marker of a down host, hoststatus counters
after deliveries, deferrals and bounces, "No record of host", delivernow,
--json carrying the same numbers as the text, the peer-credential check,
nslookup/dig through the daemon's resolver, tail, and the raw protocol.

posternctl is the one built next to $POSTERND. Unless a test needs an
absolute socket path, the daemon uses the default paths.control
(./var/run/postern.sock, relative to its directory) and posternctl runs in
that directory with -s var/run/postern.sock: short enough for sun_path
whatever pytest's temporary directory is called.
"""
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import (POSTERND, RawSMTP, delivery_overrides, free_port, make_content, route,
                      send_message)

CTL = os.path.join(os.path.dirname(POSTERND), "posternctl")
SOCK = "var/run/postern.sock"
SAN_MARKERS = ("Sanitizer", "runtime error:")


def ctl(gw, *args, sock=SOCK, ok=True, prefix=(), timeout=30):
    """Run posternctl for gw; returns the CompletedProcess (text)."""
    p = subprocess.run(list(prefix) + [CTL, "-s", sock] + list(args), cwd=gw.dir,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    for m in SAN_MARKERS:
        assert m not in p.stderr, p.stderr
    if ok:
        assert p.returncode == 0, f"posternctl {args}: rc {p.returncode}\n{p.stdout}{p.stderr}"
    return p


def ctl_json(gw, *args):
    return json.loads(ctl(gw, "--json", *args).stdout)


def num(s):
    return int(s.replace(",", ""))


def row(text, label, ncols=1):
    """The numbers after a row label of the text output."""
    m = re.search(re.escape(label) + r"\s+" + r"\s+".join([r"([\d,]+)"] * ncols) + r"\s*$",
                  text, re.M)
    assert m, f"no row {label!r} in:\n{text}"
    vals = [num(v) for v in m.groups()]
    return vals if ncols > 1 else vals[0]


def wait_until(pred, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def host_json(gw, host):
    return ctl_json(gw, "hoststatus", host)


# ---- status and resetcounters ----------------------------------------------------

def test_status_counts_mail_and_json_matches_text(make_gateway, smtp_peer):
    peer = smtp_peer("sink")
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", peer.port))]))
    send_message(gw, "", ["a@example.com", "b@example.com"], make_content("one"))
    send_message(gw, "", ["c@example.com"], make_content("two"))
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<s@example.org>", 250)
    code, _ = c.cmd("RCPT TO:<x@not-relayed.invalid>")
    assert code >= 500
    c.cmd("QUIT")
    c.close()
    peer.wait_messages(2)
    wait_until(lambda: ctl_json(gw, "status")["counters"]["delivered"]["uptime"] == 3,
               what="3 delivered recipients")

    text = ctl(gw, "status").stdout
    assert row(text, "Messages Received", 3) == [2, 2, 2]
    assert row(text, "Recipients Received", 3) == [3, 3, 3]
    assert row(text, "Rejected Recipients", 3) == [1, 1, 1]
    assert row(text, "Delivered Recipients", 3) == [3, 3, 3]
    assert row(text, "Completed Recipients", 3) == [3, 3, 3]
    assert row(text, "Hard Bounced Recipients", 3) == [0, 0, 0]
    assert row(text, "Active Recipients") == 0
    assert row(text, "Destinations In Memory") == 1
    assert re.search(r"^Last counter reset:\s+Never$", text, re.M)
    assert "Lifetime = Uptime" not in text  # persisted: see the restart test

    js = ctl_json(gw, "status")
    cnt = js["counters"]
    assert cnt["messages_received"] == {"reset": 2, "uptime": 2, "lifetime": 2}
    assert cnt["recipients_received"]["uptime"] == row(text, "Recipients Received", 3)[1]
    assert cnt["rejected_recipients"]["uptime"] == 1
    assert js["current_ids"]["mid"] == row(text, "Message ID (MID)") >= 2
    assert js["current_ids"]["icid"] == row(text, "Injection Conn. ID (ICID)") >= 3
    assert js["current_ids"]["dcid"] == row(text, "Delivery Conn. ID (DCID)") >= 1
    assert js["gauges"]["destinations"] == 1
    assert js["last_reset"] is None

    # resetcounters: refused on a non-terminal without --yes, nothing changes
    p = ctl(gw, "resetcounters", ok=False)
    assert p.returncode == 2
    assert "refusing without --yes" in p.stderr
    assert ctl_json(gw, "status")["last_reset"] is None

    assert "Counters reset." in ctl(gw, "--yes", "resetcounters").stdout
    gw.wait_log(r"Control: resetcounters \{\} by uid \d+ pid \d+")
    send_message(gw, "", ["d@example.com"], make_content("three"))
    peer.wait_messages(3)
    wait_until(lambda: ctl_json(gw, "status")["counters"]["delivered"]["uptime"] == 4,
               what="4 delivered")
    text = ctl(gw, "status").stdout
    assert row(text, "Messages Received", 3) == [1, 3, 3]
    assert row(text, "Delivered Recipients", 3) == [1, 4, 4]
    assert not re.search(r"^Last counter reset:\s+Never$", text, re.M)
    # host counters count from the reset too
    assert host_json(gw, "example.com")["counters"]["delivered"] == 1


# ---- tophosts -------------------------------------------------------------------

def test_tophosts_order_per_key_and_down_marker(make_gateway, smtp_peer):
    good = smtp_peer("good")
    bad = smtp_peer("bad", rcpt_reply="550 5.1.1 no such user")
    closed = free_port()
    gw = make_gateway(delivery_overrides(
        [route("up.test", ("127.0.0.1", good.port)),
         route("bad.test", ("127.0.0.1", bad.port)),
         route("closed.test", ("127.0.0.1", closed))],
        profile={"initial_retry": "1h", "max_retry": "1h"}))
    send_message(gw, "", [f"u{i}@up.test" for i in range(3)], make_content("up"))
    send_message(gw, "", ["b1@bad.test", "b2@bad.test"], make_content("bad"))
    send_message(gw, "", ["c1@closed.test", "c2@closed.test"], make_content("closed"))
    good.wait_messages(1)
    wait_until(lambda: host_json(gw, "closed.test")["state"] == "down", what="closed.test down")
    wait_until(lambda: host_json(gw, "bad.test")["counters"]["hard_bounced"] == 2,
               what="bad.test bounces")
    wait_until(lambda: host_json(gw, "up.test")["counters"]["delivered"] == 3,
               what="up.test delivered")

    def order(key):
        js = ctl_json(gw, "tophosts", key)
        assert js["sort"] == key
        return [h["host"] for h in js["hosts"]]

    assert order("active_rcpts")[0] == "closed.test"
    assert order("deliv_rcpts")[0] == "up.test"
    assert order("hard_bounces")[0] == "bad.test"
    assert order("soft_bounces")[0] == "closed.test"
    assert order("conn_out") == sorted(order("conn_out")), "ties in name order"

    text = ctl(gw, "tophosts", "deliv_rcpts").stdout
    assert "Hosts marked with '*' were down as of the last delivery attempt." in text
    assert re.search(r"^\s*#\s+Recipient Host\s+Recip\.\s+Out\s+Recip\.\s+Bounced\s+Bounced$",
                     text, re.M)
    lines = [l for l in text.splitlines() if re.match(r"^\s*\d+\s", l)]
    assert re.match(r"^\s*1\s+ up\.test\s+0\s+0\s+3\s+0\s+0$", lines[0]), lines
    m = [l for l in lines if "closed.test" in l]
    assert m and re.search(r"\s\*closed\.test\s+2\s", m[0]), lines
    assert not any("*up.test" in l or "*bad.test" in l for l in lines)
    # default key is active_rcpts
    assert ctl_json(gw, "tophosts")["sort"] == "active_rcpts"
    p = ctl(gw, "tophosts", "nonsense", ok=False)
    assert p.returncode == 1 and "unknown sort key" in p.stderr


# ---- hoststatus ------------------------------------------------------------------

def test_hoststatus_counters_after_delivery_deferral_bounce(make_gateway, smtp_peer):
    peer = smtp_peer("mixed", rcpt_replies={
        "bad@example.com": "550 5.1.1 <bad@example.com>: no such user",
        "later@example.com": "451 4.3.0 try again later"})
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", peer.port))],
                                         profile={"initial_retry": "1h", "max_retry": "1h"}))
    send_message(gw, "", ["good@example.com", "bad@example.com", "later@example.com"],
                 make_content("mixed"))
    peer.wait_messages(1)
    wait_until(lambda: host_json(gw, "example.com")["counters"]["completed"] == 2
               and host_json(gw, "example.com")["counters"]["soft_bounced"] == 1,
               what="results")
    js = host_json(gw, "example.com")
    text = ctl(gw, "hoststatus", "example.com").stdout

    assert js["found"] and js["state"] == "up"
    c, g = js["counters"], js["gauges"]
    assert (c["delivered"], c["hard_5xx"], c["hard_bounced"], c["soft_bounced"]) == (1, 1, 1, 1)
    assert (g["active_rcpts"], g["attempted_rcpts"], g["unattempted_rcpts"]) == (1, 1, 0)
    assert "451 4.3.0 try again later" in js["last_4xx"]["text"]
    assert "550 5.1.1" in js["last_5xx"]["text"]
    assert js["ips"] == ["127.0.0.1"]
    assert js["route"]["domain"] == "example.com"
    assert js["route"]["hosts"] == [{"host": "127.0.0.1", "port": peer.port, "priority": 0}]

    assert text.startswith("Host mail status for: 'example.com'\n")
    assert re.search(r"^Host up/down:\s+up$", text, re.M)
    for label, key in [("Soft Bounced Events", "soft_bounced"), ("Completed Recipients", "completed"),
                       ("Hard Bounced Recipients", "hard_bounced"), ("DNS Hard Bounces", "hard_dns"),
                       ("5XX Hard Bounces", "hard_5xx"), ("Filter Hard Bounces", "hard_filter"),
                       ("Expired Hard Bounces", "hard_expired"),
                       ("Other Hard Bounces", "hard_other"),
                       ("Delivered Recipients", "delivered"), ("Deleted Recipients", "deleted")]:
        assert row(text, label) == c[key], label
    for label, key in [("Active Recipients", "active_rcpts"),
                       ("Unattempted Recipients", "unattempted_rcpts"),
                       ("Attempted Recipients", "attempted_rcpts"),
                       ("Current Outbound Connections", "conn_out"),
                       ("Pending Outbound Connections", "conn_pending")]:
        assert row(text, label) == g[key], label
    assert re.search(r"Last 4XX Error:\n\s+-+\n\s+451 4\.3\.0 try again later", text)
    assert re.search(r"Last 5XX Error:\n\s+-+\n\s+550 5\.1\.1", text)
    assert re.search(r"Ordered IP addresses:\n\s+127\.0\.0\.1\n", text)
    assert re.search(rf"SMTP Routes for this host:\n\s+Route: example\.com\n.*\n\s+127\.0\.0\.1\s+"
                     rf"{peer.port}\s+0\n", text)
    assert re.search(r"^Oldest Message\s+\w{3} \w{3}", text, re.M)

    # case and a trailing dot do not matter
    assert host_json(gw, "EXAMPLE.com.")["found"]


def test_hoststatus_no_record(gateway):
    p = ctl(gateway, "hoststatus", "nowhere.test")
    assert p.stdout == "Host mail status for: 'nowhere.test'\nNo record of host\n"
    js = ctl_json(gateway, "hoststatus", "nowhere.test")
    assert js["found"] is False and js["message"] == "No record of host"
    p = ctl(gateway, "hoststatus", ok=False)
    assert p.returncode == 2 and "missing argument" in p.stderr


# ---- delivernow -------------------------------------------------------------------

def test_delivernow_sends_deferred_message_when_peer_is_back(make_gateway, smtp_peer):
    port = free_port()
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", port))],
                                         profile={"initial_retry": "1h", "max_retry": "1h"}))
    mid = send_message(gw, "", ["r@example.com"], make_content("later"))
    gw.wait_log(rf"MID {mid} to \[0\] pending till")
    assert host_json(gw, "example.com")["state"] == "down"
    peer = smtp_peer("back", port=port)
    time.sleep(0.5)
    assert peer.messages() == [], "nothing before delivernow (retry is an hour away)"
    out = ctl(gw, "delivernow", "example.com").stdout
    assert "Rescheduled 1 waiting recipient(s) of example.com" in out
    [msg] = peer.wait_messages(1, timeout=10)
    assert msg["rcpts"] == ["r@example.com"]
    gw.wait_log(rf"Message finished MID {mid} done")
    gw.wait_log(r"Control: delivernow \{\"host\":\"example.com\"\} by uid")
    assert ctl_json(gw, "delivernow")["host"] == "all"
    p = ctl(gw, "delivernow", "nowhere.test", ok=False)
    assert p.returncode == 1 and "No record of host" in p.stderr


# ---- permissions ------------------------------------------------------------------

@pytest.fixture
def open_dir():
    """A directory every user can traverse (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="pctl-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_other_user_is_refused(make_gateway, open_dir):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as nobody")
    if not os.access(CTL, os.X_OK) or os.stat(os.path.dirname(CTL)).st_mode & 0o005 != 0o005:
        pytest.skip("posternctl is not reachable for nobody")
    sock = os.path.join(open_dir, "postern.sock")
    gw = make_gateway({"paths": {"control": sock}})
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

    # the socket's mode keeps nobody out ...
    p = ctl(gw, "status", sock=sock, prefix=nobody, ok=False)
    assert p.returncode == 3 and "Permission denied" in p.stderr
    # ... and so does the peer-credential check when the mode would not
    os.chmod(sock, 0o666)
    p = ctl(gw, "status", sock=sock, prefix=nobody, ok=False)
    assert p.returncode == 1
    assert "permission denied: not root, the daemon's user or its group" in p.stderr
    gw.wait_log(r"Warning: Control connection refused: uid 65534 gid 65534 pid \d+")
    # the daemon's group is enough, as primary group ...
    grp = ["setpriv", "--reuid=nobody", f"--regid={os.getegid()}", "--clear-groups"]
    assert "Messages Received" in ctl(gw, "status", sock=sock, prefix=grp).stdout
    # ... or as a supplementary one (SO_PEERGROUPS)
    sup = ["setpriv", "--reuid=nobody", "--regid=nogroup", f"--groups={os.getegid()}"]
    assert "Messages Received" in ctl(gw, "status", sock=sock, prefix=sup).stdout
    assert "Messages Received" in ctl(gw, "status", sock=sock).stdout


# ---- DNS through the daemon ---------------------------------------------------------

ZONE = {"names": {
    "host.test": {"ttl": 300, "A": ["192.0.2.1"], "AAAA": ["2001:db8::1"],
                  "MX": ["10 mx1.test", "20 mx2.test"], "TXT": ["v=spf1 -all"]},
    "1.2.0.192.in-addr.arpa": {"PTR": ["host.test"]},
}}


def test_nslookup_and_dig_use_the_daemon_resolver(make_gateway, dns_server):
    dns = dns_server(ZONE)
    gw = make_gateway(delivery_overrides(dns_port=dns.port))

    out = ctl(gw, "nslookup", "host.test").stdout
    assert "A=192.0.2.1 TTL=300s" in out
    assert "AAAA=2001:db8::1 TTL=300s" in out
    assert re.search(r"^Query time: A [\d.]+ ms, AAAA [\d.]+ ms", out, re.M)

    out = ctl(gw, "nslookup", "192.0.2.1").stdout
    assert re.search(r"^PTR=host\.test\. TTL=\d+s$", out, re.M)

    out = ctl(gw, "dig", "-t", "MX", "host.test").stdout
    assert ";; QUESTION SECTION:\n;host.test.\t\t\tIN\tMX" in out
    assert re.search(r"^host\.test\.\s+300\s+IN\s+MX\s+10 mx1\.test\.$", out, re.M)
    assert re.search(r"^host\.test\.\s+300\s+IN\s+MX\s+20 mx2\.test\.$", out, re.M)
    assert re.search(r"^;; Query time: [\d.]+ ms", out, re.M)
    assert ";; Status: OK" in out
    assert ["host.test", "MX"] in dns.queries()

    # the appliance's "dig mx NAME" word order, TXT, and a name that does not exist
    assert re.search(r"\tTXT\t\"v=spf1 -all\"$", ctl(gw, "dig", "txt", "host.test").stdout, re.M)
    assert ";; Status: NXDOMAIN" in ctl(gw, "dig", "nothere.test").stdout

    js = ctl_json(gw, "dig", "host.test")
    assert js["status"] == "OK" and js["type"] == "A"
    assert [r["data"] for r in js["records"]] == ["192.0.2.1"]
    assert js["records"][0]["ttl"] <= 300 and isinstance(js["elapsed_ms"], float)
    assert js["from_cache"] is True, "the A record came from the cache of nslookup"
    p = ctl(gw, "dig", "-t", "SRV", "host.test", ok=False)
    assert p.returncode == 1 and "unsupported record type" in p.stderr


def test_client_leaving_during_a_dns_query(make_gateway, dns_server):
    """The pending resolver query is cancelled; the daemon stays clean."""
    dns = dns_server({"names": {"slow.test": {"A": ["192.0.2.9"], "delay_ms": 700}}})
    gw = make_gateway(delivery_overrides(dns_port=dns.port))
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(gw.dir, SOCK))
    s.sendall(b'{"cmd":"dig","args":{"name":"slow.test"}}\n')
    s.close()
    time.sleep(1.0)
    out = ctl(gw, "dig", "slow.test").stdout
    assert "192.0.2.9" in out


# ---- tail, help, the raw protocol ------------------------------------------------------

def test_tail(gateway):
    send_message(gateway, "s@example.org", ["a@example.com"], make_content("tail"))
    gateway.wait_log(r"queued for delivery")
    lines = ctl(gateway, "tail", "5").stdout.splitlines()
    assert len(lines) == 5
    assert all(re.match(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} \w+: ", l) for l in lines)
    log = gateway.log().splitlines()
    assert lines[-1] in log[-3:]
    js = ctl_json(gateway, "tail")["lines"]
    log = gateway.log().splitlines()
    assert len(js) == min(20, len(log)) or len(js) == 20, "default 20 (or the whole log)"
    i = log.index(js[0])
    assert log[i:i + len(js)] == js, "consecutive lines of mail_logs"
    p = ctl(gateway, "tail", "x", ok=False)
    assert p.returncode == 2


def test_help_lists_every_command(gateway):
    out = ctl(gateway, "help").stdout
    for name in ("status", "resetcounters", "tophosts", "hoststatus", "delivernow",
                 "workqueue", "nslookup", "dig", "tail"):
        assert re.search(rf"^  {name}\s", out, re.M), name
        detail = ctl(gateway, "help", name).stdout
        assert detail.startswith(f"usage: posternctl {name}")
    assert "Destructive" in ctl(gateway, "help", "resetcounters").stdout
    assert ctl(gateway, "workqueue").stdout == "Status: Operational\nMessages: 0\n"
    p = ctl(gateway, "frobnicate", ok=False)
    assert p.returncode == 2


def raw(gw, data, nlines):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(os.path.join(gw.dir, SOCK))
        s.sendall(data)
        buf = b""
        while buf.count(b"\n") < nlines:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return [json.loads(l) for l in buf.decode().splitlines()]


def test_raw_protocol(gateway):
    # several requests in one write: answered in order
    out = raw(gateway, b'{"cmd":"workqueue"}\n{"cmd":"nope"}\nnot json\n'
                       b'{"cmd":"resetcounters"}\n{"cmd":"help","args":null}\n', 5)
    assert out[0] == {"ok": True, "result": {"status": "Operational", "messages": 0}}
    assert out[1]["ok"] is False and "unknown command 'nope'" in out[1]["error"]
    for name in ("status", "tophosts", "hoststatus", "delivernow", "dig", "tail"):
        assert name in out[1]["error"]
    assert out[2] == {"ok": False, "error": "malformed JSON request"}
    assert out[3]["ok"] is False and "destructive" in out[3]["error"]
    names = {c["name"]: c["destructive"] for c in out[4]["result"]["commands"]}
    assert names["resetcounters"] is True and names["status"] is False
    # an oversized request is refused and the connection closed
    out = raw(gateway, b"x" * (70 * 1024), 1)
    assert out == [{"ok": False, "error": "request too long"}]
    # the daemon still answers
    assert raw(gateway, b'{"cmd":"status","args":{}}\n', 1)[0]["ok"] is True


def test_stale_socket_removed_and_live_one_kept(make_gateway, tmp_path):
    gw = make_gateway(start=False)
    if len(os.path.join(gw.dir, SOCK)) >= 108:
        pytest.skip("temporary path too long for an absolute socket path")
    os.makedirs(os.path.join(gw.dir, "var", "run"))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(os.path.join(gw.dir, SOCK))
    stale.close()  # a socket file nobody listens on, as after a crash
    gw.start()
    assert ctl(gw, "workqueue").returncode == 0

    # a second daemon on the same socket refuses to start
    other = make_gateway({"paths": {"control": os.path.join(gw.dir, SOCK)}}, start=False)
    other.start(wait=False)
    rc = other.proc.wait(20)
    other.proc = None
    other.stderr.close()
    assert rc == 1
    assert "another daemon answers on" in other.stderr_text()
    other.check_sanitizers()
    assert ctl(gw, "workqueue").returncode == 0


def test_lifetime_counters_survive_restart(make_gateway):
    gw = make_gateway()
    c = RawSMTP(gw.port)
    code, _ = c.message("a@example.org", ["b@example.com"], b"Subject: life\r\n\r\nx\r\n")
    assert code == 250
    c.expect("QUIT", 221)
    first = ctl_json(gw, "status")["counters"]["messages_received"]
    assert (first["uptime"], first["lifetime"]) == (1, 1)
    gw.stop()
    gw.start()
    after = ctl_json(gw, "status")
    assert after["lifetime_persisted"]
    got = after["counters"]["messages_received"]
    assert (got["uptime"], got["lifetime"]) == (0, 1), got
