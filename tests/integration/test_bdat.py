"""RFC 3030 CHUNKING: BDAT chunks are stored verbatim; refused chunks are
still consumed so that the session stays in sync."""
from conftest import RawSMTP, assert_spooled


def start_tx(c, rcpt="b@example.com"):
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect(f"RCPT TO:<{rcpt}>", 250, "2.1.5")


def bdat(c, data, last=False):
    c.send(b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data)
    return c.reply()


def test_bdat_chunks_stored_verbatim(gateway):
    c = RawSMTP(gateway.port)
    start_tx(c)
    # No dot-stuffing in BDAT: "..x" and "\r\n.\r\n" are plain content.
    chunks = [b"Subject: chunked\r\nMessage-ID: <bdat-1@example.org>\r\n\r\n",
              b"line one\r\n..two dots\r\n.\r\nafter a lone dot\r\n",
              b"QUIT\r\n", b"last line\r\n"]
    total = 0
    for ch in chunks[:-1]:
        total += len(ch)
        code, lines = bdat(c, ch)
        assert code == 250, lines
        assert lines[-1] == f"2.0.0 {total} octets received"
    code, lines = bdat(c, chunks[-1], last=True)
    assert code == 250 and lines[-1].startswith("2.0.0 Message "), lines
    c.expect("NOOP", 250)
    (m,) = gateway.spool_messages()
    assert_spooled(m, b"".join(chunks), rcpt="b@example.com")
    assert m["message_id"] == "<bdat-1@example.org>"


def test_bdat_zero_last_ends_message(gateway):
    c = RawSMTP(gateway.port)
    start_tx(c)
    content = b"Subject: zero last\r\n\r\nbody\r\n"
    assert bdat(c, content)[0] == 250
    code, lines = bdat(c, b"", last=True)
    assert code == 250 and lines[-1].startswith("2.0.0 Message "), lines
    (m,) = gateway.spool_messages()
    assert_spooled(m, content, rcpt="b@example.com")


def test_bdat_pipelined_in_one_write(gateway):
    c = RawSMTP(gateway.port)
    c.send(b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
           b"BDAT 14\r\nSubject: x\r\n\r\nBDAT 6 LAST\r\nbody\r\nQUIT\r\n")
    got = [c.reply() for _ in range(6)]
    assert [g[0] for g in got] == [250, 250, 250, 250, 250, 221], got
    (m,) = gateway.spool_messages()
    assert_spooled(m, b"Subject: x\r\n\r\nbody\r\n", helo="c.test", rcpt="b@example.com")


def test_bdat_before_mail_refused_and_consumed(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    smuggled = b"QUIT\r\nMAIL FROM:<evil@x.org>\r\n"
    code, lines = bdat(c, smuggled)
    assert code == 503 and lines[-1].startswith("5.5.1 "), (code, lines)
    # had the octets been read as commands, QUIT would have closed us
    c.expect("NOOP", 250, "2.0.0")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    code, lines = bdat(c, b"RSET\r\nQUIT\r\n", last=True)
    assert code == 554 and lines[-1].startswith("5.5.1 "), (code, lines)
    c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
    code, lines = bdat(c, b"Subject: ok\r\n\r\nok\r\n", last=True)
    assert code == 250, lines
    (m,) = gateway.spool_messages()
    assert m["sender"] == "a@example.org"
    assert_spooled(m, b"Subject: ok\r\n\r\nok\r\n", rcpt="b@example.com")


def test_data_and_mail_after_bdat_refused(gateway):
    c = RawSMTP(gateway.port)
    start_tx(c)
    assert bdat(c, b"Subject: mix\r\n\r\n")[0] == 250
    c.expect("DATA", 503, "5.5.1")
    c.expect("MAIL FROM:<x@example.org>", 503, "5.5.1")
    c.expect("RCPT TO:<c@example.com>", 503, "5.5.1")
    c.expect("NOOP", 250)
    code, lines = bdat(c, b"tail\r\n", last=True)
    assert code == 250, lines
    (m,) = gateway.spool_messages()
    assert m["rcpts"] == ["b@example.com"]
    assert_spooled(m, b"Subject: mix\r\n\r\ntail\r\n", rcpt="b@example.com")


def test_bdat_rset_discards(gateway):
    c = RawSMTP(gateway.port)
    start_tx(c)
    assert bdat(c, b"Subject: dropped\r\n\r\n")[0] == 250
    c.expect("RSET", 250, "2.0.0")
    c.expect("DATA", 503, "5.5.1")
    assert gateway.spool_messages() == []
    gateway.wait_log(r"Message aborted MID \d+ Receiving aborted")


def test_bdat_bare_lf_refused(gateway):
    c = RawSMTP(gateway.port)
    start_tx(c)
    code, lines = bdat(c, b"Subject: x\r\n\r\nbare\nlf\r\n", last=True)
    assert code == 554 and lines[-1].startswith("5.5.2 "), (code, lines)
    c.expect("NOOP", 250)
    assert gateway.spool_messages() == []


def test_bdat_bare_cr_split_across_chunks_is_fine(gateway):
    c = RawSMTP(gateway.port)
    start_tx(c)
    assert bdat(c, b"Subject: split\r")[0] == 250
    code, lines = bdat(c, b"\n\r\nbody\r\n", last=True)
    assert code == 250, lines
    (m,) = gateway.spool_messages()
    assert_spooled(m, b"Subject: split\r\n\r\nbody\r\n", rcpt="b@example.com")


def test_bdat_bare_cr_at_end_of_last_chunk_refused(gateway):
    """A CR as the very last octet of the LAST chunk has no LF: a bare CR
    (smtp_data.h says so; the server must call smtp_data_finish)."""
    c = RawSMTP(gateway.port)
    start_tx(c)
    code, lines = bdat(c, b"Subject: x\r\n\r\nends with CR\r", last=True)
    assert code == 554 and lines[-1].startswith("5.5.2 "), (code, lines)
    assert gateway.spool_messages() == []


def test_bdat_bare_cr_then_zero_last_refused(gateway):
    c = RawSMTP(gateway.port)
    start_tx(c)
    assert bdat(c, b"Subject: x\r\n\r\nends with CR\r")[0] == 250
    code, lines = bdat(c, b"", last=True)
    assert code == 554 and lines[-1].startswith("5.5.2 "), (code, lines)
    assert gateway.spool_messages() == []


def test_bdat_bad_syntax_closes(gateway):
    c = RawSMTP(gateway.port)
    start_tx(c)
    code, lines = c.cmd("BDAT lots")
    assert code == 501 and lines[-1].startswith("5.5.4 "), (code, lines)
    assert c.closed()
