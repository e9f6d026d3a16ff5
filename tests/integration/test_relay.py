"""Relay access: only relay_domains (and bare postmaster) are accepted; the
classic routing tricks are refused, never answered 250."""
import pytest

from conftest import RawSMTP

ACCEPTED = [
    "user@example.com",
    "User.Name+tag@EXAMPLE.COM",
    "user@Example.Com",
    "user@a.sub.example.net",
    "user@deep.er.sub.example.net",
    "user@A.SUB.EXAMPLE.NET",
    "postmaster",
    "PostMaster",
    "postmaster@example.com",
]

REFUSED_RELAY = [
    "user@foreign.org",
    "user@sub.example.net",          # ".sub.example.net" is only below it
    "user@example.net",
    "user@xsub.example.net",         # suffix match must be on a label boundary
    "user@example.com.foreign.org",
    "user@notexample.com",
    "user@sub.example.com",          # exact entry: no subdomains
    "postmaster@foreign.org",
    "user%foreign.org@example.com",  # percent hack
    "foreign.org!user@example.com",  # bang path
    '"user@foreign.org"@example.com',  # quoted local part
    '"user%foreign.org"@example.com',
    '"foreign.org!user"@example.com',
    '"user\\@foreign.org"@example.com',
    "@example.com:user@foreign.org",  # source route
    "@example.com,@example.com:user@foreign.org",
    "user@[127.0.0.1]",               # IP literal
    "user@[IPv6:::1]",
]

# Refused either by the relay check (554 5.7.1) or as syntax (5xx).
REFUSED_ANY = [
    "user@foreign.org.",
    "user@example.com.",
    "user@@example.com",
    "user@example..com",
    "user@.example.com",
    "user@",
    "@example.com",
    "user@foreign.org@example.com",
    "<user@example.com>",
    "user@example.com>",
    "",
    "user@exam ple.com",
]


def session(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.expect("MAIL FROM:<relay-test@example.org>", 250, "2.1.0")
    return c


def test_relay_domains_and_postmaster_accepted(gateway):
    c = session(gateway)
    bad = []
    for a in ACCEPTED:
        code, lines = c.cmd(f"RCPT TO:<{a}>")
        if code != 250:
            bad.append((a, code, lines))
    assert bad == []


@pytest.mark.parametrize("addr", REFUSED_RELAY)
def test_relay_refused_554_571(make_gateway, addr):
    gw = make_gateway()
    c = session(gw)
    code, lines = c.cmd(f"RCPT TO:<{addr}>")
    assert (code, lines[-1][:6]) == (554, "5.7.1 "), (addr, code, lines)
    # nothing was accepted: DATA has no recipient
    c.expect("DATA", 554, "5.5.1")
    gw.wait_log(r"MID \d+ ICID \d+ To: <.*> Rejected by RAT \(")


def test_relay_refused_or_syntax_error(gateway):
    c = session(gateway)
    wrong = []
    for a in REFUSED_ANY:
        code, lines = c.cmd(f"RCPT TO:<{a}>")
        if not (500 <= code <= 599 and lines[-1][:2] == "5."):
            wrong.append((a, code, lines))
        elif code == 554 and not lines[-1].startswith("5.7.1 "):
            wrong.append((a, code, lines))
    c.expect("DATA", 554, "5.5.1")
    assert wrong == []


def test_trailing_dot_is_a_syntax_error(gateway):
    c = session(gateway)
    for a in ("user@foreign.org.", "user@example.com."):
        code, lines = c.cmd(f"RCPT TO:<{a}>")
        assert code in (501, 554), (a, code, lines)
        assert lines[-1][:6] in ("5.1.3 ", "5.7.1 "), (a, lines)


def test_relay_denied_reply_and_log(gateway):
    c = session(gateway)
    code, lines = c.cmd("RCPT TO:<user%foreign.org@example.com>")
    assert code == 554
    assert lines[-1] == "5.7.1 <user%foreign.org@example.com>: Relay access denied"
    gateway.wait_log(r"MID \d+ ICID \d+ To: <user%foreign.org@example.com> Rejected by RAT "
                     r"\(routing character in local part\)")
    code, lines = c.cmd("RCPT TO:<u@foreign.org>")
    gateway.wait_log(r"To: <u@foreign.org> Rejected by RAT \(foreign domain\)")
    code, lines = c.cmd("RCPT TO:<u@[127.0.0.1]>")
    gateway.wait_log(r"To: <u@\[127.0.0.1\]> Rejected by RAT \(domain literal\)")


def test_uppercase_domain_spooled(gateway):
    c = RawSMTP(gateway.port)
    code, lines = c.message("a@example.org", ["Bob@EXAMPLE.COM", "postmaster"],
                            b"Subject: case\r\n\r\nx\r\n")
    assert code == 250
    (m,) = gateway.spool_messages()
    # the domain is case-insensitive; the local part is kept as sent
    assert [r.split("@")[0] for r in m["rcpts"]] == ["Bob", "postmaster"]
    assert m["rcpts"][0].lower() == "bob@example.com"


def test_empty_relay_domains_refuses_all(make_gateway):
    gw = make_gateway({"relay_domains": []})
    c = session(gw)
    c.expect("RCPT TO:<user@example.com>", 554, "5.7.1")
    c.expect("RCPT TO:<postmaster>", 250, "2.1.5")
