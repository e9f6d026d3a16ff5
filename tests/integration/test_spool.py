"""Spool storage: the memory threshold, low space, no leftovers of refused
or aborted messages."""
import os
import socket

from conftest import RawSMTP, assert_spooled


def bodies(gw):
    d = os.path.join(gw.spool_dir, "bodies")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_memory_threshold_boundary(make_gateway):
    gw = make_gateway({"spool": {"memory_threshold": "2K"}})
    c = RawSMTP(gw.port)
    first = b"Subject: probe\r\n\r\nx\r\n"
    code, lines = c.message("a@example.org", ["b@example.com"], first)
    assert code == 250
    (m,) = gw.spool_messages()
    hdr_len = len(m["body"]) - len(first)  # our Received header (same width for MIDs 2, 3)
    pad = (b"y" * 98 + b"\r\n") * 15  # 1500 octets
    exact = b"Subject: at\r\n\r\n" + pad + b"y" * (2048 - hdr_len - 1517) + b"\r\n"
    over = b"Subject: at\r\n\r\n" + pad + b"y" * (2048 - hdr_len - 1517 + 1) + b"\r\n"
    for content in (exact, over):
        code, lines = c.message("a@example.org", ["b@example.com"], content, helo=None)
        assert code == 250
    _, m2, m3 = gw.spool_messages()
    assert m2["size"] == 2048 and m3["size"] == 2049
    assert m2["body_file"] is None, "a body of exactly memory_threshold belongs in the row"
    assert m3["body_file"] is not None, "a body above memory_threshold belongs in a file"
    assert_spooled(m2, exact, rcpt="b@example.com")
    assert_spooled(m3, over, rcpt="b@example.com")
    assert bodies(gw) == [os.path.basename(m3["body_file"])]


def test_refused_and_aborted_large_messages_leave_no_file(make_gateway):
    gw = make_gateway({"spool": {"memory_threshold": "1K"},
                       "limits": {"max_message_size": "64K"}})
    big = b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 200
    c = RawSMTP(gw.port)
    c.ehlo()
    # refused for a bare LF at the end
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(big + b"bare\nLF\r\n.\r\n")
    c.expect(None, 554, "5.5.2")
    # refused for size
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(big * 4 + b".\r\n")
    c.expect(None, 552, "5.3.4")
    # RSET in the middle of BDAT
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.send(b"BDAT %d\r\n" % len(big) + big)
    c.expect(None, 250)
    c.expect("RSET", 250)
    # client gone in the middle of DATA
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(big)
    c.sock.shutdown(socket.SHUT_WR)
    assert c.closed()
    gw.wait_log(r"ICID \d+ lost")
    assert gw.spool_messages() == []
    assert bodies(gw) == []
    gw.stop()
    gw.start()
    assert gw.spool_messages() == []


def test_low_spool_space_refuses_mail(make_gateway):
    gw = make_gateway({"spool": {"min_free_space": "4000G"}})
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 452, "4.3.1")
    gw.wait_log(r"ICID \d+ MAIL refused: spool low on free space")
    c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")
    c.expect("QUIT", 221)
