"""mail_logs: the event lines of a reception, their escaping, and IDs."""
import re
import socket

from conftest import RawSMTP

STAMP = r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} (?:Debug|Info|Warning|Critical): "
LINE_RE = re.compile(STAMP + r"\S")


def assert_well_formed(log):
    for line in log.splitlines():
        assert LINE_RE.match(line), f"malformed or forged log line: {line!r}"


def icid_of_next(gw, start):
    m = gw.wait_log(r"^" + STAMP + r"New SMTP ICID (\d+) interface InboundMail \(127\.0\.0\.1\) "
                    r"address 127\.0\.0\.1 reverse dns host unknown verified no$", start=start)
    return int(m.group(1))


def test_reception_lines_in_order(gateway):
    start = len(gateway.log())
    c = RawSMTP(gateway.port)
    icid = icid_of_next(gateway, start)
    content = (b"From: a@example.org\r\nSubject: Quarterly report\r\n"
               b"Message-ID: <log-1@example.org>\r\n\r\nhello\r\n")
    code, lines = c.message("a@example.org", ["b@example.com", "c@a.sub.example.net"], content)
    assert code == 250
    mid = int(lines[-1].split()[2])
    c.expect("QUIT", 221)
    assert c.closed()
    gateway.wait_log(rf"ICID {icid} close$")
    (m,) = gateway.spool_messages()
    expected = [
        rf"New SMTP ICID {icid} interface InboundMail \(127\.0\.0\.1\) address 127\.0\.0\.1 "
        r"reverse dns host unknown verified no",
        rf"Start MID {mid} ICID {icid}",
        rf"MID {mid} ICID {icid} From: <a@example\.org>",
        rf"MID {mid} ICID {icid} RID 0 To: <b@example\.com>",
        rf"MID {mid} ICID {icid} RID 1 To: <c@a\.sub\.example\.net>",
        rf"MID {mid} Message-ID '<log-1@example\.org>'",
        rf"MID {mid} Subject 'Quarterly report'",
        rf"MID {mid} ready {len(m['body'])} bytes from <a@example\.org>",
        rf"MID {mid} queued for delivery",
        rf"ICID {icid} close",
    ]
    log = gateway.log()[start:]
    # reception events only: delivery (DCID, Delayed, pending) has its own tests
    lines = [l for l in log.splitlines() if re.search(rf"\b(ICID {icid}|MID {mid})\b", l)
             and not re.search(r"DCID|Delayed:|Bounced:|pending till|Delivery start"
                               r"|ICID \d+ (ACCEPT|RELAY) SG|DNS lookups took", l)]
    assert len(lines) == len(expected), lines
    for rx, line in zip(expected, lines):
        assert re.fullmatch(STAMP + rx, line), f"{line!r} !~ {rx!r}"
    assert_well_formed(gateway.log())


def test_client_vanishes_lost(gateway):
    start = len(gateway.log())
    c = RawSMTP(gateway.port)
    icid = icid_of_next(gateway, start)
    c.ehlo()
    c.close()
    gateway.wait_log(rf"Info: ICID {icid} lost$", start=start)
    assert f"ICID {icid} close" not in gateway.log()


def test_client_vanishes_mid_data_aborted(gateway):
    start = len(gateway.log())
    c = RawSMTP(gateway.port)
    icid = icid_of_next(gateway, start)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    mid = int(gateway.wait_log(rf"Start MID (\d+) ICID {icid}$", start=start).group(1))
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: half\r\n\r\nhalf a mess")
    c.sock.shutdown(socket.SHUT_WR)
    assert c.closed()
    gateway.wait_log(rf"Message aborted MID {mid} Receiving aborted", start=start)
    gateway.wait_log(rf"ICID {icid} lost$", start=start)
    assert gateway.spool_messages() == []
    assert f"MID {mid} queued" not in gateway.log()


def test_client_vanishes_mid_bdat_aborted(gateway):
    start = len(gateway.log())
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.send(b"BDAT 1000 LAST\r\nSubject: part")
    c.close()
    gateway.wait_log(r"Message aborted MID \d+ Receiving aborted", start=start)
    gateway.wait_log(r"ICID \d+ lost$", start=start)
    assert gateway.spool_messages() == []


def test_header_values_escaped_no_forged_line(gateway):
    c = RawSMTP(gateway.port)
    content = (b"Subject: line one\r\n\tInfo: MID 999 queued for delivery\r\n it's\r\n"
               b"Message-ID: <it's\r\n @x>\r\n\r\nbody\r\n")
    code, lines = c.message("o'brien@example.org", ["b@example.com"], content)
    assert code == 250
    mid = int(lines[-1].split()[2])
    gateway.wait_log(rf"MID {mid} queued for delivery")
    log = gateway.log()
    assert_well_formed(log)
    assert not re.search(r"^(?:" + STAMP + r")?\s*Info: MID 999", log, re.M)
    subj = gateway.wait_log(rf"MID {mid} Subject '(.*)'$").group(1)
    assert subj == r"line one\x09Info: MID 999 queued for delivery it\'s"
    assert gateway.wait_log(rf"MID {mid} Message-ID '(.*)'$").group(1) == r"<it\'s @x>"
    gateway.wait_log(rf"MID {mid} ICID \d+ From: <o\\'brien@example\.org>$")
    (m,) = gateway.spool_messages()
    assert m["subject"] == "line one\tInfo: MID 999 queued for delivery it's"


def test_ids_monotonic_across_restart(make_gateway):
    gw = make_gateway()
    c = RawSMTP(gw.port)
    code, lines = c.message("a@example.org", ["b@example.com"], b"Subject: 1\r\n\r\nx\r\n")
    assert code == 250
    c.expect("QUIT", 221)
    before = gw.spool_messages()
    log = gw.log()
    max_icid = max(int(x) for x in re.findall(r"New SMTP ICID (\d+)", log))
    max_mid = max(int(x) for x in re.findall(r"Start MID (\d+)", log))
    gw.stop()
    gw.start()
    start = len(gw.log())
    c = RawSMTP(gw.port)
    icid = icid_of_next(gw, start)
    code, lines = c.message("a@example.org", ["b@example.com"], b"Subject: 2\r\n\r\ny\r\n")
    assert code == 250
    mid = int(lines[-1].split()[2])
    assert icid > max_icid
    assert mid > max_mid
    after = gw.spool_messages()
    assert after[:-1] == before
    assert after[-1]["mid"] == mid and after[-1]["icid"] == icid
