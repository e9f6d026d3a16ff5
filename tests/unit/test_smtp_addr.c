/*
 * Unit tests for smtp_addr: the RFC 5321 path parser and the relay check.
 * One table of paths with the expected status and, on success, the mailbox,
 * dequoted local part, domain and flags; one table of relay verdicts with
 * every classic open-relay trick; limits built at run time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtp/smtp_addr.h"

#define S(x) x, sizeof(x) - 1

#define CHECK(cond, i)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg("case %zu: %s", (size_t)(i), #cond);                                          \
    } while (0)

enum {
    NUL = SMTP_ADDR_ALLOW_NULL,
    PM = SMTP_ADDR_ALLOW_POSTMASTER,
    U8 = SMTP_ADDR_UTF8,
};

/* expected output bits */
enum {
    X_NULL = 1,
    X_PM = 2,
    X_ROUTE = 4,
    X_QUOTED = 8,
    X_LITERAL = 16,
    X_UTF8 = 32,
};

struct path_case {
    const char *path;
    size_t len;
    unsigned flags;
    enum smtp_addr_status status;
    const char *mailbox; /* OK only */
    const char *dequoted;
    const char *domain;
    unsigned bits;
};

#define OK   SMTP_ADDR_OK
#define SYN  SMTP_ADDR_SYNTAX
#define LONG SMTP_ADDR_TOO_LONG
#define NONA SMTP_ADDR_NON_ASCII
#define NNA  SMTP_ADDR_NULL_NOT_ALLOWED

static const struct path_case path_cases[] = {
    /* plain mailboxes */
    {S("<user@example.com>"), 0, OK, "user@example.com", "user", "example.com", 0},
    {S("<User@Example.COM>"), 0, OK, "User@example.com", "User", "example.com", 0},
    {S("<a.b.c@d.e>"), 0, OK, "a.b.c@d.e", "a.b.c", "d.e", 0},
    {S("<a+tag@x.y>"), 0, OK, "a+tag@x.y", "a+tag", "x.y", 0},
    {S("<!#$%&'*+-/=?^_`{|}~@x>"), 0, OK, "!#$%&'*+-/=?^_`{|}~@x", "!#$%&'*+-/=?^_`{|}~", "x", 0},
    {S("<user@localhost>"), 0, OK, "user@localhost", "user", "localhost", 0},
    {S("<u@123.com>"), 0, OK, "u@123.com", "u", "123.com", 0},
    {S("<u@a-b.c>"), 0, OK, "u@a-b.c", "u", "a-b.c", 0},
    {S("<u@xn--bcher-kva.example>"), 0, OK, "u@xn--bcher-kva.example", "u", "xn--bcher-kva.example",
     0},
    {S("<u@1.2.3.4>"), 0, OK, "u@1.2.3.4", "u", "1.2.3.4", 0},
    {S("<u@EXAMPLE.COM>"), NUL | PM, OK, "u@example.com", "u", "example.com", 0},
    /* source routes: parsed strictly, dropped */
    {S("<@a.example:user@b.example>"), 0, OK, "user@b.example", "user", "b.example", X_ROUTE},
    {S("<@a,@b.c:user@d>"), 0, OK, "user@d", "user", "d", X_ROUTE},
    {S("<@A.EXAMPLE,@B:user@C.example>"), 0, OK, "user@c.example", "user", "c.example", X_ROUTE},
    {S("<@a:\"x y\"@d>"), 0, OK, "\"x y\"@d", "x y", "d", X_ROUTE | X_QUOTED},
    {S("<@a:u@[192.0.2.1]>"), 0, OK, "u@[192.0.2.1]", "u", "[192.0.2.1]", X_ROUTE | X_LITERAL},
    /* quoted local parts: kept as written, dequoted for the relay check */
    {S("<\"john doe\"@x>"), 0, OK, "\"john doe\"@x", "john doe", "x", X_QUOTED},
    {S("<\"a@b\"@x>"), 0, OK, "\"a@b\"@x", "a@b", "x", X_QUOTED},
    {S("<\"a%b!c\"@x>"), 0, OK, "\"a%b!c\"@x", "a%b!c", "x", X_QUOTED},
    {S("<\"a\\\"b\"@x>"), 0, OK, "\"a\\\"b\"@x", "a\"b", "x", X_QUOTED},
    {S("<\"a\\\\b\"@x>"), 0, OK, "\"a\\\\b\"@x", "a\\b", "x", X_QUOTED},
    {S("<\"\\a\"@x>"), 0, OK, "\"\\a\"@x", "a", "x", X_QUOTED},
    {S("<\"a>b\"@x>"), 0, OK, "\"a>b\"@x", "a>b", "x", X_QUOTED},
    {S("<\"\"@x>"), 0, OK, "\"\"@x", "", "x", X_QUOTED},
    {S("<\"plain\"@X.Y>"), 0, OK, "\"plain\"@x.y", "plain", "x.y", X_QUOTED},
    /* domain literals */
    {S("<u@[192.0.2.1]>"), 0, OK, "u@[192.0.2.1]", "u", "[192.0.2.1]", X_LITERAL},
    {S("<u@[0.0.0.0]>"), 0, OK, "u@[0.0.0.0]", "u", "[0.0.0.0]", X_LITERAL},
    {S("<u@[255.255.255.255]>"), 0, OK, "u@[255.255.255.255]", "u", "[255.255.255.255]", X_LITERAL},
    {S("<u@[IPv6:2001:db8::1]>"), 0, OK, "u@[ipv6:2001:db8::1]", "u", "[ipv6:2001:db8::1]",
     X_LITERAL},
    {S("<u@[ipv6:2001:DB8::1]>"), 0, OK, "u@[ipv6:2001:db8::1]", "u", "[ipv6:2001:db8::1]",
     X_LITERAL},
    {S("<u@[IPv6:::]>"), 0, OK, "u@[ipv6:::]", "u", "[ipv6:::]", X_LITERAL},
    {S("<u@[IPv6:::ffff:192.0.2.1]>"), 0, OK, "u@[ipv6:::ffff:192.0.2.1]", "u",
     "[ipv6:::ffff:192.0.2.1]", X_LITERAL},
    {S("<u@[IPv6:1:2:3:4:5:6:7:8]>"), 0, OK, "u@[ipv6:1:2:3:4:5:6:7:8]", "u",
     "[ipv6:1:2:3:4:5:6:7:8]", X_LITERAL},
    /* null path */
    {S("<>"), NUL, OK, "", "", "", X_NULL},
    {S("<>"), NUL | PM | U8, OK, "", "", "", X_NULL},
    {S("<>"), 0, NNA, NULL, NULL, NULL, 0},
    {S("<>"), PM | U8, NNA, NULL, NULL, NULL, 0},
    /* bare postmaster, kept as sent */
    {S("<postmaster>"), PM, OK, "postmaster", "postmaster", "", X_PM},
    {S("<PostMaster>"), PM, OK, "PostMaster", "PostMaster", "", X_PM},
    {S("<POSTMASTER>"), PM | NUL, OK, "POSTMASTER", "POSTMASTER", "", X_PM},
    {S("<postmaster>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<postmaster>"), NUL | U8, SYN, NULL, NULL, NULL, 0},
    {S("<postmaster@Example.com>"), 0, OK, "postmaster@example.com", "postmaster", "example.com",
     0},
    {S("<postmastr>"), PM, SYN, NULL, NULL, NULL, 0},
    {S("<postmaster >"), PM, SYN, NULL, NULL, NULL, 0},
    {S("<\"postmaster\">"), PM, SYN, NULL, NULL, NULL, 0},
    {S("<@a:postmaster>"), PM, SYN, NULL, NULL, NULL, 0},
    /* UTF-8 with SMTPUTF8 (RFC 6531) */
    {S("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>"), U8, OK,
     "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a",
     "\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a", X_UTF8},
    {S("<u@b\xc3\xbc"
       "cher.example>"),
     U8, OK,
     "u@b\xc3\xbc"
     "cher.example",
     "u",
     "b\xc3\xbc"
     "cher.example",
     X_UTF8},
    {S("<u@B\xc3\x9c"
       "CHER.Example>"),
     U8, OK,
     "u@b\xc3\x9c"
     "cher.example",
     "u",
     "b\xc3\x9c"
     "cher.example",
     X_UTF8},
    {S("<\"\xc3\xbc x\"@x>"), U8, OK, "\"\xc3\xbc x\"@x", "\xc3\xbc x", "x", X_UTF8 | X_QUOTED},
    {S("<\xf0\x9f\x98\x80@x>"), U8, OK, "\xf0\x9f\x98\x80@x", "\xf0\x9f\x98\x80", "x", X_UTF8},
    {S("<user@example.com>"), U8, OK, "user@example.com", "user", "example.com", 0},
    {S("<@r\xc3\xbc:u@x>"), U8, OK, "u@x", "u", "x", X_ROUTE},
    /* 8-bit without SMTPUTF8 */
    {S("<\xc3\xbc@x>"), 0, NONA, NULL, NULL, NULL, 0},
    {S("<u@b\xc3\xbc"
       "cher.example>"),
     NUL | PM, NONA, NULL, NULL, NULL, 0},
    {S("<\"\xc3\xbc\"@x>"), 0, NONA, NULL, NULL, NULL, 0},
    {S("<\xff@x>"), 0, NONA, NULL, NULL, NULL, 0},
    {S("<@r\xc3\xbc:u@x>"), 0, NONA, NULL, NULL, NULL, 0},
    {S("<u@x\x80 junk"), 0, SYN, NULL, NULL, NULL, 0},
    /* ill-formed UTF-8 even with SMTPUTF8 */
    {S("<\xff@x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<u@\xc3\x28.com>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<\xc0\xaf@x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<\xe0\x80\xaf@x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<\xed\xa0\x80@x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<\xf4\x90\x80\x80@x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<\xf5\x80\x80\x80@x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<u@x\xe2\x82>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<\xbf@x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<\"\xc3\"@x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<u@-\xc3\xbc.x>"), U8, SYN, NULL, NULL, NULL, 0},
    {S("<\"\\\xc3\xbc\"@x>"), U8, SYN, NULL, NULL, NULL, 0},
    /* not a path at all */
    {S(""), NUL | PM, SYN, NULL, NULL, NULL, 0},
    {S("<"), NUL, SYN, NULL, NULL, NULL, 0},
    {S(">"), NUL, SYN, NULL, NULL, NULL, 0},
    {S("user@x"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@x"), 0, SYN, NULL, NULL, NULL, 0},
    {S("user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@x>>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<<user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("< user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@x >"), 0, SYN, NULL, NULL, NULL, 0},
    {S("< >"), NUL, SYN, NULL, NULL, NULL, 0},
    /* mailbox shape */
    {S("<user>"), PM, SYN, NULL, NULL, NULL, 0},
    {S("<@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@x.y@z>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<a@b@c>"), 0, SYN, NULL, NULL, NULL, 0},
    /* domains */
    {S("<user@example.com.>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@.example.com>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@example..com>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@.>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@-example.com>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@example-.com>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@example.-com>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@->"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@exa_mple.com>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@exa mple.com>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@exa\"mple.com>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@example.com:25>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user@exam\0ple.com>"), 0, SYN, NULL, NULL, NULL, 0},
    /* local parts */
    {S("<.user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<user.@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<us..er@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<us er@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<us(er@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<us,er@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<us\"er\"@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<us\0er@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<us\\er@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"unterminated@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"a\"b@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"a\".b@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"a\x01\"@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"a\x7f\"@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"a\tb\"@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"a\\\x01\"@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"a\\\"@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<\"a\0\"@x>"), 0, SYN, NULL, NULL, NULL, 0},
    /* source routes, strictly */
    {S("<@a:>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a,:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a,b:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a,bc.d:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<xa.b:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a.:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a;@b:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a@b:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@[192.0.2.1]:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a:@b:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<a,@b:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a,,@b:user@x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<@a:<>>"), NUL, SYN, NULL, NULL, NULL, 0},
    /* address literals */
    {S("<u@[1.2.3]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[1.2.3.4.5]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[256.1.1.1]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[1.2.3.999]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[01.2.3.4]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[1.2.3.4.]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[1..3.4]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[ 1.2.3.4]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[1.2.3.4\0]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[1.2.3.4]x>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[1.2.3.4>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[0x7f.0.0.1]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[2130706433]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv4:1.2.3.4]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[x-tag:foo]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6:1::2::3]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6:2001:db8::1%eth0]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6:]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6:12345::]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6:1.2.3.4]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6:1:2:3:4:5:6:7:8:9]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6:::1\0]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6:0000:0000:0000:0000:0000:0000:0000:0000:0000]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[::1]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@[IPv6 ::1]>"), 0, SYN, NULL, NULL, NULL, 0},
    {S("<u@x.[1.2.3.4]>"), 0, SYN, NULL, NULL, NULL, 0},
};

static void check_path_case(size_t i, const struct path_case *c)
{
    struct smtp_path p;
    enum smtp_addr_status st = smtp_path_parse(c->path, c->len, c->flags, &p);
    if (st != c->status)
        fail_msg("case %zu: status %d, want %d", i, (int)st, (int)c->status);
    if (st != SMTP_ADDR_OK) {
        /* reset on error: nothing half-parsed to act on */
        CHECK(p.len == 0 && p.mailbox[0] == '\0' && p.domain_len == 0, i);
        CHECK(p.domain != NULL && p.domain[0] == '\0', i);
        return;
    }
    if (strcmp(p.mailbox, c->mailbox) != 0)
        fail_msg("case %zu: mailbox \"%s\", want \"%s\"", i, p.mailbox, c->mailbox);
    CHECK(p.len == strlen(c->mailbox), i);
    CHECK(p.local_dequoted_len == strlen(c->dequoted), i);
    CHECK(memcmp(p.local_dequoted, c->dequoted, p.local_dequoted_len) == 0, i);
    CHECK(p.domain_len == strlen(c->domain), i);
    CHECK(memcmp(p.domain, c->domain, p.domain_len) == 0, i);
    CHECK(p.domain[p.domain_len] == '\0', i);
    if (p.domain_len > 0) {
        CHECK(p.domain == p.mailbox + p.local_len + 1, i);
        CHECK(p.mailbox[p.local_len] == '@', i);
    } else {
        CHECK(p.local_len == p.len, i);
    }
    CHECK(p.is_null == !!(c->bits & X_NULL), i);
    CHECK(p.is_postmaster == !!(c->bits & X_PM), i);
    CHECK(p.had_source_route == !!(c->bits & X_ROUTE), i);
    CHECK(p.quoted_local == !!(c->bits & X_QUOTED), i);
    CHECK(p.domain_literal == !!(c->bits & X_LITERAL), i);
    CHECK(p.utf8 == !!(c->bits & X_UTF8), i);
}

static void test_path_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++)
        check_path_case(i, &path_cases[i]);
}

/* Property: "<" mailbox ">" parses back to the same mailbox, so the relay
 * decision taken on it is the one delivery will face. */
static void test_path_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *c = &path_cases[i];
        struct smtp_path p, q;
        if (smtp_path_parse(c->path, c->len, c->flags, &p) != SMTP_ADDR_OK)
            continue;
        char buf[SMTP_PATH_MAX + 3];
        int n = snprintf(buf, sizeof(buf), "<%s>", p.mailbox);
        CHECK(smtp_path_parse(buf, (size_t)n, c->flags, &q) == SMTP_ADDR_OK, i);
        CHECK(strcmp(p.mailbox, q.mailbox) == 0, i);
        CHECK(p.local_dequoted_len == q.local_dequoted_len, i);
        CHECK(memcmp(p.local_dequoted, q.local_dequoted, p.local_dequoted_len) == 0, i);
        CHECK(!q.had_source_route, i);
    }
}

/* Fill buf with "<" local "@" domain ">" where the domain is labels of
 * label_len octets ('b') joined by dots up to domain_len octets. */
static size_t make_path(char *buf, size_t local_len, size_t label_len, size_t domain_len)
{
    size_t o = 0;
    buf[o++] = '<';
    memset(buf + o, 'a', local_len);
    o += local_len;
    buf[o++] = '@';
    for (size_t k = 0; k < domain_len; k++)
        buf[o++] = ((k + 1) % (label_len + 1) == 0) ? '.' : 'b';
    buf[o++] = '>';
    return o;
}

static void test_path_limits(void **state)
{
    (void)state;
    char buf[1024];
    struct smtp_path p;
    size_t n;

    /* labels: 63 octets fine, 64 refused (RFC 5321 4.5.3.1.2) */
    n = make_path(buf, 1, 63, 63);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_OK);
    assert_int_equal(p.domain_len, 63);
    n = make_path(buf, 1, 64, 64);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_SYNTAX);
    n = make_path(buf, 1, 63, 63 + 1 + 63 + 1 + 63);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_OK);
    /* a 64-octet label in the middle, and in a source route */
    const char mid[] = "<u@a.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.c>";
    assert_int_equal(smtp_path_parse(mid, sizeof(mid) - 1, 0, &p), SMTP_ADDR_SYNTAX);
    const char route[] = "<@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb:u@c>";
    assert_int_equal(smtp_path_parse(route, sizeof(route) - 1, 0, &p), SMTP_ADDR_SYNTAX);

    /* path: exactly 256 octets fine, 257 too long (RFC 5321 4.5.3.1.3) */
    n = make_path(buf, 62, 63, 191);
    assert_int_equal(n, 256);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_OK);
    assert_int_equal(p.len, 254);
    assert_int_equal(strlen(p.mailbox), 254);
    n = make_path(buf, 63, 63, 191);
    assert_int_equal(n, 257);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_TOO_LONG);
    assert_int_equal(p.len, 0);

    /* a 253-octet domain (fine for DNS) cannot fit in a path: too long */
    n = make_path(buf, 1, 63, 253);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_TOO_LONG);
    /* a domain over 255 octets, likewise */
    n = make_path(buf, 1, 63, 300);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_TOO_LONG);

    /* the length check comes first, whatever the content */
    memset(buf, 0, 300);
    assert_int_equal(smtp_path_parse(buf, 300, 0, &p), SMTP_ADDR_TOO_LONG);
    memset(buf, '\xff', 300);
    assert_int_equal(smtp_path_parse(buf, 257, 0, &p), SMTP_ADDR_TOO_LONG);

    /* long local parts are accepted (VERP/SRS; RFC 5321 4.5.3.1.1 leeway) */
    n = make_path(buf, 200, 63, 10);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_OK);
    assert_int_equal(p.local_len, 200);

    /* a 256-octet path of quoted-pairs: the dequoted form fits too */
    n = 0;
    buf[n++] = '<';
    buf[n++] = '"';
    while (n < 256 - 4) {
        buf[n] = (n % 2 == 0) ? '\\' : 'q';
        n++;
    }
    memcpy(buf + n, "\"@x>", 4);
    n += 4;
    assert_int_equal(n, 256);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_OK);
    assert_int_equal(p.local_dequoted_len, (256 - 4 - 2) / 2);
}

/* A U-label is bounded by the domain limit, not the 63-octet A-label rule
 * (we cannot compute the A-label without Punycode). */
static void test_path_utf8_label_length(void **state)
{
    (void)state;
    char buf[300];
    struct smtp_path p;
    size_t n = 0;
    memcpy(buf, "<u@", 3);
    n = 3;
    for (int k = 0; k < 30; k++) { /* 30 x 3 octets = 90-octet label */
        memcpy(buf + n, "\xe4\xbe\x8b", 3);
        n += 3;
    }
    memcpy(buf + n, ".cn>", 4);
    n += 4;
    assert_int_equal(smtp_path_parse(buf, n, SMTP_ADDR_UTF8, &p), SMTP_ADDR_OK);
    assert_int_equal(p.domain_len, 93);
    assert_true(p.utf8);
    assert_int_equal(smtp_path_parse(buf, n, 0, &p), SMTP_ADDR_NON_ASCII);
}

static void test_utf8_char_len(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
        size_t want;
    } cases[] = {
        {S("a"), 1},
        {S("\x7f"), 1},
        {S("\xc2\x80"), 2},
        {S("\xdf\xbf"), 2},
        {S("\xe0\xa0\x80"), 3},
        {S("\xef\xbf\xbf"), 3},
        {S("\xed\x9f\xbf"), 3},
        {S("\xf0\x90\x80\x80"), 4},
        {S("\xf4\x8f\xbf\xbf"), 4},
        {S("\xc3\xa9xyz"), 2},
        {S(""), 0},
        {S("\x80"), 0},
        {S("\xbf"), 0},
        {S("\xc0\x80"), 0},
        {S("\xc1\xbf"), 0},
        {S("\xc2"), 0},
        {S("\xc2\x7f"), 0},
        {S("\xc2\xc0"), 0},
        {S("\xe0\x9f\xbf"), 0},
        {S("\xed\xa0\x80"), 0},
        {S("\xed\xbf\xbf"), 0},
        {S("\xe2\x82"), 0},
        {S("\xe2\x82\x41"), 0},
        {S("\xf0\x8f\xbf\xbf"), 0},
        {S("\xf4\x90\x80\x80"), 0},
        {S("\xf5\x80\x80\x80"), 0},
        {S("\xf8\x88\x80\x80\x80"), 0},
        {S("\xff"), 0},
        {S("\xf0\x90\x80"), 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK(smtp_utf8_char_len(cases[i].s, cases[i].len) == cases[i].want, i);
    /* explicit length: a sequence cut by len is not completed from memory */
    assert_int_equal(smtp_utf8_char_len("\xc3\xa9", 1), 0);
}

/* ---- relay check ---- */

static int relay_calls;

/* The relay domains of the test: compared exactly, so the callback also
 * checks the domain it gets is lower-cased with the right length. */
static bool test_is_relay(void *ctx, const char *domain, size_t len)
{
    static const char *const mine[] = {"example.com", "local.test", "b\xc3\xbc\x63her.test"};
    assert_ptr_equal(ctx, &relay_calls);
    relay_calls++;
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
        if (len == strlen(mine[i]) && memcmp(domain, mine[i], len) == 0)
            return true;
    }
    return false;
}

struct relay_case {
    const char *path;
    size_t len;
    unsigned flags;
    enum smtp_relay_verdict verdict;
};

static const struct relay_case relay_cases[] = {
    {S("<user@example.com>"), 0, SMTP_RELAY_OK},
    {S("<USER@EXAMPLE.COM>"), 0, SMTP_RELAY_OK},
    {S("<user@Local.Test>"), 0, SMTP_RELAY_OK},
    {S("<first.last+tag@example.com>"), 0, SMTP_RELAY_OK},
    {S("<\"john doe\"@example.com>"), 0, SMTP_RELAY_OK},
    {S("<\"user\"@example.com>"), 0, SMTP_RELAY_OK},
    {S("<u@B\xc3\xbc"
       "CHER.test>"),
     U8, SMTP_RELAY_OK},
    {S("<user@foreign.test>"), 0, SMTP_RELAY_FOREIGN_DOMAIN},
    {S("<user@example.com.foreign.test>"), 0, SMTP_RELAY_FOREIGN_DOMAIN},
    {S("<user@sub.example.com>"), 0, SMTP_RELAY_FOREIGN_DOMAIN},
    {S("<user@examplecom>"), 0, SMTP_RELAY_FOREIGN_DOMAIN},
    {S("<postmaster@foreign.test>"), PM, SMTP_RELAY_FOREIGN_DOMAIN},
    /* percent hack: user%foreign@local */
    {S("<user%foreign.test@example.com>"), 0, SMTP_RELAY_ROUTING_CHAR},
    {S("<\"user%foreign.test\"@example.com>"), 0, SMTP_RELAY_ROUTING_CHAR},
    /* UUCP bang path: foreign!user@local */
    {S("<foreign.test!user@example.com>"), 0, SMTP_RELAY_ROUTING_CHAR},
    {S("<\"foreign.test!user\"@example.com>"), 0, SMTP_RELAY_ROUTING_CHAR},
    /* quoted second address: "user@foreign"@local */
    {S("<\"user@foreign.test\"@example.com>"), 0, SMTP_RELAY_ROUTING_CHAR},
    {S("<\"user\\@foreign.test\"@example.com>"), 0, SMTP_RELAY_ROUTING_CHAR},
    {S("<\"user\\%foreign.test\"@example.com>"), 0, SMTP_RELAY_ROUTING_CHAR},
    /* source route: delivery uses the final mailbox only */
    {S("<@example.com:user@foreign.test>"), 0, SMTP_RELAY_FOREIGN_DOMAIN},
    {S("<@example.com,@local.test:user@foreign.test>"), 0, SMTP_RELAY_FOREIGN_DOMAIN},
    {S("<@foreign.test:user@example.com>"), 0, SMTP_RELAY_OK},
    /* IP literals, even of our own addresses */
    {S("<user@[192.0.2.1]>"), 0, SMTP_RELAY_DOMAIN_LITERAL},
    {S("<user@[127.0.0.1]>"), 0, SMTP_RELAY_DOMAIN_LITERAL},
    {S("<user@[IPv6:2001:db8::1]>"), 0, SMTP_RELAY_DOMAIN_LITERAL},
    {S("<user%foreign@[192.0.2.1]>"), 0, SMTP_RELAY_DOMAIN_LITERAL},
    /* bare postmaster: always accepted */
    {S("<postmaster>"), PM, SMTP_RELAY_OK},
    {S("<POSTMASTER>"), PM, SMTP_RELAY_OK},
    /* the null path has no domain */
    {S("<>"), NUL, SMTP_RELAY_FOREIGN_DOMAIN},
};

static void test_relay_check_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(relay_cases) / sizeof(relay_cases[0]); i++) {
        const struct relay_case *c = &relay_cases[i];
        struct smtp_path p;
        CHECK(smtp_path_parse(c->path, c->len, c->flags, &p) == SMTP_ADDR_OK, i);
        enum smtp_relay_verdict v = smtp_relay_check(&p, test_is_relay, &relay_calls);
        if (v != c->verdict)
            fail_msg("case %zu: verdict \"%s\", want \"%s\"", i, smtp_relay_verdict_text(v),
                     smtp_relay_verdict_text(c->verdict));
    }
}

/* The callback is not asked about paths that have no domain. */
static void test_relay_check_no_domain(void **state)
{
    (void)state;
    struct smtp_path p;
    relay_calls = 0;
    assert_int_equal(smtp_path_parse(S("<>"), NUL, &p), SMTP_ADDR_OK);
    assert_int_equal(smtp_relay_check(&p, test_is_relay, &relay_calls), SMTP_RELAY_FOREIGN_DOMAIN);
    assert_int_equal(smtp_path_parse(S("<postmaster>"), PM, &p), SMTP_ADDR_OK);
    assert_int_equal(smtp_relay_check(&p, test_is_relay, &relay_calls), SMTP_RELAY_OK);
    assert_int_equal(relay_calls, 0);
    /* a failed parse leaves a path no relay accepts */
    assert_int_equal(smtp_path_parse(S("<user@example.com.>"), 0, &p), SMTP_ADDR_SYNTAX);
    assert_int_equal(smtp_relay_check(&p, test_is_relay, &relay_calls), SMTP_RELAY_FOREIGN_DOMAIN);
    assert_int_equal(relay_calls, 0);
}

static void test_relay_verdict_text(void **state)
{
    (void)state;
    assert_string_equal(smtp_relay_verdict_text(SMTP_RELAY_OK), "ok");
    assert_string_equal(smtp_relay_verdict_text(SMTP_RELAY_FOREIGN_DOMAIN), "foreign domain");
    assert_string_equal(smtp_relay_verdict_text(SMTP_RELAY_DOMAIN_LITERAL), "domain literal");
    assert_string_equal(smtp_relay_verdict_text(SMTP_RELAY_ROUTING_CHAR),
                        "routing character in local part");
    assert_string_equal(smtp_relay_verdict_text((enum smtp_relay_verdict)99), "unknown verdict");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_parse_table),      cmocka_unit_test(test_path_roundtrip),
        cmocka_unit_test(test_path_limits),           cmocka_unit_test(test_path_utf8_label_length),
        cmocka_unit_test(test_utf8_char_len),         cmocka_unit_test(test_relay_check_table),
        cmocka_unit_test(test_relay_check_no_domain), cmocka_unit_test(test_relay_verdict_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
