"""Delivery through SMTP routes: relaying to several kinds of downstream
server, failover between a route's hosts (seed 003), round robin, queueing
when every host fails, connection reuse with pipelining, the /dev/null
route, and an empty spool once everything is delivered.

Every server is on 127.0.0.1 with a free port; bounce profile and delivery
timeouts are short (conftest.delivery_overrides)."""
import glob
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import (RawSMTP, assert_relayed, delivery_overrides, dot_stuff, free_port,
                      make_content, rcpt_rows, route, send_message, spool_counts,
                      wait_spool_empty)

SENDER = "sender@example.org"


def wait_until(pred, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ---- relaying to each kind of downstream ----------------------------------------

def test_relay_to_smtp_peer_several_recipients(make_gateway, smtp_peer):
    peer = smtp_peer("sink")
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", peer.port))]))
    # dot-transparency and a body line that is only a dot must survive
    content = make_content("relay peer", body=b"Hello.\r\n.\r\n..two dots\r\n. space\r\nend\r\n")
    rcpts = ["a@example.com", "b@example.com", "c@example.com"]
    mid = send_message(gw, SENDER, rcpts, content)
    [msg] = peer.wait_messages(1)
    assert msg["mail_from"] == SENDER
    assert msg["rcpts"] == rcpts, "all recipients of a message in one transaction"
    assert not msg["bare_lf"]
    assert_relayed(msg["body"], content, mid)
    assert f"SIZE={len(msg['body'])}" in msg["mail_params"]
    gw.wait_log(rf"Message done DCID \d+ MID {mid} to RID \[0, 1, 2\]")
    gw.wait_log(rf"Message finished MID {mid} done")
    wait_spool_empty(gw)
    assert peer.connections() == 1


def test_relay_large_body_from_file(make_gateway, smtp_peer):
    """A body above memory_threshold is spooled to bodies/<mid> and streamed;
    the bytes arriving are the spooled bytes, and the file is gone after."""
    peer = smtp_peer("sink")
    over = delivery_overrides([route("example.com", ("127.0.0.1", peer.port))])
    over["spool"] = {"memory_threshold": "16K", "min_free_space": 1}
    gw = make_gateway(over)
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    body = b"".join((b"." if i % 7 == 0 else b"") + line for i in range(3000))
    content = make_content("large", body=body)
    mid = send_message(gw, SENDER, ["big@example.com"], content)
    [msg] = peer.wait_messages(1)
    assert_relayed(msg["body"], content, mid)
    assert msg["rcpts"] == ["big@example.com"]
    gw.wait_log(rf"Message finished MID {mid} done")
    wait_spool_empty(gw)


class _StoreHandler:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos),
                               bytes(envelope.original_content or envelope.content)))
        return "250 2.0.0 stored"


def test_relay_to_aiosmtpd(make_gateway):
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    handler = _StoreHandler()
    port = free_port()
    ctl = controller_mod.Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", port))]))
        content = make_content("relay aiosmtpd", body=b"line 1\r\n.dot line\r\nline 3\r\n")
        rcpts = ["x@example.com", "y@example.com"]
        mid = send_message(gw, SENDER, rcpts, content)
        wait_until(lambda: handler.envelopes, what="aiosmtpd message")
        [(mail_from, rcpt_tos, data)] = handler.envelopes
        assert mail_from == SENDER
        assert rcpt_tos == rcpts
        assert_relayed(data, content, mid)
        gw.wait_log(rf"Message done DCID \d+ MID {mid} to RID \[0, 1\]")
        gw.wait_log(rf"MID {mid} RID \[0, 1\] Response '2.0.0 stored'")  # text without the code, as the appliance logs it
        wait_spool_empty(gw)
    finally:
        ctl.stop()


def _smtp_sink_dump(path):
    """(headers added by smtp-sink, content) of one -d dump file; smtp-sink
    writes lines with LF and adds its own Received header (3 lines)."""
    with open(path, "rb") as f:
        data = f.read()
    meta = {}
    lines = data.split(b"\n")
    i = 0
    while lines[i].startswith(b"X-"):
        k, _, v = lines[i].partition(b": ")
        meta.setdefault(k.decode(), []).append(v.decode())
        i += 1
    assert lines[i].startswith(b"Received: from ") and lines[i + 1].startswith(b"\tby smtp-sink")
    i += 3
    content = b"\n".join(lines[i:])
    # the dump format ends every message with one empty line of its own
    assert content.endswith(b"\n\n"), content[-40:]
    return meta, content[:-1]


@pytest.fixture
def world_dir():
    """A directory outside pytest's private (0700) tmp tree, for servers that
    drop privileges (smtp-sink -u, Postfix)."""
    import pathlib
    import tempfile
    d = tempfile.mkdtemp(prefix="postern-deliv-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


def test_relay_to_postfix_smtp_sink(make_gateway, world_dir):
    sink_bin = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(sink_bin):
        pytest.skip("smtp-sink not installed")
    dump = world_dir / "sink"
    dump.mkdir()
    os.chmod(dump, 0o777)
    port = free_port()
    cmd = [sink_bin]
    if os.geteuid() == 0:
        cmd += ["-u", "postfix" if _user_exists("postfix") else "nobody"]
    cmd += ["-d", str(dump) + "/%s.", f"127.0.0.1:{port}", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _port_open(port), what="smtp-sink listening")
        gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", port))]))
        content = make_content("relay smtp-sink", body=b"first\r\n.stuffed\r\nlast\r\n")
        rcpts = ["p@example.com", "q@example.com"]
        mid = send_message(gw, SENDER, rcpts, content)
        gw.wait_log(rf"Message done DCID \d+ MID {mid} to RID \[0, 1\]")
        files = wait_until(lambda: glob.glob(str(dump / "*")), what="smtp-sink dump")
        assert len(files) == 1, files
        meta, got = _smtp_sink_dump(files[0])
        assert meta["X-Mail-Args"][0].startswith(f"<{SENDER}>")
        assert meta["X-Rcpt-Args"] == [f"<{r}>" for r in rcpts]
        # the dump has LF line ends: compare with ours converted
        got_crlf = got.replace(b"\n", b"\r\n")
        assert_relayed(got_crlf, content, mid)
        wait_spool_empty(gw)
    finally:
        proc.terminate()
        proc.wait(10)


def _user_exists(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---- a real Postfix as next hop --------------------------------------------------

MASTER_CF = """\
{port}    inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@pytest.fixture
def postfix_next_hop(world_dir):
    """A private Postfix instance on 127.0.0.1:<port> delivering
    pf.example.com to a Maildir, or a skip when it cannot be started."""
    if os.geteuid() != 0 or not shutil.which("postfix") and not os.path.exists("/usr/sbin/postfix"):
        pytest.skip("a private Postfix needs root and postfix installed")
    if not _user_exists("postfix"):
        pytest.skip("no postfix user")
    import grp
    import pwd
    base = world_dir / "postfix"
    conf, queue, data, mail = base / "etc", base / "queue", base / "data", base / "mail"
    for d in (conf, queue, data, mail):
        d.mkdir(parents=True)
        os.chmod(d, 0o755)
    pw = pwd.getpwnam("postfix")
    os.chown(data, pw.pw_uid, pw.pw_gid)
    os.chown(mail, pw.pw_uid, pw.pw_gid)
    setgid = "postdrop"
    try:
        grp.getgrnam(setgid)
    except KeyError:
        setgid = grp.getgrgid(pw.pw_gid).gr_name
    port = free_port()
    (conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = {setgid}
myhostname = pf.test
mydomain = test
myorigin = pf.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = pf.example.com
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{pw.pw_uid}
virtual_gid_maps = static:{pw.pw_gid}
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
""")
    (conf / "master.cf").write_text(MASTER_CF.format(port=f"127.0.0.1:{port}"))
    env = dict(os.environ, MAIL_CONFIG=str(conf))
    r = subprocess.run(["postfix", "-c", str(conf), "start"], capture_output=True, text=True,
                       env=env, timeout=60)
    if r.returncode != 0:
        subprocess.run(["postfix", "-c", str(conf), "abort"], capture_output=True, env=env)
        # without /dev/log Postfix's fatal errors go nowhere: show its log
        try:
            why = (base / "maillog").read_text()[-800:]
        except OSError:
            why = ""
        pytest.skip(f"private Postfix did not start: {r.stderr.strip()[-500:]} {why}")
    try:
        deadline = time.time() + 20
        while not _port_open(port):
            if time.time() > deadline:
                pytest.skip("private Postfix never listened")
            time.sleep(0.1)
        yield port, mail / "box" / "new", base / "maillog"
    finally:
        subprocess.run(["postfix", "-c", str(conf), "stop"], capture_output=True, env=env,
                       timeout=60)


def test_relay_to_real_postfix(make_gateway, postfix_next_hop):
    port, newdir, maillog = postfix_next_hop
    gw = make_gateway(delivery_overrides(
        [route("pf.example.com", ("127.0.0.1", port))],
        relay_domains=["pf.example.com", "example.com"]))
    # with a Date: (Postfix's cleanup would add a missing one)
    content = make_content("relay postfix", body=b"via postfix\r\n.stuffed\r\nend\r\n",
                           extra=b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n")
    rcpts = ["u1@pf.example.com", "u2@pf.example.com"]
    mid = send_message(gw, SENDER, rcpts, content)
    gw.wait_log(rf"Message done DCID \d+ MID {mid} to RID \[0, 1\]", timeout=20)
    files = wait_until(lambda: len(glob.glob(str(newdir / "*"))) >= 2 and
                       glob.glob(str(newdir / "*")), timeout=30, what="postfix maildir delivery")
    seen = set()
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        # virtual(8) adds Return-Path and Delivered-To; smtpd adds Received
        head, _, rest = data.partition(b"\nReceived: from ")
        assert b"Return-Path: <" + SENDER.encode() + b">" in head
        m = re.search(rb"Delivered-To: (\S+)", head)
        seen.add(m.group(1).decode())
        # skip postfix's own Received (ends at the line with its date)
        idx = rest.index(b"Received: from ")
        ours = rest[idx:].replace(b"\n", b"\r\n")
        assert_relayed(ours, content, mid)
    assert seen == set(rcpts)
    wait_spool_empty(gw)


# ---- failover between a route's hosts (seed 003) -------------------------------

FAILOVER_CASES = {
    # name: (smtp_peer options for the first host or None = closed port,
    #        reason logged, text expected in details: the reply in the
    #        appliance's ('code', ['text']) form, seed 003)
    "refused": (None, "network error", None),
    "timeout_at_banner": ({"stall": "banner"}, "network error", "timeout at banner"),
    "dropped_at_banner": ({"reset": "banner"}, "network error", None),
    "banner_4xx": ({"banner": "421 4.3.2 peer.test Service not available"},
                   "unexpected SMTP response",
                   "banner ('421', ['4.3.2 peer.test Service not available'])"),
    # the seed's multi-line 4xx greeting
    "banner_4xx_multiline": ({"banner": "421-peer.test ESMTP\n421 4.3.1 Mail system full"},
                             "unexpected SMTP response",
                             "banner ('421', ['peer.test ESMTP', '4.3.1 Mail system full'])"),
    "ehlo_4xx": ({"ehlo_reply": "421 4.3.2 busy"}, "unexpected SMTP response",
                 "EHLO ('421', ['4.3.2 busy'])"),
    "dropped_at_mail": ({"reset": "mail"}, "network error", None),
    "dropped_in_body": ({"reset": "body", "reset_after": 40}, "network error", None),
    "mail_452": ({"mail_reply": "452 4.3.1 Insufficient system resources"},
                 "unexpected SMTP response",
                 "MAIL ('452', ['4.3.1 Insufficient system resources'])"),
}


@pytest.mark.parametrize("case", list(FAILOVER_CASES))
def test_failover_to_second_host(make_gateway, smtp_peer, case):
    opts, reason, detail = FAILOVER_CASES[case]
    if opts is None:
        first = None
        p1 = free_port()
    else:
        first = smtp_peer("first", **opts)
        p1 = first.port
    second = smtp_peer("second")
    gw = make_gateway(delivery_overrides([route(
        "example.com", ("127.0.0.1", p1, 0), ("127.0.0.1", second.port, 10))]))
    content = make_content(f"failover {case}")
    mid = send_message(gw, SENDER, ["user@example.com"], content)
    [msg] = second.wait_messages(1, timeout=20)
    assert_relayed(msg["body"], content, mid)
    assert msg["rcpts"] == ["user@example.com"]
    if first is not None:
        assert first.messages() == []
    m = gw.wait_log(
        rf"Info: Connection Error: DCID (\d+) domain: example\.com IP: 127\.0\.0\.1 port: {p1} "
        rf"details: (.*) interface: \S+ reason: (.*)$")
    assert m.group(3) == reason, m.group(0)
    if detail:
        assert detail in m.group(2), m.group(0)
    gw.wait_log(rf"Info: New SMTP DCID {m.group(1)} interface \S+ address 127\.0\.0\.1 port {p1}$")
    m2 = gw.wait_log(rf"Info: New SMTP DCID (\d+) interface \S+ address 127\.0\.0\.1 "
                     rf"port {second.port}$")
    assert int(m2.group(1)) > int(m.group(1))
    gw.wait_log(rf"Info: Message done DCID {m2.group(1)} MID {mid} to RID \[0\]$")
    log = gw.log()
    # failover is not a deferral: the recipient never waited
    assert not re.search(rf"Delayed: DCID \d+ MID {mid} ", log), log[-3000:]
    assert not re.search(rf"MID {mid} to \[0\] pending till", log)
    wait_spool_empty(gw)


def test_round_robin_equal_priority(make_gateway, smtp_peer):
    a = smtp_peer("a")
    b = smtp_peer("b")
    gw = make_gateway(delivery_overrides(
        [route("example.com", ("127.0.0.1", a.port, 5), ("127.0.0.1", b.port, 5))],
        extra_dests=[{"domain": "example.com", "max_messages_per_connection": 1}]))
    mids = []
    for i in range(6):
        mid = send_message(gw, SENDER, [f"rr{i}@example.com"], make_content(f"rr {i}"))
        gw.wait_log(rf"Message finished MID {mid} done")
        mids.append(mid)
    na, nb = len(a.messages()), len(b.messages())
    assert na + nb == 6
    assert na > 0 and nb > 0, f"round robin: a got {na}, b got {nb}"
    # one connection per message (max_messages_per_connection 1)
    assert a.connections() == na and b.connections() == nb
    wait_spool_empty(gw)


# ---- every host down: queued, delivered when one comes back -------------------------

def test_all_hosts_fail_then_delivered_on_retry(make_gateway, smtp_peer):
    p1, p2 = free_port(), free_port()
    gw = make_gateway(delivery_overrides(
        [route("example.com", ("127.0.0.1", p1, 0), ("127.0.0.1", p2, 10))]))
    content = make_content("queued")
    mid = send_message(gw, SENDER, ["later@example.com"], content)
    gw.wait_log(rf"Connection Error: DCID \d+ domain: example\.com IP: 127\.0\.0\.1 port: {p1} "
                r".* reason: network error$")
    gw.wait_log(rf"Connection Error: DCID \d+ domain: example\.com IP: 127\.0\.0\.1 port: {p2} "
                r".* reason: network error$")
    gw.wait_log(rf"Info: Delayed: DCID \d+ MID {mid} to RID 0 - 4\.\d+\.\d+ - .+")
    gw.wait_log(rf"Info: MID {mid} to \[0\] pending till "
                r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} \[fast\]$")
    # the deferral is on disk
    wait_until(lambda: [r for r in rcpt_rows(gw) if r["mid"] == mid and r["attempts"] >= 1],
               what="rcpt.attempts >= 1 in the spool")
    # the second host comes up: the next attempt delivers there
    peer = smtp_peer("late", port=p2)
    [msg] = peer.wait_messages(1, timeout=20)
    assert_relayed(msg["body"], content, mid)
    gw.wait_log(rf"Info: Message done DCID \d+ MID {mid} to RID \[0\]$")
    gw.wait_log(rf"Message finished MID {mid} done")
    wait_spool_empty(gw)
    time.sleep(2.5)  # longer than max_retry: a duplicate would have been sent by now
    assert len(peer.messages()) == 1


def test_rcpt_4xx_retried_alone_without_duplicates(make_gateway, smtp_peer):
    """One recipient gets 451 at RCPT: the others are delivered now, only the
    deferred one is sent again on the retry."""
    first = smtp_peer("first", rcpt_replies={"later@example.com": "451 4.2.1 mailbox busy"})
    port = first.port
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", port))]))
    content = make_content("partial deferral")
    mid = send_message(gw, SENDER, ["now@example.com", "later@example.com", "too@example.com"],
                       content)
    [m1] = first.wait_messages(1)
    assert m1["rcpts"] == ["now@example.com", "too@example.com"]
    gw.wait_log(rf"Info: Delayed: DCID \d+ MID {mid} to RID 1 - 4\.2\.1 - .*mailbox busy")
    gw.wait_log(rf"Info: Message done DCID \d+ MID {mid} to RID \[0, 2\]$")
    gw.wait_log(rf"Info: MID {mid} to \[1\] pending till .* \[fast\]$")
    first.stop()
    second = smtp_peer("second", port=port)
    [m2] = second.wait_messages(1, timeout=20)
    assert m2["rcpts"] == ["later@example.com"]
    assert_relayed(m2["body"], content, mid)
    gw.wait_log(rf"Info: Message done DCID \d+ MID {mid} to RID \[1\]$")
    gw.wait_log(rf"Message finished MID {mid} done")
    wait_spool_empty(gw)
    time.sleep(2.5)
    assert len(first.messages()) == 1 and len(second.messages()) == 1


def test_max_recipients_per_message_splits_transactions(make_gateway, smtp_peer):
    peer = smtp_peer("sink")
    gw = make_gateway(delivery_overrides(
        [route("example.com", ("127.0.0.1", peer.port))],
        extra_dests=[{"domain": "example.com", "max_recipients_per_message": 2}]))
    content = make_content("split")
    rcpts = [f"m{i}@example.com" for i in range(5)]
    mid = send_message(gw, SENDER, rcpts, content)
    msgs = peer.wait_messages(3)
    assert sorted(len(m["rcpts"]) for m in msgs) == [1, 2, 2]
    assert sorted(r for m in msgs for r in m["rcpts"]) == rcpts
    for m in msgs:
        assert_relayed(m["body"], content, mid)
    gw.wait_log(rf"Message finished MID {mid} done")
    wait_spool_empty(gw)


# ---- connection reuse and pipelining ------------------------------------------------

class RecordingServer:
    """A minimal SMTP server that waits before its banner, offers
    PIPELINING, accepts everything, and records every recv() per connection."""

    def __init__(self, banner_delay=0.0, pipelining=True):
        self.banner_delay = banner_delay
        self.pipelining = pipelining
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            rec = {"reads": [], "messages": []}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(s, rec), daemon=True).start()

    def _serve(self, s, rec):
        try:
            s.settimeout(30)
            time.sleep(self.banner_delay)
            s.sendall(b"220 rec.test ESMTP\r\n")
            buf = b""
            data_mode = False
            env = None
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return
                rec["reads"].append(chunk)
                buf += chunk
                out = b""
                while True:
                    if data_mode:
                        i = buf.find(b"\r\n.\r\n")
                        if i < 0:
                            break
                        body, buf = buf[:i + 2], buf[i + 5:]
                        body = re.sub(rb"(?m)^\.", b"", body)  # unstuff
                        env["body"] = body
                        rec["messages"].append(env)
                        data_mode = False
                        out += b"250 2.0.0 Ok: queued\r\n"
                        continue
                    i = buf.find(b"\r\n")
                    if i < 0:
                        break
                    line, buf = buf[:i].decode(), buf[i + 2:]
                    verb = line.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        kws = ["rec.test"] + (["PIPELINING"] if self.pipelining else []) + ["8BITMIME"]
                        out += "".join(("250-" if j < len(kws) - 1 else "250 ") + k + "\r\n"
                                       for j, k in enumerate(kws)).encode()
                    elif verb == "MAIL":
                        env = {"from": line[10:].split(">")[0].lstrip("<"), "rcpts": []}
                        out += b"250 2.1.0 Ok\r\n"
                    elif verb == "RCPT":
                        env["rcpts"].append(line[8:].split(">")[0].lstrip("<"))
                        out += b"250 2.1.5 Ok\r\n"
                    elif verb == "DATA":
                        data_mode = True
                        out += b"354 go ahead\r\n"
                    elif verb == "QUIT":
                        s.sendall(out + b"221 2.0.0 Bye\r\n")
                        return
                    else:
                        out += b"250 2.0.0 Ok\r\n"
                if out:
                    s.sendall(out)
        except OSError:
            pass
        finally:
            s.close()

    def messages(self):
        with self.lock:
            return [m for c in self.conns for m in c["messages"]]

    def stop(self):
        self.stopping = True
        self.sock.close()


def test_connection_reuse_and_pipelining(make_gateway):
    srv = RecordingServer(banner_delay=2.0)
    try:
        gw = make_gateway(delivery_overrides(
            [route("example.com", ("127.0.0.1", srv.port))],
            delivery={"command_timeout": "10s"},
            extra_dests=[{"domain": "example.com", "max_connections": 1}]))
        contents, mids = [], []
        c = RawSMTP(gw.port)
        c.ehlo()
        for i in range(5):  # all five queued while the banner is still due
            content = make_content(f"reuse {i}")
            c.expect(f"MAIL FROM:<{SENDER}>", 250)
            c.expect(f"RCPT TO:<r{i}@example.com>", 250)
            c.expect(f"RCPT TO:<s{i}@example.com>", 250)
            c.expect("DATA", 354)
            c.send(dot_stuff(content) + b".\r\n")
            code, lines = c.reply()
            assert code == 250
            mids.append(int(re.search(r"Message (\d+) accepted", lines[-1]).group(1)))
            contents.append(content)
        c.cmd("QUIT")
        c.close()
        wait_until(lambda: len(srv.messages()) >= 5, timeout=20, what="5 messages")
        assert len(srv.conns) == 1, f"{len(srv.conns)} connections for 5 messages"
        msgs = srv.messages()
        assert len(msgs) == 5
        for i, (m, content, mid) in enumerate(zip(msgs, contents, mids)):
            assert m["from"] == SENDER
            assert m["rcpts"] == [f"r{i}@example.com", f"s{i}@example.com"]
            assert_relayed(m["body"], content, mid)
        # RFC 2920: MAIL, the RCPTs and DATA in one group (one read on loopback)
        reads = srv.conns[0]["reads"]
        grouped = [r for r in reads if b"MAIL FROM:" in r and r.count(b"RCPT TO:") == 2
                   and b"\r\nDATA\r\n" in r]
        assert len(grouped) == 5, f"commands not pipelined: {reads[:6]!r}"
        # one DCID for all five in the log
        dcids = {gw.wait_log(rf"Message done DCID (\d+) MID {mid} to RID \[0, 1\]").group(1)
                 for mid in mids}
        assert len(dcids) == 1
        wait_spool_empty(gw)
    finally:
        srv.stop()


def test_no_pipelining_when_not_offered(make_gateway):
    srv = RecordingServer(pipelining=False)
    try:
        gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", srv.port))]))
        content = make_content("no pipelining")
        mid = send_message(gw, SENDER, ["a@example.com", "b@example.com"], content)
        wait_until(lambda: srv.messages(), what="message")
        [m] = srv.messages()
        assert_relayed(m["body"], content, mid)
        reads = srv.conns[0]["reads"]
        assert not [r for r in reads if b"MAIL FROM:" in r and b"RCPT TO:" in r], reads[:6]
        wait_spool_empty(gw)
    finally:
        srv.stop()


# ---- /dev/null ---------------------------------------------------------------------

def test_devnull_route_drops(make_gateway, smtp_peer):
    other = smtp_peer("other")
    gw = make_gateway(delivery_overrides([
        route("example.com", "/dev/null"),
        route("ALL", ("127.0.0.1", other.port))]))
    mid = send_message(gw, SENDER, ["void@example.com", "void2@example.com"],
                       make_content("devnull"))
    gw.wait_log(rf"Info: MID {mid} RID \[0\] dropped: SMTP route for example\.com is /dev/null")
    gw.wait_log(rf"Info: MID {mid} RID \[1\] dropped: SMTP route for example\.com is /dev/null")
    gw.wait_log(rf"Message finished MID {mid} done")
    wait_spool_empty(gw)
    log = gw.log()
    assert not re.search(rf"Delivery start DCID \d+ MID {mid} ", log)
    assert "New SMTP DCID" not in log
    assert other.messages() == [] and other.connections() == 0
    assert not re.search(rf"generated for bounce of MID {mid}\b", log)


# ---- after everything is delivered, nothing is left ---------------------------------

def test_spool_empty_after_mixed_delivery(make_gateway, smtp_peer):
    peer = smtp_peer("sink")
    over = delivery_overrides([route("example.com", ("127.0.0.1", peer.port)),
                               route(".example.com", ("127.0.0.1", peer.port)),
                               route("example.net", "/dev/null")])
    over["spool"] = {"memory_threshold": "4K", "min_free_space": 1}
    gw = make_gateway(over)
    small = make_content("small")
    big = make_content("big", body=b"x" * 70 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 200)
    m1 = send_message(gw, SENDER, ["a@example.com", "b@sub.example.com"], small)
    m2 = send_message(gw, SENDER, ["c@example.com", "d@example.net"], big)
    msgs = peer.wait_messages(3)
    bodies = sorted((m["rcpts"][0], m["body"]) for m in msgs)
    assert [b[0] for b in bodies] == ["a@example.com", "b@sub.example.com", "c@example.com"]
    assert_relayed(bodies[0][1], small, m1)
    assert_relayed(bodies[1][1], small, m1)
    assert_relayed(bodies[2][1], big, m2)
    gw.wait_log(rf"Message finished MID {m1} done")
    gw.wait_log(rf"Message finished MID {m2} done")
    wait_spool_empty(gw)
    assert spool_counts(gw) == (0, 0, [])
