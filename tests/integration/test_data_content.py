"""DATA content rules: line ends, the smuggling defence, transparency,
line length and NUL."""
import time

import pytest

from conftest import RawSMTP, assert_spooled

HDR = b"Subject: content\r\n\r\n"


def open_data(c, sender="a@example.org", rcpt="b@example.com"):
    c.ehlo()
    c.expect(f"MAIL FROM:<{sender}>", 250, "2.1.0")
    c.expect(f"RCPT TO:<{rcpt}>", 250, "2.1.5")
    c.expect("DATA", 354)


def still_usable(c, gateway, n_before=0):
    """The session accepts a clean message after a refusal."""
    code, lines = c.message("ok@example.org", ["b@example.com"], b"Subject: ok\r\n\r\nfine\r\n",
                            helo=None)
    assert code == 250, lines
    msgs = gateway.spool_messages()
    assert len(msgs) == n_before + 1
    assert msgs[-1]["sender"] == "ok@example.org"


@pytest.mark.parametrize("body", [b"bare\nLF in the middle\r\n", b"ends with bare LF\n\r\n",
                                  b"bare LF before a dot\n.\r\n"])
def test_bare_lf_refused(gateway, body):
    c = RawSMTP(gateway.port)
    open_data(c)
    c.send(HDR + body + b".\r\n")
    c.expect(None, 554, "5.5.2")
    assert gateway.spool_messages() == []
    gateway.wait_log(r"Message aborted MID \d+ Receiving aborted")
    still_usable(c, gateway)


@pytest.mark.parametrize("body", [b"bare\rCR\r\n", b"cr before dot\r.\r\n", b"x\r\r\n"])
def test_bare_cr_refused(gateway, body):
    c = RawSMTP(gateway.port)
    open_data(c)
    c.send(HDR + body + b".\r\n")
    c.expect(None, 554, "5.5.2")
    assert gateway.spool_messages() == []
    still_usable(c, gateway)


SMUGGLED = (b"MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            b"From: smuggler@evil.example\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")


@pytest.mark.parametrize("mode", ["one-write", "byte-by-byte"])
@pytest.mark.parametrize("fake_end", [b"\r\n.\n", b"\n.\r\n", b"\n.\n", b"\r.\r\n", b"\r\n.\r",
                                      b"\r.\r"],
                         ids=["CRLF.LF", "LF.CRLF", "LF.LF", "CR.CRLF", "CRLF.CR", "CR.CR"])
def test_smuggling_never_splits_message(gateway, fake_end, mode):
    c = RawSMTP(gateway.port)
    open_data(c, sender="real@example.org")
    data = (b"Subject: real\r\n\r\nreal body" + fake_end + SMUGGLED + b"\r\n.\r\nQUIT\r\n")
    if mode == "one-write":
        c.send(data)
    else:
        c.sock.setsockopt(6, 1, 1)  # TCP_NODELAY: one segment per byte
        for i in range(len(data)):
            c.send(data[i:i + 1])
    code, lines = c.reply()
    # Either refused (bare CR/LF) or at most the real message accepted, and
    # then nothing but the QUIT reply: no reply to a smuggled command.
    assert code in (250, 554), (code, lines)
    if code == 554:
        assert lines[-1].startswith("5.5.2 "), lines
    nxt = c.reply()
    assert nxt[0] == 221, f"a smuggled command was executed: {nxt}"
    assert c.closed()
    msgs = gateway.spool_messages()
    assert len(msgs) == (1 if code == 250 else 0)
    for m in msgs:
        assert m["sender"] == "real@example.org"
        assert b"smuggled" not in m["body"].split(b"\r\n\r\n")[0]
    assert all(m["sender"] != "smuggler@evil.example" for m in msgs)
    assert "smuggler@evil.example> " not in gateway.log()
    assert "From: <smuggler@evil.example>" not in gateway.log()


def test_data_byte_by_byte_exact(gateway):
    content = (b"Subject: slow\r\n\r\n..leading\r\n.\r\nx.\r\n...\r\n\r\nend\r\n")
    c = RawSMTP(gateway.port)
    open_data(c)
    wire = content.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    c.sock.setsockopt(6, 1, 1)
    for i in range(len(wire)):
        c.send(wire[i:i + 1])
    c.expect(None, 250, "2.0.0")
    (m,) = gateway.spool_messages()
    assert_spooled(m, content, rcpt="b@example.com")


def test_dot_unstuffing_exact(gateway):
    c = RawSMTP(gateway.port)
    open_data(c)
    # raw wire, already stuffed by hand
    c.send(b"Subject: dots\r\n\r\n..line\r\n...two\r\n..\r\n.x\r\nmid.dle\r\n.\r\n")
    c.expect(None, 250, "2.0.0")
    (m,) = gateway.spool_messages()
    assert_spooled(m, b"Subject: dots\r\n\r\n.line\r\n..two\r\n.\r\nx\r\nmid.dle\r\n",
                   rcpt="b@example.com")


def test_empty_message(gateway):
    c = RawSMTP(gateway.port)
    open_data(c)
    c.send(b".\r\n")
    c.expect(None, 250, "2.0.0")
    (m,) = gateway.spool_messages()
    assert_spooled(m, b"", rcpt="b@example.com")


def test_text_line_998_ok_999_refused(gateway):
    c = RawSMTP(gateway.port)
    ok = HDR + b"a" * 998 + b"\r\n" + b"." + b"b" * 997 + b"\r\n"
    code, lines = c.message("a@example.org", ["b@example.com"], ok)
    assert code == 250, lines
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(HDR + b"a" * 999 + b"\r\n.\r\n")
    c.expect(None, 554, "5.6.0")
    (m,) = gateway.spool_messages()
    assert_spooled(m, ok, rcpt="b@example.com")
    # a long header line counts the same
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: " + b"s" * 990 + b"\r\n\r\nx\r\n.\r\n")
    c.expect(None, 554, "5.6.0")
    assert len(gateway.spool_messages()) == 1


def test_very_long_line_refused(gateway):
    c = RawSMTP(gateway.port)
    open_data(c)
    c.send(HDR + b"z" * 200000 + b"\r\n.\r\n")
    c.expect(None, 554, "5.6.0")
    assert gateway.spool_messages() == []
    still_usable(c, gateway)


def test_nul_refused(gateway):
    c = RawSMTP(gateway.port)
    open_data(c)
    c.send(HDR + b"nul\x00here\r\n.\r\n")
    c.expect(None, 554, "5.6.0")
    assert gateway.spool_messages() == []
    still_usable(c, gateway)
