/*
 * member: parse one sender group member into a tagged struct (syntax and
 * strictness rules in member.h).
 *
 * Design. The text is classified by its shape, once, and handed to exactly
 * one sub-parser: a keyword ("ALL", "SBRS[", "dnslist["), anything with a
 * ':' (IPv6), anything made only of digits, dots, '/' and '-' (IPv4), and
 * everything else is a host name or suffix. Each sub-parser is a cursor
 * over the text that either consumes it all or returns a reason; nothing is
 * allocated and no locale is consulted, so the same bytes always give the
 * same answer (the fuzz harness checks that a normalised member parses to
 * the same struct).
 *
 * Scores are read in thousandths as integers, so "SBRS[-3.0:-3]" compares
 * exactly and the [-10, 10] bounds are checked without rounding.
 */
#include "policy/member.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int to_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int to_upper(int c)
{
    return (c >= 'a' && c <= 'z') ? c - ('a' - 'A') : c;
}

/* Case-insensitive: does s start with the keyword kw? */
static bool starts_with_kw(const char *s, const char *kw)
{
    for (; *kw != '\0'; s++, kw++)
        if (to_lower((unsigned char)*s) != to_lower((unsigned char)*kw))
            return false;
    return true;
}

static bool eq_kw(const char *s, const char *kw)
{
    return strlen(s) == strlen(kw) && starts_with_kw(s, kw);
}

/* ---- domains ------------------------------------------------------------- */

const char *member_check_domain(char *s)
{
    if (*s == '\0')
        return "empty name";
    if (*s == '.')
        return "a name cannot start with a dot";
    /* Why 253/63: RFC 1035 2.3.4 (a name's text form, and one label). */
    if (strlen(s) > 253)
        return "name longer than 253 characters";
    char *p = s;
    while (*p != '\0') {
        char *label = p;
        for (; *p != '\0' && *p != '.'; p++) {
            if (!is_alpha((unsigned char)*p) && !is_digit((unsigned char)*p) && *p != '-' &&
                *p != '_')
                return "only letters, digits, '-', '_' and dots are allowed in a name";
            *p = (char)to_lower((unsigned char)*p);
        }
        size_t len = (size_t)(p - label);
        if (len == 0)
            return "empty label";
        if (len > 63)
            return "label longer than 63 characters";
        if (label[0] == '-' || p[-1] == '-')
            return "label starts or ends with a hyphen";
        if (*p == '.' && *++p == '\0')
            return "trailing dot is not allowed";
    }
    return NULL;
}

/* ---- IPv4 ---------------------------------------------------------------- */

/* One decimal octet: "0", or 1..3 digits without a leading zero, <= 255. */
static bool parse_octet(const char **sp, uint32_t *out)
{
    const char *s = *sp;
    uint32_t v = 0;
    size_t n = 0;
    while (is_digit((unsigned char)s[n]) && n < 4)
        v = v * 10 + (uint32_t)(s[n++] - '0');
    if (n == 0 || n > 3 || v > 255 || (n > 1 && s[0] == '0'))
        return false;
    *sp = s + n;
    *out = v;
    return true;
}

/* Four dotted octets; *sp advanced past them. */
static bool parse_v4_addr(const char **sp, uint32_t *out)
{
    uint32_t a = 0, o;
    for (int i = 0; i < 4; i++) {
        if (i > 0 && *(*sp)++ != '.')
            return false;
        if (!parse_octet(sp, &o))
            return false;
        a = a << 8 | o;
    }
    *out = a;
    return true;
}

/* A prefix length of 1..maxdigits digits without a leading zero, <= max. */
static bool parse_prefix(const char *s, unsigned max, unsigned *out)
{
    unsigned v = 0;
    size_t n = 0;
    for (; is_digit((unsigned char)s[n]); n++) {
        if (n == 3)
            return false;
        v = v * 10 + (unsigned)(s[n] - '0');
    }
    if (n == 0 || s[n] != '\0' || (n > 1 && s[0] == '0') || v > max)
        return false;
    *out = v;
    return true;
}

static const char *parse_v4(const char *s, struct member *m)
{
    static const char bad[] = "not a valid IPv4 address, CIDR, range or partial address";
    const char *p = s;
    uint32_t a = 0, o;
    int n = 0;

    m->kind = MEMBER_IPV4;
    /* Leading octets; a partial address ends right after a dot. */
    while (n < 4) {
        if (!parse_octet(&p, &o))
            return bad;
        a = a << 8 | o;
        n++;
        if (n < 4) {
            if (*p != '.')
                return n == 1 && *p == '\0' ? bad : "a partial IPv4 address must end with a dot";
            p++;
            if (*p == '\0') { /* "10.1.1." */
                unsigned shift = (unsigned)(4 - n) * 8;
                m->v4_lo = a << shift;
                m->v4_hi = m->v4_lo | ((UINT32_C(1) << shift) - 1);
                return NULL;
            }
        }
    }
    m->v4_lo = m->v4_hi = a;
    if (*p == '\0')
        return NULL;
    if (*p == '/') {
        unsigned len;
        if (!parse_prefix(p + 1, 32, &len))
            return "IPv4 prefix length must be 0..32";
        uint32_t host = len == 32 ? 0 : (UINT32_MAX >> len);
        if ((a & host) != 0)
            return "address has bits set beyond the prefix length";
        m->v4_hi = a | host;
        return NULL;
    }
    if (*p != '-')
        return bad;
    p++;
    uint32_t end;
    const char *q = p;
    if (parse_octet(&q, &o) && *q == '\0') { /* "10.1.1.10-20" */
        end = (a & UINT32_C(0xffffff00)) | o;
    } else {
        q = p;
        if (!parse_v4_addr(&q, &end) || *q != '\0')
            return "range end must be a last octet or an IPv4 address";
    }
    if (end < a)
        return "range start is after its end";
    m->v4_hi = end;
    return NULL;
}

/* ---- IPv6 ---------------------------------------------------------------- */

static bool parse_v6_addr(const char *s, size_t len, unsigned char out[16])
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, out) == 1;
}

static bool v6_is_mapped(const unsigned char a[16])
{
    static const unsigned char pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, pfx, sizeof pfx) == 0;
}

static const char *parse_v6(const char *s, struct member *m)
{
    const char *slash = strchr(s, '/'), *dash = strchr(s, '-');
    size_t alen = slash ? (size_t)(slash - s) : dash ? (size_t)(dash - s) : strlen(s);

    m->kind = MEMBER_IPV6;
    if (slash && dash)
        return "not a valid IPv6 address, CIDR or range";
    if (!parse_v6_addr(s, alen, m->v6_lo))
        return "not a valid IPv6 address";
    if (v6_is_mapped(m->v6_lo))
        return "IPv4-mapped IPv6 address: write the IPv4 form";
    memcpy(m->v6_hi, m->v6_lo, 16);
    if (slash) {
        unsigned len;
        if (!parse_prefix(slash + 1, 128, &len))
            return "IPv6 prefix length must be 0..128";
        for (unsigned bit = len; bit < 128; bit++) {
            unsigned char mask = (unsigned char)(0x80 >> (bit % 8));
            if (m->v6_lo[bit / 8] & mask)
                return "address has bits set beyond the prefix length";
            m->v6_hi[bit / 8] |= mask;
        }
    } else if (dash) {
        if (!parse_v6_addr(dash + 1, strlen(dash + 1), m->v6_hi))
            return "range end must be an IPv6 address";
        if (memcmp(m->v6_hi, m->v6_lo, 16) < 0)
            return "range start is after its end";
    }
    return NULL;
}

/* ---- SBRS[...] and dnslist[...] ----------------------------------------- */

/* A score: optional sign, 1..2 digits, optional '.' and 1..3 digits; in
 * thousandths. Why 3 decimals: scores are published with one; more is
 * false precision, and the bound keeps the integer exact. */
static bool parse_score(const char *s, size_t len, long *milli)
{
    size_t i = 0;
    long sign = 1, v = 0;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        sign = s[i++] == '-' ? -1 : 1;
    size_t d0 = i;
    /* Count every digit, accumulate only the first 3: no overflow. */
    for (; i < len && is_digit((unsigned char)s[i]); i++)
        if (i - d0 < 3)
            v = v * 10 + (s[i] - '0');
    if (i == d0 || i - d0 > 2)
        return false;
    v *= 1000;
    if (i < len && s[i] == '.') {
        size_t f0 = ++i;
        long scale = 100;
        for (; i < len && is_digit((unsigned char)s[i]); i++, scale /= 10)
            v += (s[i] - '0') * scale; /* scale is 0 past 3 places: refused below */
        if (i == f0 || i - f0 > 3)
            return false;
    }
    if (i != len)
        return false;
    *milli = sign * v;
    return true;
}

static const char *parse_sbrs(const char *s, struct member *m)
{
    const char *in = s + strlen("SBRS[");
    size_t len = strlen(in);
    if (len == 0 || in[len - 1] != ']')
        return "SBRS range must end with ']'";
    len--;
    if (len == 4 && starts_with_kw(in, "none")) {
        m->kind = MEMBER_SBRS_NONE;
        return NULL;
    }
    const char *colon = memchr(in, ':', len);
    long lo, hi;
    if (colon == NULL)
        return "expected SBRS[lo:hi] or SBRS[none]";
    if (!parse_score(in, (size_t)(colon - in), &lo) ||
        !parse_score(colon + 1, len - (size_t)(colon + 1 - in), &hi))
        return "SBRS bounds must be decimals like -10, -3.5 or 2.0";
    if (lo < -10000 || lo > 10000 || hi < -10000 || hi > 10000)
        return "SBRS bounds must be between -10 and 10";
    if (lo > hi)
        return "SBRS lower bound is above the upper bound";
    m->kind = MEMBER_SBRS;
    m->sbrs_lo = (double)lo / 1000.0;
    m->sbrs_hi = (double)hi / 1000.0;
    return NULL;
}

static const char *parse_dnslist(const char *s, struct member *m)
{
    const char *in = s + strlen("dnslist[");
    size_t len = strlen(in);
    if (len == 0 || in[len - 1] != ']')
        return "dnslist must end with ']'";
    len--;
    if (len >= sizeof m->name)
        return "zone longer than 253 characters";
    memcpy(m->name, in, len);
    m->name[len] = '\0';
    m->kind = MEMBER_DNSLIST;
    return member_check_domain(m->name);
}

/* ---- host names ---------------------------------------------------------- */

static const char *parse_name(const char *s, struct member *m)
{
    bool suffix = s[0] == '.';
    size_t len = strlen(s);
    if (len >= sizeof m->name)
        return "name longer than 253 characters";
    memcpy(m->name, s, len + 1);
    m->kind = suffix ? MEMBER_SUFFIX : MEMBER_HOST;
    const char *why = member_check_domain(m->name + suffix);
    if (why != NULL)
        return why;
    const char *last = strrchr(m->name, '.');
    last = last ? last + 1 : m->name;
    while (is_digit((unsigned char)*last))
        last++;
    if (*last == '\0')
        return "not an IPv4 address, nor a host name (last label all digits)";
    return NULL;
}

/* ---- entry points -------------------------------------------------------- */

const char *member_parse(const char *text, struct member *m)
{
    memset(m, 0, sizeof *m);
    size_t len = strlen(text);
    if (len == 0)
        return "empty member";
    if (len > MEMBER_MAX_LEN)
        return "member longer than 299 characters";
    if (eq_kw(text, "ALL")) {
        m->kind = MEMBER_ALL;
        return NULL;
    }
    if (starts_with_kw(text, "SBRS["))
        return parse_sbrs(text, m);
    if (starts_with_kw(text, "dnslist["))
        return parse_dnslist(text, m);
    if (strchr(text, ':') != NULL)
        return parse_v6(text, m);
    if (strspn(text, "0123456789./-") == len)
        return parse_v4(text, m);
    return parse_name(text, m);
}

const char *member_normalize(char *s)
{
    struct member m;
    const char *why = member_parse(s, &m);
    if (why != NULL)
        return why;
    size_t kw = 0;
    switch (m.kind) {
    case MEMBER_ALL:
        kw = 3;
        break;
    case MEMBER_SBRS:
    case MEMBER_SBRS_NONE:
        kw = 4; /* "SBRS"; the rest (digits, or "none") lower-cased below */
        break;
    default:
        break;
    }
    for (size_t i = 0; s[i] != '\0'; i++)
        s[i] = (char)(i < kw ? to_upper((unsigned char)s[i]) : to_lower((unsigned char)s[i]));
    return NULL;
}

const char *member_kind_name(enum member_kind k)
{
    static const char *const names[] = {
        [MEMBER_IPV4] = "ipv4",       [MEMBER_IPV6] = "ipv6", [MEMBER_HOST] = "host",
        [MEMBER_SUFFIX] = "suffix",   [MEMBER_SBRS] = "sbrs", [MEMBER_SBRS_NONE] = "sbrs-none",
        [MEMBER_DNSLIST] = "dnslist", [MEMBER_ALL] = "all",
    };
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}
