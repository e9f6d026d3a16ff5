"""Queued messages survive a restart and a kill -9; every 250 is durable."""
import os
import re
import socket
import signal
import subprocess
import threading
import time

from conftest import RawSMTP, assert_spooled, split_received


def test_restart_keeps_queue(make_gateway):
    gw = make_gateway()
    c = RawSMTP(gw.port)
    contents = [b"Subject: m%d\r\nMessage-ID: <restart-%d@example.org>\r\n\r\nbody %d\r\n" % (i, i, i)
                for i in range(5)]
    contents.append(b"Subject: big\r\n\r\n" + (b"b" * 78 + b"\r\n") * 5000)  # file-backed
    for i, content in enumerate(contents):
        code, lines = c.message(f"s{i}@example.org", [f"r{i}@example.com", "x@example.com"],
                                content, helo="c.test" if i == 0 else None)
        assert code == 250, lines
    c.expect("QUIT", 221)
    before = gw.spool_messages()
    assert len(before) == 6
    assert before[-1]["body_file"] is not None
    gw.stop()
    start = len(gw.log())
    gw.start()
    gw.wait_log(r"Spool \S+ loaded: 6 messages, 12 recipients, 0 damaged", start=start)
    after = gw.spool_messages()
    assert after == before
    for m, content in zip(after, contents):
        assert_spooled(m, content, helo="c.test")


def test_sigterm_during_session_gets_421(make_gateway):
    gw = make_gateway()
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    gw.proc.send_signal(signal.SIGTERM)
    code, lines = c.reply()
    assert code == 421 and lines[-1].startswith("4.3.2 "), (code, lines)
    assert c.closed()
    assert gw.proc.wait(30) == 0
    gw.wait_log(r"Message aborted MID \d+ Receiving aborted")
    gw.stop()


class Sender(threading.Thread):
    """Sends unique messages until the connection fails; records every 250."""

    def __init__(self, port, tid, stop):
        super().__init__(daemon=True)
        self.port, self.tid, self.stop = port, tid, stop
        self.acked = {}  # message-id -> (mid, content)
        self.sent = set()
        self.error = None

    def run(self):
        try:
            c = RawSMTP(self.port, timeout=15)
            c.ehlo(f"t{self.tid}.test")
            i = 0
            while not self.stop.is_set():
                msgid = f"<k9-{self.tid}-{i}@example.org>"
                # thread 0 sends bodies above the memory threshold (files)
                n = 20000 + i if self.tid == 0 else i % 40 + 1
                content = (f"Subject: kill test {self.tid}/{i}\r\nMessage-ID: {msgid}\r\n\r\n"
                           .encode() + (b"%d.%d payload line\r\n" % (self.tid, i)) * n)
                c.expect(f"MAIL FROM:<t{self.tid}@example.org>", 250)
                c.expect(f"RCPT TO:<r{i}@example.com>", 250)
                c.expect("DATA", 354)
                self.sent.add(msgid)
                c.send(content + b".\r\n")
                code, lines = c.reply()
                if code == 250:
                    self.acked[msgid] = (int(lines[-1].split()[2]), content)
                i += 1
        except (OSError, ConnectionError, AssertionError) as e:
            self.error = e


def test_kill9_every_acknowledged_message_is_stored(make_gateway):
    gw = make_gateway()
    stop = threading.Event()
    source = subprocess.Popen(["/usr/sbin/smtp-source", "-s", "10", "-m", "3000", "-l", "2048",
                               "-f", "sender@example.org", "-t", "rcpt@example.com",
                               f"127.0.0.1:{gw.port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    senders = [Sender(gw.port, t, stop) for t in range(4)]
    try:
        for s in senders:
            s.start()
        deadline = time.time() + 20
        time.sleep(1.0)
        while sum(len(s.acked) for s in senders) < 40 and time.time() < deadline:
            time.sleep(0.05)
        gw.kill9()
    finally:
        stop.set()
        for s in senders:
            s.join(30)
        try:
            source.wait(30)
        except subprocess.TimeoutExpired:
            source.kill()
            source.wait()
    icids_before = [int(x) for x in re.findall(r"New SMTP ICID (\d+)", gw.log())]
    acked = {}
    for s in senders:
        acked.update(s.acked)
    sent = set().union(*(s.sent for s in senders))
    assert len(acked) >= 40, "too few messages acknowledged before the kill"
    start = len(gw.log())
    gw.start()
    loaded = gw.wait_log(r"Spool \S+ loaded: (\d+) messages, (\d+) recipients, (\d+) damaged",
                         start=start)
    msgs = gw.spool_messages()
    assert int(loaded.group(1)) == len(msgs)
    assert loaded.group(3) == "0"
    by_id = {m["message_id"]: m for m in msgs if m["message_id"]}
    missing = [k for k in acked if k not in by_id]
    assert missing == [], f"{len(missing)} acknowledged messages lost: {missing[:5]}"
    for msgid, (mid, content) in acked.items():
        m = by_id[msgid]
        assert m["mid"] == mid
        assert_spooled(m, content, helo=f"t{msgid.split('-')[1]}.test",
                       rcpt=m["rcpts"][0])
    for m in msgs:  # smtp-source's too: complete and consistent
        rx, rest = split_received(m["body"])
        assert m["size"] == len(m["body"])
        assert len(m["rcpts"]) == 1
    # body files: exactly those of stored file-backed messages (orphans removed)
    files = {os.path.basename(m["body_file"]) for m in msgs if m["body_file"]}
    assert any(k.startswith("<k9-0-") for k in acked), "no large message acknowledged"
    assert files, "no file-backed message stored"
    assert sorted(os.listdir(os.path.join(gw.spool_dir, "bodies"))) == sorted(files)
    ours = [m for m in msgs if (m["message_id"] or "").startswith("<k9-")]
    unacked = [m for m in ours if m["message_id"] not in acked]
    assert all(m["message_id"] in sent for m in unacked)
    print(f"\nkill -9: {len(acked)} acknowledged, {len(ours)} of ours stored, "
          f"{len(unacked)} stored without ack, {len(msgs) - len(ours)} from smtp-source")
    # new IDs after the crash are above every one handed out before it
    start = len(gw.log())
    c = RawSMTP(gw.port)
    icid = int(gw.wait_log(r"New SMTP ICID (\d+)", start=start).group(1))
    assert icid > max(icids_before + [m["icid"] for m in msgs])
    code, lines = c.message("a@example.org", ["b@example.com"], b"Subject: after\r\n\r\nx\r\n")
    assert code == 250
    assert int(lines[-1].split()[2]) > max(m["mid"] for m in msgs)


def test_half_close_after_data_still_queued(make_gateway):
    """A client that vanishes while its message is being committed: the
    message is stored anyway (at least once), the session is "lost"."""
    gw = make_gateway()
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    content = b"Subject: half\r\nMessage-ID: <half@example.org>\r\n\r\nx\r\n"
    c.send(content + b".\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    c.closed()
    gw.wait_log(r"ICID \d+ (lost|close)$")
    mid = int(gw.wait_log(r"MID (\d+) queued for delivery").group(1))
    assert "Receiving aborted" not in gw.log()
    (m,) = gw.spool_messages()
    assert m["mid"] == mid
    assert_spooled(m, content, rcpt="b@example.com")
