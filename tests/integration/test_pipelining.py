"""RFC 2920 PIPELINING: replies come back complete and in order."""
from conftest import RawSMTP, assert_spooled

CONTENT1 = b"Subject: pipelined one\r\nMessage-ID: <p1@example.org>\r\n\r\nbody one\r\n..x\r\n"
CONTENT2 = b"Subject: pipelined two\r\n\r\nbody two\r\n"


def replies(c, n):
    return [c.reply() for _ in range(n)]


def test_transaction_in_one_write_then_next_transaction(gateway):
    c = RawSMTP(gateway.port)
    c.send(b"EHLO pipe.test\r\nMAIL FROM:<s1@example.org>\r\nRCPT TO:<r1@example.com>\r\n"
           b"RCPT TO:<nobody@foreign.org>\r\nRCPT TO:<r3@a.sub.example.net>\r\nDATA\r\n")
    got = replies(c, 6)
    codes = [r[0] for r in got]
    assert codes == [250, 250, 250, 554, 250, 354], got
    assert "PIPELINING" in got[0][1]
    assert got[3][1][-1].startswith("5.7.1 ")
    # the content, its end, and the whole next transaction in one write
    c.send(b"Subject: pipelined one\r\nMessage-ID: <p1@example.org>\r\n\r\nbody one\r\n...x\r\n"
           b".\r\nMAIL FROM:<s2@example.org>\r\nRCPT TO:<r2@example.com>\r\nDATA\r\n")
    got = replies(c, 4)
    assert [r[0] for r in got] == [250, 250, 250, 354], got
    assert got[0][1][-1].startswith("2.0.0 Message ")
    c.send(CONTENT2 + b".\r\nQUIT\r\n")
    got = replies(c, 2)
    assert [r[0] for r in got] == [250, 221], got
    assert c.closed()
    m1, m2 = gateway.spool_messages()
    assert m1["sender"] == "s1@example.org"
    assert m1["rcpts"] == ["r1@example.com", "r3@a.sub.example.net"]
    assert_spooled(m1, CONTENT1, helo="pipe.test", rcpt=None)
    assert m2["sender"] == "s2@example.org"
    assert_spooled(m2, CONTENT2, helo="pipe.test", rcpt="r2@example.com")
    assert int(got[0][1][-1].split()[2]) == m2["mid"]


def test_whole_session_in_one_write(gateway):
    """Even a client that does not wait for 354 is served in order."""
    c = RawSMTP(gateway.port)
    c.send(b"EHLO pipe.test\r\n"
           b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n" + CONTENT1.replace(b"..x", b"...x") + b".\r\n"
           b"RSET\r\nNOOP\r\n"
           b"MAIL FROM:<c@example.org>\r\nRCPT TO:<d@example.com>\r\nDATA\r\n" + CONTENT2 + b".\r\n"
           b"QUIT\r\n")
    got = replies(c, 11)
    assert [r[0] for r in got] == [250, 250, 250, 354, 250, 250, 250, 250, 250, 354, 250] \
        , got
    assert c.reply()[0] == 221
    assert c.closed()
    m1, m2 = gateway.spool_messages()
    assert_spooled(m1, CONTENT1, helo="pipe.test", rcpt="b@example.com")
    assert_spooled(m2, CONTENT2, helo="pipe.test", rcpt="d@example.com")
    assert (m1["sender"], m2["sender"]) == ("a@example.org", "c@example.org")


def test_many_pipelined_commands_in_order(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.send(b"NOOP\r\n" * 200 + b"MAIL FROM:<a@example.org>\r\n" + b"RCPT TO:<x@foreign.org>\r\n"
           + b"RCPT TO:<b@example.com>\r\n" + b"VRFY x\r\n" + b"RSET\r\n" + b"QUIT\r\n")
    got = replies(c, 206)
    assert [r[0] for r in got] == [250] * 200 + [250, 554, 250, 252, 250, 221]
    assert c.closed()
    assert gateway.spool_messages() == []
