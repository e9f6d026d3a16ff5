"""Crash safety: kill -9 at random moments while mail flows in and out.

Sender threads submit messages with unique bodies and record the sha256 of
each body the moment its "250" arrives; meanwhile the gateway relays
example.com to a recording sink (tests/tools/smtp_peer.py). The daemon is
killed with SIGKILL at a random moment of each round and restarted on the
same spool. After the last round it drains, and the sink must hold every
acknowledged message, complete and byte-exact after our Received header
(architecture.md, durability contract). Duplicates are allowed
(at-least-once) and reported; losses and truncated or corrupted
deliveries are not.
"""
import hashlib
import os
import random
import re
import threading
import time

from conftest import RawSMTP, delivery_overrides, route, spool_counts, split_received

ROUNDS = 8
SENDERS = 4
SENDER = "sender@example.org"


class Sender(threading.Thread):
    def __init__(self, port, idx, seed):
        super().__init__(daemon=True)
        self.port = port
        self.idx = idx
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.acked = {}      # sha256 -> token (got 250)
        self.attempted = {}  # sha256 -> token (DATA content sent, reply unknown)
        self.errors = 0
        self.n = 0

    def content(self):
        self.n += 1
        token = f"crash-{self.idx}-{self.n}-{self.rng.getrandbits(48):012x}"
        # 200 B .. 40 KB: some bodies stay in queue.db, some go to bodies/
        nlines = self.rng.choice([2, 10, 100, 300, 520])
        body = "".join(f"{token} {i:05d} " + "%064x\r\n" % self.rng.getrandbits(256)
                       for i in range(nlines))
        text = (f"From: s@example.org\r\nTo: r@example.com\r\nSubject: {token}\r\n"
                f"Message-ID: <{token}@client.test>\r\n\r\n{body}")
        return token, text.encode()

    def run(self):
        while not self.stop.is_set():
            token, content = self.content()
            digest = hashlib.sha256(content).hexdigest()
            try:
                c = RawSMTP(self.port, timeout=5)
            except OSError:
                self.errors += 1
                time.sleep(0.02)
                continue
            try:
                self.attempted[digest] = token
                code, lines = c.message(SENDER, [f"r{self.idx}@example.com"], content)
                if code == 250:
                    self.acked[digest] = token
                try:
                    c.cmd("QUIT")
                except (OSError, ConnectionError):
                    pass
            except (OSError, ConnectionError, AssertionError, ValueError):
                self.errors += 1
            finally:
                c.close()


def test_kill9_never_loses_acknowledged_mail(make_gateway, smtp_peer):
    t0 = time.time()
    sink = smtp_peer("sink")
    over = delivery_overrides([route("example.com", ("127.0.0.1", sink.port))])
    over["spool"] = {"memory_threshold": "8K", "min_free_space": 1}
    gw = make_gateway(over)
    rng = random.Random(os.environ.get("CRASH_SEED", str(int(t0))))
    print(f"seed {rng.random()!r}")

    senders = [Sender(gw.port, i, rng.getrandbits(32)) for i in range(SENDERS)]
    for s in senders:
        s.start()
    kills = 0
    for rnd in range(ROUNDS):
        time.sleep(rng.uniform(0.3, 2.0))
        gw.kill9()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.2))
        gw.start()
    time.sleep(1.0)
    for s in senders:
        s.stop.set()
    for s in senders:
        s.join(15)
        assert not s.is_alive(), "a sender thread hung"

    acked = {}
    attempted = {}
    for s in senders:
        acked.update(s.acked)
        attempted.update(s.attempted)
    assert len(acked) > 20, f"too few messages acknowledged to mean anything: {len(acked)}"

    # drain: everything acknowledged reaches the sink
    deadline = time.time() + 40
    while time.time() < deadline:
        if spool_counts(gw)[:2] == (0, 0):
            break
        time.sleep(0.2)
    msgs, rcpts, bodies = spool_counts(gw)

    delivered = {}
    corrupt = []
    for m in sink.messages():
        rx, rest = split_received(m["body"])
        d = hashlib.sha256(rest).hexdigest()
        if d not in attempted:
            corrupt.append(rest[:200])
        delivered[d] = delivered.get(d, 0) + 1
    lost = sorted(tok for d, tok in acked.items() if d not in delivered)
    dups = sum(n - 1 for n in delivered.values() if n > 1)
    unacked_delivered = sum(1 for d in delivered if d in attempted and d not in acked)
    log = gw.log()
    loads = re.findall(r"^.*Spool \S+ loaded: .*$", log, re.M)
    damaged = sum(int(n) for n in re.findall(r"loaded: .*?(\d+) damaged", log))
    damaged += len(re.findall(r"MID \d+ damaged in spool", log))
    print(f"rounds {ROUNDS}, kills {kills}, acknowledged {len(acked)}, attempted "
          f"{len(attempted)}, delivered distinct {len(delivered)}, duplicates {dups}, "
          f"delivered without 250 {unacked_delivered}, sender errors "
          f"{sum(s.errors for s in senders)}, damaged {damaged}, "
          f"spool left {msgs}/{rcpts}/{len(bodies)}, {time.time() - t0:.1f}s")
    for line in loads:
        print("  ", line)
    assert not corrupt, f"{len(corrupt)} delivered messages are not any message sent: {corrupt[:3]}"
    assert not lost, f"{len(lost)} acknowledged messages never delivered: {lost[:10]}"
    # kill -9 loses no page cache: nothing committed may fail verification
    assert damaged == 0, f"{damaged} damaged spool records after kill -9"
    assert (msgs, rcpts) == (0, 0), f"spool did not drain: {msgs} messages {rcpts} recipients"
