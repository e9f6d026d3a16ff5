"""A deferred queue survives a restart: the message is delivered once after
its retry time by the restarted daemon, with its attempt count persisted."""
import re
import time

from conftest import (assert_relayed, delivery_overrides, free_port, make_content, rcpt_rows,
                      route, send_message, spool_counts, wait_spool_empty)

SENDER = "sender@example.org"


def wait_for(pred, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_deferred_message_survives_restart(make_gateway, smtp_peer):
    port = free_port()
    # a longer retry wait than the restart takes: the restarted daemon must
    # honour the persisted next attempt time, then deliver
    gw = make_gateway(delivery_overrides(
        [route("example.com", ("127.0.0.1", port))],
        profile={"initial_retry": "2s", "max_retry": "4s"}))
    content = make_content("restart")
    mid = send_message(gw, SENDER, ["r1@example.com", "r2@example.com"], content)
    gw.wait_log(rf"Info: Delayed: DCID \d+ MID {mid} to RID 0 - ")
    gw.wait_log(rf"Info: MID {mid} to \[1\] pending till .* \[fast\]$")
    rows = wait_for(lambda: [r for r in rcpt_rows(gw) if r["mid"] == mid and r["attempts"] >= 1]
                    if len([r for r in rcpt_rows(gw) if r["attempts"] >= 1]) == 2 else None,
                    what="both recipients' attempts persisted")
    assert all(r["next_attempt"] > 0 for r in rows)
    assert all(r["last_error"] for r in rows), rows
    gw.stop()
    msgs, nrcpts, _ = spool_counts(gw)
    assert (msgs, nrcpts) == (1, 2), "the deferred message is still spooled after SIGTERM"
    before = len(gw.log())

    peer = smtp_peer("back", port=port)
    gw.start()
    gw.wait_log(r"Spool .* loaded: 1 messages, 2 recipients", start=before)
    [m] = peer.wait_messages(1, timeout=20)
    assert m["rcpts"] == ["r1@example.com", "r2@example.com"]
    assert_relayed(m["body"], content, mid)
    gw.wait_log(rf"Info: Message done DCID \d+ MID {mid} to RID \[0, 1\]$", start=before)
    gw.wait_log(rf"Message finished MID {mid} done", start=before)
    wait_spool_empty(gw)
    time.sleep(2.5)
    assert len(peer.messages()) == 1, "delivered exactly once"
    # the new daemon's DCIDs continue after the old ones
    dcids = [int(x) for x in re.findall(r"New SMTP DCID (\d+)", gw.log())]
    assert dcids == sorted(dcids) and len(set(dcids)) == len(dcids)
