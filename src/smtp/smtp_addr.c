/*
 * smtp_addr: the one strict RFC 5321 path parser and the relay check (see
 * smtp_addr.h for what is accepted and why there is only one parser).
 *
 * Design: a recursive-descent parser over (pointer, length), one small
 * function per grammar rule of RFC 5321 section 4.1.2, extended by RFC 6531
 * section 3.3 when SMTPUTF8 was given. It never allocates: the result is
 * built in the caller's struct smtp_path, whose buffers can hold any path
 * that passed the SMTP_PATH_MAX check (the mailbox is never longer than the
 * path it came from, and dequoting only shortens).
 *
 * Order of checks, so one input always gets one status:
 *   1. longer than SMTP_PATH_MAX          -> TOO_LONG
 *   2. not "<" ... ">"                    -> SYNTAX
 *   3. an 8-bit byte without SMTPUTF8     -> NON_ASCII
 *   4. "<>" / "<postmaster>" by flags     -> OK / NULL_NOT_ALLOWED / SYNTAX
 *   5. source route, local part, domain   -> OK / SYNTAX
 * On any error the output is reset to the empty (null) path, so a caller
 * that ignores the status still cannot act on a half-parsed mailbox.
 *
 * Invariant on success: mailbox is NUL-terminated, contains no NUL, and
 * "<" mailbox ">" parses again to the same mailbox (fuzzed).
 */
#include "smtp/smtp_addr.h"

#include <arpa/inet.h>
#include <string.h>

static bool addr_is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool addr_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* ASCII-only case folding: non-ASCII (UTF-8) octets are left as they are. */
static char addr_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool addr_equal_nocase(const char *s, size_t len, const char *lit)
{
    if (strlen(lit) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (addr_lower(s[i]) != addr_lower(lit[i]))
            return false;
    }
    return true;
}

/* atext (RFC 5322 3.2.3, used by RFC 5321 Atom). */
static bool addr_is_atext(unsigned char c)
{
    return addr_is_alpha(c) || addr_is_digit(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

size_t smtp_utf8_char_len(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    if (len == 0)
        return 0;
    if (p[0] < 0x80)
        return 1;
    /* RFC 3629 section 4 table: the second octet's range depends on the
     * first, which is what excludes overlongs, surrogates and > U+10FFFF. */
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        if (p[0] == 0xe0)
            lo = 0xa0;
        else if (p[0] == 0xed)
            hi = 0x9f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        if (p[0] == 0xf0)
            lo = 0x90;
        else if (p[0] == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (len < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    }
    return n;
}

static bool addr_has_8bit(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] >= 0x80)
            return true;
    }
    return false;
}

/* Check one sub-domain (RFC 5321 4.1.2: Let-dig [Ldh-str]); with utf8 a
 * well-formed UTF-8 character counts as a Let-dig (RFC 6531 3.3 U-label). */
static enum smtp_addr_status addr_check_label(const char *s, size_t len, bool utf8)
{
    bool non_ascii = false;
    if (len == 0)
        return SMTP_ADDR_SYNTAX; /* leading, trailing or doubled dot */
    if (s[0] == '-' || s[len - 1] == '-')
        return SMTP_ADDR_SYNTAX;
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t n = utf8 ? smtp_utf8_char_len(s + i, len - i) : 0;
            if (n == 0)
                return utf8 ? SMTP_ADDR_SYNTAX : SMTP_ADDR_NON_ASCII;
            non_ascii = true;
            i += n;
            continue;
        }
        if (!addr_is_alpha(c) && !addr_is_digit(c) && c != '-')
            return SMTP_ADDR_SYNTAX;
        i++;
    }
    /* 63 octets per label: RFC 5321 4.5.3.1.2 / RFC 1035 2.3.4. The limit
     * binds the A-label a U-label becomes, which we cannot compute without
     * Punycode; the U-label is bounded by the domain limit instead. */
    if (!non_ascii && len > 63)
        return SMTP_ADDR_SYNTAX;
    return SMTP_ADDR_OK;
}

/* Domain = sub-domain *("." sub-domain)  (RFC 5321 4.1.2) */
static enum smtp_addr_status addr_check_domain(const char *s, size_t len, bool utf8)
{
    /* 255 octets: RFC 5321 4.5.3.1.2. Unreachable through a path that passed
     * SMTP_PATH_MAX, kept so the rule holds for any caller. */
    if (len > SMTP_DOMAIN_MAX)
        return SMTP_ADDR_TOO_LONG;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.')
            continue;
        enum smtp_addr_status st = addr_check_label(s + start, i - start, utf8);
        if (st != SMTP_ADDR_OK)
            return st;
        start = i + 1;
    }
    return SMTP_ADDR_OK;
}

/* Whether every octet of s[0..len) is in the NUL-terminated set. */
static bool addr_only(const char *s, size_t len, const char *set)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0' || strchr(set, s[i]) == NULL)
            return false;
    }
    return true;
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
 * General-address-literal ) "]"  (RFC 5321 4.1.3). s excludes the brackets.
 * The text is checked against a character set first so that inet_pton, which
 * stops at a NUL, sees exactly the bytes we were given. */
static enum smtp_addr_status addr_check_literal(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];

    if (len >= 5 && addr_equal_nocase(s, 5, "IPv6:")) {
        s += 5;
        len -= 5;
        if (len == 0 || len >= sizeof(buf) || !addr_only(s, len, "0123456789abcdefABCDEF:."))
            return SMTP_ADDR_SYNTAX;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return inet_pton(AF_INET6, buf, bin) == 1 ? SMTP_ADDR_OK : SMTP_ADDR_SYNTAX;
    }
    /* Anything else with a ':' is a General-address-literal
     * (Standardized-tag ":" 1*dcontent): no tag besides IPv6 is registered
     * and we would not know how to route to one. Leading zeros in IPv4 are
     * refused by inet_pton, which removes any octal/decimal ambiguity. */
    if (len == 0 || len >= sizeof(buf) || !addr_only(s, len, "0123456789."))
        return SMTP_ADDR_SYNTAX;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET, buf, bin) == 1 ? SMTP_ADDR_OK : SMTP_ADDR_SYNTAX;
}

/* A-d-l = At-domain *( "," At-domain ) ":"; At-domain = "@" Domain
 * (RFC 5321 4.1.2). Returns the octets consumed including the ':', or 0. */
static size_t addr_skip_route(const char *s, size_t len, bool utf8)
{
    const char *colon = memchr(s, ':', len);
    if (colon == NULL)
        return 0;
    size_t end = (size_t)(colon - s);
    size_t start = 0;
    for (size_t i = 0; i <= end; i++) {
        if (i < end && s[i] != ',')
            continue;
        if (i - start < 2 || s[start] != '@')
            return 0;
        if (addr_check_domain(s + start + 1, i - start - 1, utf8) != SMTP_ADDR_OK)
            return 0;
        start = i + 1;
    }
    return end + 1;
}

/* Append c to the dequoted local part. */
static void addr_put_dequoted(struct smtp_path *out, char c)
{
    out->local_dequoted[out->local_dequoted_len++] = c;
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE (RFC 5321 4.1.2). Returns the
 * octets consumed including both quotes, or 0. */
static size_t addr_parse_quoted(const char *s, size_t len, bool utf8, struct smtp_path *out)
{
    size_t i = 1;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            return i + 1;
        if (c == '\\') {
            /* quoted-pairSMTP = %d92 %d32-126: ASCII only, even in RFC 6531 */
            if (i + 1 >= len || (unsigned char)s[i + 1] < 32 || (unsigned char)s[i + 1] > 126)
                return 0;
            addr_put_dequoted(out, s[i + 1]);
            i += 2;
        } else if (c >= 0x80) {
            size_t n = utf8 ? smtp_utf8_char_len(s + i, len - i) : 0;
            if (n == 0)
                return 0;
            for (size_t k = 0; k < n; k++)
                addr_put_dequoted(out, s[i + k]);
            i += n;
        } else if (c >= 32 && c <= 126) {
            addr_put_dequoted(out, (char)c); /* qtextSMTP: all but '"' '\' */
            i++;
        } else {
            return 0;
        }
    }
    return 0; /* no closing quote */
}

/* Dot-string = Atom *("." Atom) (RFC 5321 4.1.2). Ends at the first octet
 * that is neither atext nor '.'. Returns the octets consumed, or 0. */
static size_t addr_parse_dotstring(const char *s, size_t len, bool utf8, struct smtp_path *out)
{
    size_t i = 0;
    size_t atom = 0; /* octets in the current atom */
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t n = 1;
        if (c == '.') {
            if (atom == 0)
                return 0; /* leading or doubled dot */
            atom = 0;
        } else if (c >= 0x80 && utf8) {
            n = smtp_utf8_char_len(s + i, len - i);
            if (n == 0)
                return 0;
            atom += n;
        } else if (addr_is_atext(c)) {
            atom++;
        } else {
            break;
        }
        for (size_t k = 0; k < n; k++)
            addr_put_dequoted(out, s[i + k]);
        i += n;
    }
    return atom == 0 ? 0 : i; /* empty, or a trailing dot */
}

/* Mailbox = Local-part "@" ( Domain / address-literal ), written into out. */
static enum smtp_addr_status addr_parse_mailbox(const char *s, size_t len, bool utf8,
                                                struct smtp_path *out)
{
    size_t local;
    if (len > 0 && s[0] == '"') {
        local = addr_parse_quoted(s, len, utf8, out);
        out->quoted_local = true;
    } else {
        local = addr_parse_dotstring(s, len, utf8, out);
    }
    if (local == 0 || local >= len || s[local] != '@')
        return SMTP_ADDR_SYNTAX;

    const char *dom = s + local + 1;
    size_t dlen = len - local - 1;
    enum smtp_addr_status st;
    if (dlen > 0 && dom[0] == '[') {
        if (dlen < 2 || dom[dlen - 1] != ']')
            return SMTP_ADDR_SYNTAX;
        st = addr_check_literal(dom + 1, dlen - 2);
        out->domain_literal = true;
    } else {
        st = addr_check_domain(dom, dlen, utf8);
    }
    if (st != SMTP_ADDR_OK)
        return st;

    memcpy(out->mailbox, s, local);
    out->mailbox[local] = '@';
    for (size_t i = 0; i < dlen; i++)
        out->mailbox[local + 1 + i] = addr_lower(dom[i]);
    out->len = len;
    out->mailbox[len] = '\0';
    out->local_len = local;
    out->domain = out->mailbox + local + 1;
    out->domain_len = dlen;
    return SMTP_ADDR_OK;
}

/* Steps 3-5 of the file comment, on the path without its angle brackets. */
static enum smtp_addr_status addr_parse_inner(const char *s, size_t len, unsigned flags,
                                              struct smtp_path *out)
{
    bool utf8 = (flags & SMTP_ADDR_UTF8) != 0;
    if (!utf8 && addr_has_8bit(s, len))
        return SMTP_ADDR_NON_ASCII; /* RFC 6531 3.2: needs SMTPUTF8 */
    if (len == 0) {
        if (!(flags & SMTP_ADDR_ALLOW_NULL))
            return SMTP_ADDR_NULL_NOT_ALLOWED;
        out->is_null = true;
        return SMTP_ADDR_OK;
    }
    /* RFC 5321 4.5.1: "postmaster" without a domain, case-insensitive, is
     * valid as a recipient only. Kept as sent, for the log and delivery. */
    if (addr_equal_nocase(s, len, "postmaster")) {
        if (!(flags & SMTP_ADDR_ALLOW_POSTMASTER))
            return SMTP_ADDR_SYNTAX;
        memcpy(out->mailbox, s, len);
        out->mailbox[len] = '\0';
        out->len = out->local_len = len;
        memcpy(out->local_dequoted, s, len);
        out->local_dequoted_len = len;
        out->is_postmaster = true;
        return SMTP_ADDR_OK;
    }
    if (s[0] == '@') {
        size_t route = addr_skip_route(s, len, utf8);
        if (route == 0)
            return SMTP_ADDR_SYNTAX;
        out->had_source_route = true;
        s += route;
        len -= route;
    }
    enum smtp_addr_status st = addr_parse_mailbox(s, len, utf8, out);
    out->utf8 = addr_has_8bit(out->mailbox, out->len); /* route dropped */
    return st;
}

/* The empty path: what out holds before parsing and after any error. */
static void addr_reset(struct smtp_path *out)
{
    memset(out, 0, sizeof(*out));
    out->domain = "";
}

enum smtp_addr_status smtp_path_parse(const char *s, size_t len, unsigned flags,
                                      struct smtp_path *out)
{
    addr_reset(out);
    /* 256 octets including the brackets: RFC 5321 4.5.3.1.3. Checked first,
     * so nothing below ever sees more than the output buffers can hold. */
    if (len > SMTP_PATH_MAX)
        return SMTP_ADDR_TOO_LONG;
    if (len < 2 || s[0] != '<' || s[len - 1] != '>')
        return SMTP_ADDR_SYNTAX;
    enum smtp_addr_status st = addr_parse_inner(s + 1, len - 2, flags, out);
    if (st != SMTP_ADDR_OK)
        addr_reset(out);
    return st;
}

/* Whether the user name the next hop will see could route the message on:
 * '%' (the "percent hack"), '!' (UUCP bang path) and '@' (a quoted or
 * escaped second address) are all still honoured by some MTAs. */
static bool addr_has_routing_char(const struct smtp_path *p)
{
    for (size_t i = 0; i < p->local_dequoted_len; i++) {
        char c = p->local_dequoted[i];
        if (c == '%' || c == '!' || c == '@')
            return true;
    }
    return false;
}

enum smtp_relay_verdict
smtp_relay_check(const struct smtp_path *rcpt,
                 bool (*is_relay_domain)(void *ctx, const char *domain, size_t len), void *ctx)
{
    if (rcpt->is_postmaster)
        return SMTP_RELAY_OK;
    if (rcpt->domain_literal)
        return SMTP_RELAY_DOMAIN_LITERAL;
    if (addr_has_routing_char(rcpt))
        return SMTP_RELAY_ROUTING_CHAR;
    /* The null path (or a failed parse) has no domain: never relayable. */
    if (rcpt->domain_len == 0 || !is_relay_domain(ctx, rcpt->domain, rcpt->domain_len))
        return SMTP_RELAY_FOREIGN_DOMAIN;
    return SMTP_RELAY_OK;
}

const char *smtp_relay_verdict_text(enum smtp_relay_verdict v)
{
    switch (v) {
    case SMTP_RELAY_OK:
        return "ok";
    case SMTP_RELAY_FOREIGN_DOMAIN:
        return "foreign domain";
    case SMTP_RELAY_DOMAIN_LITERAL:
        return "domain literal";
    case SMTP_RELAY_ROUTING_CHAR:
        return "routing character in local part";
    }
    return "unknown verdict";
}
