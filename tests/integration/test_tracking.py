"""Message tracking: mail through the gateway and delivered to a peer, then
`posternctl findevent` by each key (mid, message_id, sender, rcpt, subject,
ip) finds it and prints its events (From, To, queued, delivery lines); a
time range that ends before the message excludes it; --json parses; an
unknown MID finds nothing. See docs/tracking.md.
"""
import json
import os
import sqlite3
import time

from conftest import delivery_overrides, make_content, route, send_message
from test_control import ctl, ctl_json


def wait_tracked(gw, mid, pattern, timeout=10):
    """The tracking worker writes in batches: wait until MID's events include pattern."""
    deadline = time.time() + timeout
    while True:
        r = ctl_json(gw, "findevent", "mid", str(mid))
        texts = [e["text"] for m in r["messages"] for e in m["events"]]
        if any(pattern in t for t in texts):
            return r
        assert time.time() < deadline, f"no {pattern!r} for MID {mid} in {texts}"
        time.sleep(0.1)


def test_findevent_by_every_key(make_gateway, smtp_peer):
    peer = smtp_peer("sink")
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", peer.port))]))
    content = make_content(subject="Tracking Probe 42")
    mid = send_message(gw, "Alice@Example.org", ["bob@example.com"], content)
    # A second message that must not show up for the first one's keys.
    other = send_message(gw, "carol@example.org", ["dave@example.com"],
                         make_content(subject="unrelated"))
    peer.wait_messages(2)
    r = wait_tracked(gw, mid, "Message finished")

    m = r["messages"][0]
    assert m["mid"] == mid
    assert m["sender"] == "alice@example.org"
    assert m["recipients"] == ["bob@example.com"]
    assert m["client_ip"] == "127.0.0.1"
    assert m["subject"] == "Tracking Probe 42"
    texts = "\n".join(e["text"] for e in m["events"])
    for want in ("New SMTP ICID", f"Start MID {mid}", "From: <Alice@example.org>",
                 "To: <bob@example.com>", f"MID {mid} queued for delivery",
                 f"Delivery start DCID", f"Message done DCID", f"Message finished MID {mid}"):
        assert want in texts, f"{want!r} missing from:\n{texts}"

    queries = [("mid", str(mid)), ("message_id", "<Tracking-Probe-42@client.test>"),
               ("message_id", "Tracking-Probe-42@client.test"), ("sender", "alice@example.org"),
               ("rcpt", "BOB@example.com"), ("subject", "probe 4")]
    for key, value in queries:
        mids = [x["mid"] for x in ctl_json(gw, "findevent", key, value)["messages"]]
        assert mids == [mid], (key, value, mids)
    # The client IP matches both messages, newest first.
    mids = [x["mid"] for x in ctl_json(gw, "findevent", "ip", "127.0.0.1")["messages"]]
    assert mids == [other, mid]

    # Text output: the events with their times, grouped under the MID.
    out = ctl(gw, "findevent", "subject", "Tracking", "Probe").stdout
    assert f"MID {mid}" in out and f"MID {other}" not in out
    assert "Info: MID %d queued for delivery" % mid in out
    assert "Subject: Tracking Probe 42" in out

    # Time range: everything before the message excludes it; a recent one keeps it.
    assert ctl_json(gw, "findevent", "mid", str(mid), "--until",
                    "2000-01-01T00:00:00Z")["messages"] == []
    assert [x["mid"] for x in ctl_json(gw, "findevent", "mid", str(mid), "--since", "1h")
            ["messages"]] == [mid]
    t0 = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    assert ctl_json(gw, "findevent", "mid", str(mid), "--since", t0)["messages"] == []
    assert "No matching messages." in ctl(gw, "findevent", "mid", "999999").stdout

    # Bad input is refused by the daemon (exit 1) or posternctl (exit 2).
    assert ctl(gw, "findevent", "mid", "x", ok=False).returncode == 1
    assert ctl(gw, "findevent", "mid", "1", "--since", "yesterday", ok=False).returncode == 1
    assert ctl(gw, "findevent", "colour", "red", ok=False).returncode == 2

    # The database is where the documentation says, with the message in it.
    db = sqlite3.connect(os.path.join(gw.spool_dir, "tracking.db"))
    try:
        assert db.execute("SELECT sender FROM messages WHERE mid = ?", (mid,)).fetchone() == \
            ("alice@example.org",)
    finally:
        db.close()
    gw.stop()


def test_tracking_path_setting(make_gateway):
    gw = make_gateway({"paths": {"tracking": "trk/t.db"}, "tracking": {"max_age": "1h",
                                                                      "max_size": "10M"}})
    mid = send_message(gw, "a@example.org", ["b@example.com"], make_content(subject="p"))
    wait_tracked(gw, mid, "queued for delivery")
    assert os.path.exists(os.path.join(gw.dir, "trk", "t.db"))
    r = json.loads(ctl(gw, "--json", "findevent", "sender", "a@example.org").stdout)
    assert [m["mid"] for m in r["messages"]] == [mid]
    gw.stop()


def test_showmessage_falls_back_to_tracking(make_gateway, smtp_peer):
    peer = smtp_peer("sink")
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", peer.port))]))
    mid = send_message(gw, "alice@example.org", ["bob@example.com"],
                       make_content(subject="gone already"))
    peer.wait_messages(1)
    wait_tracked(gw, mid, "Message finished")
    out = ctl(gw, "showmessage", str(mid)).stdout
    assert "Not in the queue any more" in out, out
    assert f"Message finished MID {mid}" in out
    # an MID nobody knows is still an error
    p = ctl(gw, "showmessage", "999999", ok=False)
    assert p.returncode == 1 and "No such message" in p.stderr
