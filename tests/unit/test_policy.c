/*
 * test_policy: sender group members (src/policy/member.c) and the host
 * access table (src/policy/hat.c).
 *
 * Table-driven: member texts with what they parse to or the exact reason
 * they are refused; then configurations loaded from YAML, compiled for a
 * listener, and rows of client facts with the group, member and policy the
 * decision must name. Everything is in memory; no DNS.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/config.h"
#include "policy/member.h"
#include "policy/policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- member parser ------------------------------------------------------ */

static uint32_t v4(const char *s)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1)
        fail_msg("bad test address %s", s);
    return ntohl(a.s_addr);
}

static void test_member_valid(void **state)
{
    static const struct {
        const char *text;
        enum member_kind kind;
        const char *lo, *hi; /* addresses, or name for names */
        double slo, shi;
    } rows[] = {
        {"10.1.1.1", MEMBER_IPV4, "10.1.1.1", "10.1.1.1", 0, 0},
        {"0.0.0.0", MEMBER_IPV4, "0.0.0.0", "0.0.0.0", 0, 0},
        {"255.255.255.255", MEMBER_IPV4, "255.255.255.255", "255.255.255.255", 0, 0},
        {"10.1.1.0/24", MEMBER_IPV4, "10.1.1.0", "10.1.1.255", 0, 0},
        {"0.0.0.0/0", MEMBER_IPV4, "0.0.0.0", "255.255.255.255", 0, 0},
        {"10.1.1.1/32", MEMBER_IPV4, "10.1.1.1", "10.1.1.1", 0, 0},
        {"10.0.0.0/8", MEMBER_IPV4, "10.0.0.0", "10.255.255.255", 0, 0},
        {"192.168.0.0/23", MEMBER_IPV4, "192.168.0.0", "192.168.1.255", 0, 0},
        {"10.1.1.10-20", MEMBER_IPV4, "10.1.1.10", "10.1.1.20", 0, 0},
        {"10.1.1.10-10", MEMBER_IPV4, "10.1.1.10", "10.1.1.10", 0, 0},
        {"10.1.1.0-255", MEMBER_IPV4, "10.1.1.0", "10.1.1.255", 0, 0},
        {"10.1.1.10-10.1.2.20", MEMBER_IPV4, "10.1.1.10", "10.1.2.20", 0, 0},
        {"10.1.1.", MEMBER_IPV4, "10.1.1.0", "10.1.1.255", 0, 0},
        {"10.1.", MEMBER_IPV4, "10.1.0.0", "10.1.255.255", 0, 0},
        {"10.", MEMBER_IPV4, "10.0.0.0", "10.255.255.255", 0, 0},
        {"2001:db8::1", MEMBER_IPV6, "2001:db8::1", "2001:db8::1", 0, 0},
        {"2001:DB8::/32", MEMBER_IPV6, "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 0,
         0},
        {"::/0", MEMBER_IPV6, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, 0},
        {"::1/128", MEMBER_IPV6, "::1", "::1", 0, 0},
        {"2001:db8::1-2001:db8::ff", MEMBER_IPV6, "2001:db8::1", "2001:db8::ff", 0, 0},
        {"mx.example.com", MEMBER_HOST, "mx.example.com", NULL, 0, 0},
        {"MX.Example.COM", MEMBER_HOST, "mx.example.com", NULL, 0, 0},
        {"localhost", MEMBER_HOST, "localhost", NULL, 0, 0},
        {"mail_1.example", MEMBER_HOST, "mail_1.example", NULL, 0, 0},
        {"1.example", MEMBER_HOST, "1.example", NULL, 0, 0},
        {".example.com", MEMBER_SUFFIX, ".example.com", NULL, 0, 0},
        {".Example.Com", MEMBER_SUFFIX, ".example.com", NULL, 0, 0},
        {"SBRS[-10:-3]", MEMBER_SBRS, NULL, NULL, -10.0, -3.0},
        {"sbrs[-10.0:-3.0]", MEMBER_SBRS, NULL, NULL, -10.0, -3.0},
        {"SBRS[-3:-3]", MEMBER_SBRS, NULL, NULL, -3.0, -3.0},
        {"SBRS[0:10]", MEMBER_SBRS, NULL, NULL, 0.0, 10.0},
        {"SBRS[+1.5:2.25]", MEMBER_SBRS, NULL, NULL, 1.5, 2.25},
        {"SBRS[-0.125:0.5]", MEMBER_SBRS, NULL, NULL, -0.125, 0.5},
        {"SBRS[none]", MEMBER_SBRS_NONE, NULL, NULL, 0, 0},
        {"Sbrs[NONE]", MEMBER_SBRS_NONE, NULL, NULL, 0, 0},
        {"dnslist[zen.example]", MEMBER_DNSLIST, "zen.example", NULL, 0, 0},
        {"DNSList[ZEN.Example]", MEMBER_DNSLIST, "zen.example", NULL, 0, 0},
        {"ALL", MEMBER_ALL, NULL, NULL, 0, 0},
        {"all", MEMBER_ALL, NULL, NULL, 0, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        struct member m;
        const char *why = member_parse(rows[i].text, &m);
        if (why != NULL)
            fail_msg("%s: %s", rows[i].text, why);
        if (m.kind != rows[i].kind)
            fail_msg("%s: kind %s, want %s", rows[i].text, member_kind_name(m.kind),
                     member_kind_name(rows[i].kind));
        switch (m.kind) {
        case MEMBER_IPV4:
            if (m.v4_lo != v4(rows[i].lo) || m.v4_hi != v4(rows[i].hi))
                fail_msg("%s: range %08x-%08x", rows[i].text, m.v4_lo, m.v4_hi);
            break;
        case MEMBER_IPV6: {
            unsigned char lo[16], hi[16];
            assert_int_equal(inet_pton(AF_INET6, rows[i].lo, lo), 1);
            assert_int_equal(inet_pton(AF_INET6, rows[i].hi, hi), 1);
            if (memcmp(m.v6_lo, lo, 16) != 0 || memcmp(m.v6_hi, hi, 16) != 0)
                fail_msg("%s: wrong IPv6 range", rows[i].text);
            break;
        }
        case MEMBER_HOST:
        case MEMBER_SUFFIX:
        case MEMBER_DNSLIST:
            assert_string_equal(m.name, rows[i].lo);
            break;
        case MEMBER_SBRS:
            if (m.sbrs_lo != rows[i].slo || m.sbrs_hi != rows[i].shi)
                fail_msg("%s: [%g:%g]", rows[i].text, m.sbrs_lo, m.sbrs_hi);
            break;
        default:
            break;
        }
    }
}

static void test_member_invalid(void **state)
{
    static const struct {
        const char *text, *why;
    } rows[] = {
        {"", "empty member"},
        {"10.1.1.256", "not a valid IPv4 address, CIDR, range or partial address"},
        {"010.1.1.1", "not a valid IPv4 address, CIDR, range or partial address"},
        {"10.1.1.1.1", "not a valid IPv4 address, CIDR, range or partial address"},
        {"10", "not a valid IPv4 address, CIDR, range or partial address"},
        {"10.1.1", "a partial IPv4 address must end with a dot"},
        {"10.1", "a partial IPv4 address must end with a dot"},
        {"10..", "not a valid IPv4 address, CIDR, range or partial address"},
        {"10.1.1.0/33", "IPv4 prefix length must be 0..32"},
        {"10.1.1.0/", "IPv4 prefix length must be 0..32"},
        {"10.1.1.0/08", "IPv4 prefix length must be 0..32"},
        {"10.1.1.5/24", "address has bits set beyond the prefix length"},
        {"11.0.0.0/7", "address has bits set beyond the prefix length"},
        {"10.1.1.20-10", "range start is after its end"},
        {"10.1.2.0-10.1.1.255", "range start is after its end"},
        {"10.1.1.10-256", "range end must be a last octet or an IPv4 address"},
        {"10.1.1.10-", "range end must be a last octet or an IPv4 address"},
        {"10.1.1.10-10.1.2", "range end must be a last octet or an IPv4 address"},
        {"10.1.1.0/24-30", "IPv4 prefix length must be 0..32"},
        {"2001:db8::g", "not a valid IPv6 address"},
        {"2001:db8::/129", "IPv6 prefix length must be 0..128"},
        {"2001:db8::1/32", "address has bits set beyond the prefix length"},
        {"2001:db8::ff-2001:db8::1", "range start is after its end"},
        {"2001:db8::1-x", "range end must be an IPv6 address"},
        {"2001:db8::/32-2001:db8::1", "not a valid IPv6 address, CIDR or range"},
        {"::ffff:10.1.1.1", "IPv4-mapped IPv6 address: write the IPv4 form"},
        {"[::1]", "not a valid IPv6 address"},
        {"fe80::1%eth0", "not a valid IPv6 address"},
        {"mx.example.com.", "trailing dot is not allowed"},
        {"mx..example.com", "empty label"},
        {"*.example.com", "only letters, digits, '-', '_' and dots are allowed in a name"},
        {"mx example", "only letters, digits, '-', '_' and dots are allowed in a name"},
        {"-mx.example", "label starts or ends with a hyphen"},
        {".", "not a valid IPv4 address, CIDR, range or partial address"},
        {"a..", "empty label"},
        {"..example.com", "a name cannot start with a dot"},
        {"1.2.3.4.example.10", "not an IPv4 address, nor a host name (last label all digits)"},
        {"SBRS[-10:-3", "SBRS range must end with ']'"},
        {"SBRS[]", "expected SBRS[lo:hi] or SBRS[none]"},
        {"SBRS[-3]", "expected SBRS[lo:hi] or SBRS[none]"},
        {"SBRS[-11:0]", "SBRS bounds must be between -10 and 10"},
        {"SBRS[0:10.5]", "SBRS bounds must be between -10 and 10"},
        {"SBRS[3:-3]", "SBRS lower bound is above the upper bound"},
        {"SBRS[a:b]", "SBRS bounds must be decimals like -10, -3.5 or 2.0"},
        {"SBRS[1.:2]", "SBRS bounds must be decimals like -10, -3.5 or 2.0"},
        {"SBRS[1.0001:2]", "SBRS bounds must be decimals like -10, -3.5 or 2.0"},
        {"SBRS[ 1:2]", "SBRS bounds must be decimals like -10, -3.5 or 2.0"},
        {"SBRS[1:2:3]", "SBRS bounds must be decimals like -10, -3.5 or 2.0"},
        {"SBRS[99999999999999999999999:2]", "SBRS bounds must be decimals like -10, -3.5 or 2.0"},
        {"SBRS[1e1:2]", "SBRS bounds must be decimals like -10, -3.5 or 2.0"},
        {"SBRS[nan:2]", "SBRS bounds must be decimals like -10, -3.5 or 2.0"},
        {"SBRS[none]x", "SBRS range must end with ']'"},
        {"dnslist[]", "empty name"},
        {"dnslist[zen.example", "dnslist must end with ']'"},
        {"dnslist[.zen.example]", "a name cannot start with a dot"},
        {"dnslist[zen example]", "only letters, digits, '-', '_' and dots are allowed in a name"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        struct member m;
        const char *why = member_parse(rows[i].text, &m);
        if (why == NULL)
            fail_msg("'%s' parsed as %s", rows[i].text, member_kind_name(m.kind));
        if (strcmp(why, rows[i].why) != 0)
            fail_msg("'%s': got '%s', want '%s'", rows[i].text, why, rows[i].why);
    }
    /* Too long, before anything else. */
    char longm[MEMBER_MAX_LEN + 2];
    memset(longm, 'a', sizeof longm - 1);
    longm[sizeof longm - 1] = '\0';
    struct member m;
    assert_string_equal(member_parse(longm, &m), "member longer than 299 characters");
}

static void test_member_normalize(void **state)
{
    static const struct {
        const char *in, *out;
    } rows[] = {
        {"all", "ALL"},
        {"sbrs[-10:-3]", "SBRS[-10:-3]"},
        {"sbrs[NONE]", "SBRS[none]"},
        {"DNSLIST[Zen.Example]", "dnslist[zen.example]"},
        {"MX.Example.COM", "mx.example.com"},
        {".Example.COM", ".example.com"},
        {"2001:DB8::/32", "2001:db8::/32"},
        {"10.1.1.10-20", "10.1.1.10-20"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", rows[i].in);
        assert_null(member_normalize(buf));
        assert_string_equal(buf, rows[i].out);
    }
    char bad[] = "10.1.1.5/24";
    assert_string_equal(member_normalize(bad), "address has bits set beyond the prefix length");
    assert_string_equal(member_kind_name(MEMBER_SUFFIX), "suffix");
}

/* ---- decisions ------------------------------------------------------------ */

static struct config *load_ok(const char *yaml)
{
    struct config_error err;
    struct config *cfg = config_load_buffer("t.yaml", yaml, strlen(yaml), &err);
    if (cfg == NULL)
        fail_msg("%u:%u: %s\n%s", err.line, err.column, err.msg, yaml);
    return cfg;
}

static struct policy_table *compile(const struct config *cfg, size_t listener)
{
    char err[256] = "";
    struct policy_table *t = policy_table_compile(cfg, &cfg->listeners[listener], err, sizeof err);
    if (t == NULL)
        fail_msg("compile: %s", err);
    return t;
}

enum { NO_SBRS = 99 };

struct fact_row {
    const char *ip;
    enum ptr_status ptr;
    const char *ptr_name;
    bool verified;
    double sbrs;        /* NO_SBRS: none */
    const char *listed; /* zone that listed the host, or NULL */
    const char *group, *member, *policy;
};

/* A row for the facts only (no SBRS score, not listed, no expectation). */
static struct fact_row facts_row(const char *ip, enum ptr_status ptr, const char *name,
                                 bool verified)
{
    struct fact_row r = {ip, ptr, name, verified, NO_SBRS, NULL, NULL, NULL, NULL};
    return r;
}

static void make_facts(const struct fact_row *r, struct policy_facts *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->ip, sizeof f->ip, "%s", r->ip);
    struct in_addr a4;
    if (inet_pton(AF_INET, r->ip, &a4) == 1) {
        f->family = AF_INET;
        f->addr6.s6_addr[10] = f->addr6.s6_addr[11] = 0xff;
        memcpy(&f->addr6.s6_addr[12], &a4, 4);
    } else {
        f->family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, r->ip, &f->addr6), 1);
    }
    f->ptr = r->ptr;
    snprintf(f->ptr_name, sizeof f->ptr_name, "%s", r->ptr_name ? r->ptr_name : "");
    f->verified = r->verified;
    f->sbrs_none = r->sbrs == NO_SBRS;
    f->sbrs = f->sbrs_none ? 0 : r->sbrs;
    if (r->listed != NULL) {
        f->ndnslists = 2;
        snprintf(f->dnslists[0].zone, sizeof f->dnslists[0].zone, "other.example");
        f->dnslists[0].answered = true;
        snprintf(f->dnslists[1].zone, sizeof f->dnslists[1].zone, "%s", r->listed);
        f->dnslists[1].answered = f->dnslists[1].listed = true;
    }
}

static void check_rows(const struct policy_table *t, const struct fact_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct policy_facts f;
        struct policy_decision d;
        make_facts(&rows[i], &f);
        policy_decide(t, &f, &d);
        if (d.group == NULL || strcmp(d.group, rows[i].group) != 0 ||
            strcmp(d.member, rows[i].member) != 0 || strcmp(d.params.name, rows[i].policy) != 0)
            fail_msg("row %zu (%s %s): got %s / %s / %s, want %s / %s / %s", i, rows[i].ip,
                     rows[i].ptr_name ? rows[i].ptr_name : "-", d.group ? d.group : "(null)",
                     d.member, d.params.name, rows[i].group, rows[i].member, rows[i].policy);
    }
}

static const char hat_yaml[] =
    "sender_groups:\n"
    "  - name: allowed_list\n" /* alias of WHITELIST */
    "    members: [10.1.1.0/24, \"10.2.2.10-20\", \"10.3.\", 2001:db8::/32, mx.good.example,\n"
    "              .trusted.example, \"SBRS[8:10]\"]\n"
    "  - name: BLACKLIST\n"
    "    members: [\"SBRS[-10:-3]\", \"dnslist[zen.example]\", 10.9.9.9, 2001:db8:bad::/48]\n"
    "  - name: SUSPECTLIST\n"
    "    members: [\"SBRS[-3:-1]\", \"SBRS[none]\"]\n"
    "    ptr_missing: true\n"
    "    ptr_tempfail: true\n"
    "    ptr_mismatch: true\n"
    "  - name: MAYBE\n"
    "    policy: LOOKAHEAD\n"
    "    members: [10.4.0.0/16]\n"
    "  - name: FRIENDS\n"
    "    policy: trusted\n"
    "    members: [10.4.4.4, .friends.example]\n"
    "mail_flow_policies:\n"
    "  - name: LOOKAHEAD\n"
    "    access: continue\n"
    "listeners:\n"
    "  - name: in\n"
    "    hat: [WHITELIST, BLACKLIST, MAYBE, FRIENDS, SUSPECTLIST, UNKNOWNLIST]\n"
    "  - name: out\n"
    "    type: private\n"
    "    port: 2526\n"
    "  - name: defaults\n"
    "    port: 2527\n";

static void test_decide_members(void **state)
{
    static const struct fact_row rows[] = {
        /* addresses */
        {"10.1.1.77", PTR_MISSING, NULL, false, 0, NULL, "WHITELIST", "10.1.1.0/24", "TRUSTED"},
        {"10.1.1.0", PTR_OK, "x.example", true, 0, NULL, "WHITELIST", "10.1.1.0/24", "TRUSTED"},
        {"10.1.1.255", PTR_OK, "x.example", true, 0, NULL, "WHITELIST", "10.1.1.0/24", "TRUSTED"},
        {"10.1.2.0", PTR_OK, "x.example", true, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        {"10.2.2.10", PTR_OK, "x.example", true, 0, NULL, "WHITELIST", "10.2.2.10-20", "TRUSTED"},
        {"10.2.2.20", PTR_OK, "x.example", true, 0, NULL, "WHITELIST", "10.2.2.10-20", "TRUSTED"},
        {"10.2.2.21", PTR_OK, "x.example", true, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        {"10.3.200.1", PTR_OK, "x.example", true, 0, NULL, "WHITELIST", "10.3.", "TRUSTED"},
        {"10.9.9.9", PTR_OK, "x.example", true, 0, NULL, "BLACKLIST", "10.9.9.9", "BLOCKED"},
        {"2001:db8::5", PTR_OK, "x.example", true, 0, NULL, "WHITELIST", "2001:db8::/32",
         "TRUSTED"},
        /* first match wins: 2001:db8:bad:: is in both */
        {"2001:db8:bad::1", PTR_OK, "x.example", true, 0, NULL, "WHITELIST", "2001:db8::/32",
         "TRUSTED"},
        {"2001:db9::1", PTR_OK, "x.example", true, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        /* an IPv4 client never matches an IPv6 member, nor the reverse */
        {"::a01:101", PTR_OK, "x.example", true, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        /* host names: verified only */
        {"192.0.2.1", PTR_OK, "mx.good.example", true, 0, NULL, "WHITELIST", "mx.good.example",
         "TRUSTED"},
        {"192.0.2.1", PTR_OK, "MX.Good.Example.", true, 0, NULL, "WHITELIST", "mx.good.example",
         "TRUSTED"},
        {"192.0.2.1", PTR_OK, "mx.good.example", false, 0, NULL, "SUSPECTLIST",
         "PTR does not match forward lookup", "THROTTLED"},
        {"192.0.2.1", PTR_OK, "a.mx.good.example", true, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        {"192.0.2.1", PTR_OK, "a.trusted.example", true, 0, NULL, "WHITELIST", ".trusted.example",
         "TRUSTED"},
        {"192.0.2.1", PTR_OK, "b.a.trusted.example", true, 0, NULL, "WHITELIST", ".trusted.example",
         "TRUSTED"},
        {"192.0.2.1", PTR_OK, "trusted.example", true, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        {"192.0.2.1", PTR_OK, "xtrusted.example", true, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        {"192.0.2.1", PTR_OK, "a.trusted.example", false, 0, NULL, "SUSPECTLIST",
         "PTR does not match forward lookup", "THROTTLED"},
        /* SBRS ranges, inclusive; none */
        {"192.0.2.1", PTR_OK, "x.example", true, 9.5, NULL, "WHITELIST", "SBRS[8:10]", "TRUSTED"},
        {"192.0.2.1", PTR_OK, "x.example", true, 8.0, NULL, "WHITELIST", "SBRS[8:10]", "TRUSTED"},
        {"192.0.2.1", PTR_OK, "x.example", true, -3.0, NULL, "BLACKLIST", "SBRS[-10:-3]",
         "BLOCKED"},
        {"192.0.2.1", PTR_OK, "x.example", true, -10.0, NULL, "BLACKLIST", "SBRS[-10:-3]",
         "BLOCKED"},
        {"192.0.2.1", PTR_OK, "x.example", true, -2.9, NULL, "SUSPECTLIST", "SBRS[-3:-1]",
         "THROTTLED"},
        {"192.0.2.1", PTR_OK, "x.example", true, -0.9, NULL, "ALL", "ALL", "ACCEPTED"},
        {"192.0.2.1", PTR_OK, "x.example", true, NO_SBRS, NULL, "SUSPECTLIST", "SBRS[none]",
         "THROTTLED"},
        /* dnslist */
        {"192.0.2.1", PTR_OK, "x.example", true, 0, "zen.example", "BLACKLIST",
         "dnslist[zen.example]", "BLOCKED"},
        {"192.0.2.1", PTR_OK, "x.example", true, 0, "other.example", "ALL", "ALL", "ACCEPTED"},
        /* PTR checks */
        {"192.0.2.1", PTR_MISSING, NULL, false, 0, NULL, "SUSPECTLIST", "PTR missing", "THROTTLED"},
        {"192.0.2.1", PTR_TEMPFAIL, NULL, false, 0, NULL, "SUSPECTLIST",
         "PTR lookup failed temporarily", "THROTTLED"},
        {"192.0.2.1", PTR_NOT_LOOKED, NULL, false, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        /* CONTINUE rows are skipped: MAYBE matches 10.4/16, FRIENDS decides */
        {"10.4.4.4", PTR_OK, "x.example", true, 0, NULL, "FRIENDS", "10.4.4.4", "TRUSTED"},
        {"10.4.5.5", PTR_OK, "x.example", true, 0, NULL, "ALL", "ALL", "ACCEPTED"},
        {"10.4.5.5", PTR_OK, "a.friends.example", true, 0, NULL, "FRIENDS", ".friends.example",
         "TRUSTED"},
    };
    struct config *cfg = load_ok(hat_yaml);
    struct policy_table *t = compile(cfg, 0);
    check_rows(t, rows, ARRAY_LEN(rows));
    assert_true(policy_table_needs_ptr(t));
    policy_table_free(t);
    config_unref(cfg);
}

/* The implicit ALL row: ACCEPTED on a public listener, BLOCKED on a private
 * one; default HATs by type. */
static void test_decide_defaults(void **state)
{
    static const struct fact_row out_rows[] = {
        {"10.1.1.1", PTR_OK, "mx.good.example", true, 9, NULL, "ALL", "ALL", "BLOCKED"},
        {"192.0.2.1", PTR_MISSING, NULL, false, NO_SBRS, NULL, "ALL", "ALL", "BLOCKED"},
    };
    static const struct fact_row relay_rows[] = {
        {"10.5.5.5", PTR_MISSING, NULL, false, NO_SBRS, NULL, "RELAYLIST", "10.5.0.0/16",
         "RELAYED"},
        {"10.6.5.5", PTR_MISSING, NULL, false, NO_SBRS, NULL, "ALL", "ALL", "BLOCKED"},
    };
    static const struct fact_row in_rows[] = {
        {"10.1.1.1", PTR_MISSING, NULL, false, NO_SBRS, NULL, "ALL", "ALL", "ACCEPTED"},
    };
    struct config *cfg = load_ok(hat_yaml);
    struct policy_table *t = compile(cfg, 1);
    check_rows(t, out_rows, ARRAY_LEN(out_rows));
    assert_false(policy_table_needs_ptr(t)); /* RELAYLIST: no names, no PTR checks */
    policy_table_free(t);
    /* "defaults" is public with the default HAT: WHITELIST etc. apply. */
    t = compile(cfg, 2);
    struct policy_facts f;
    struct policy_decision d;
    struct fact_row fr = facts_row("10.9.9.9", PTR_OK, "x.example", true);
    fr.sbrs = 0;
    make_facts(&fr, &f);
    policy_decide(t, &f, &d);
    assert_string_equal(d.group, "BLACKLIST");
    assert_int_equal(d.params.access, ACCESS_REJECT);
    assert_int_equal(d.params.reject_code, 554);
    assert_string_equal(d.params.reject_text, "Access denied");
    policy_table_free(t);
    config_unref(cfg);

    cfg = load_ok("sender_groups: [{name: RELAYLIST, members: [10.5.0.0/16]}]\n"
                  "listeners: [{name: out, type: private}]\n");
    t = compile(cfg, 0);
    check_rows(t, relay_rows, ARRAY_LEN(relay_rows));
    policy_table_free(t);
    config_unref(cfg);

    /* Nothing configured: every predefined group is empty, so ALL decides. */
    cfg = load_ok("");
    t = compile(cfg, 0);
    check_rows(t, in_rows, ARRAY_LEN(in_rows));
    assert_false(policy_table_needs_ptr(t));
    const char *zones[POLICY_MAX_DNSLISTS];
    assert_int_equal(policy_table_dnslists(t, zones, POLICY_MAX_DNSLISTS), 0);
    policy_table_free(t);
    config_unref(cfg);
}

/* Overlapping, nested, adjacent and duplicate ranges: every address of the
 * union matches, with a member that contains it; nothing outside does. */
static void test_decide_overlaps(void **state)
{
    static const struct fact_row rows[] = {
        {"10.0.0.0", PTR_MISSING, NULL, false, 0, NULL, "G", "10.0.0.0/8", "ACCEPTED"},
        {"10.1.1.15", PTR_MISSING, NULL, false, 0, NULL, "G", "10.0.0.0/8", "ACCEPTED"},
        {"10.255.255.255", PTR_MISSING, NULL, false, 0, NULL, "G", "10.0.0.0/8", "ACCEPTED"},
        {"11.0.0.0", PTR_MISSING, NULL, false, 0, NULL, "G", "10.200.0.0-11.0.0.5", "ACCEPTED"},
        {"11.0.0.5", PTR_MISSING, NULL, false, 0, NULL, "G", "10.200.0.0-11.0.0.5", "ACCEPTED"},
        {"11.0.0.6", PTR_MISSING, NULL, false, 0, NULL, "G", "11.0.0.6", "ACCEPTED"},
        {"11.0.0.7", PTR_MISSING, NULL, false, 0, NULL, "ALL", "ALL", "BLOCKED"},
        {"9.255.255.255", PTR_MISSING, NULL, false, 0, NULL, "ALL", "ALL", "BLOCKED"},
        {"0.0.0.0", PTR_MISSING, NULL, false, 0, NULL, "G", "0.0.0.0", "ACCEPTED"},
        {"255.255.255.255", PTR_MISSING, NULL, false, 0, NULL, "G", "255.255.255.0/24", "ACCEPTED"},
        {"255.255.255.1", PTR_MISSING, NULL, false, 0, NULL, "G", "255.255.255.0/24", "ACCEPTED"},
        {"255.255.254.255", PTR_MISSING, NULL, false, 0, NULL, "ALL", "ALL", "BLOCKED"},
        {"172.16.0.3", PTR_MISSING, NULL, false, 0, NULL, "G", "172.16.0.1-3", "ACCEPTED"},
        {"172.16.0.4", PTR_MISSING, NULL, false, 0, NULL, "G", "172.16.0.4-6", "ACCEPTED"},
        {"172.16.0.7", PTR_MISSING, NULL, false, 0, NULL, "ALL", "ALL", "BLOCKED"},
        {"2001:db8::", PTR_MISSING, NULL, false, 0, NULL, "G", "2001:db8::/32", "ACCEPTED"},
        {"2001:db8:1::ffff", PTR_MISSING, NULL, false, 0, NULL, "G", "2001:db8::/32", "ACCEPTED"},
        {"2001:db9::", PTR_MISSING, NULL, false, 0, NULL, "G", "2001:db8:ffff::-2001:db9::1",
         "ACCEPTED"},
        {"2001:db9::2", PTR_MISSING, NULL, false, 0, NULL, "ALL", "ALL", "BLOCKED"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PTR_MISSING, NULL, false, 0, NULL, "G",
         "ffff::/16", "ACCEPTED"},
        {"::", PTR_MISSING, NULL, false, 0, NULL, "ALL", "ALL", "BLOCKED"},
    };
    struct config *cfg =
        load_ok("sender_groups:\n"
                "  - name: G\n"
                "    policy: ACCEPTED\n"
                "    members: [\"10.1.1.10-20\", 10.0.0.0/8, 10.1.0.0/16, 10.0.0.0/8,\n"
                "              \"10.200.0.0-11.0.0.5\", 11.0.0.6, 0.0.0.0, 255.255.255.0/24,\n"
                "              255.255.255.255, \"172.16.0.1-3\", \"172.16.0.4-6\",\n"
                "              2001:db8::/32, \"2001:db8:ffff::-2001:db9::1\", 2001:db8:1::/48,\n"
                "              ffff::/16]\n"
                "listeners: [{name: out, type: private, hat: [G]}]\n");
    struct policy_table *t = compile(cfg, 0);
    check_rows(t, rows, ARRAY_LEN(rows));
    policy_table_free(t);
    config_unref(cfg);
}

static void test_decide_params(void **state)
{
    struct config *cfg = load_ok("sender_groups:\n"
                                 "  - {name: G, policy: P, members: [ALL]}\n"
                                 "mail_flow_policies:\n"
                                 "  - name: P\n"
                                 "    access: reject\n"
                                 "    reject_at_rcpt: true\n"
                                 "    reject_code: 550\n"
                                 "    reject_text: \"Go away $RemoteIP\"\n"
                                 "    banner_hostname: shown.example\n"
                                 "    tls: required\n"
                                 "    max_recipients_per_hour: 7\n"
                                 "listeners: [{name: a, hat: [G]}]\n");
    struct policy_table *t = compile(cfg, 0);
    struct policy_facts f;
    struct policy_decision d;
    struct fact_row fr = facts_row("192.0.2.9", PTR_MISSING, NULL, false);
    make_facts(&fr, &f);
    policy_decide(t, &f, &d);
    assert_string_equal(d.group, "G");
    assert_string_equal(d.member, "ALL");
    assert_string_equal(d.params.name, "P");
    assert_int_equal(d.params.access, ACCESS_REJECT);
    assert_true(d.params.reject_at_rcpt);
    assert_int_equal(d.params.reject_code, 550);
    assert_string_equal(d.params.reject_text, "Go away $RemoteIP");
    assert_string_equal(d.params.banner_hostname, "shown.example");
    assert_int_equal(d.params.tls, POLICY_TLS_REQUIRED);
    assert_int_equal(d.params.max_recipients_per_hour, 7);
    assert_int_equal(d.params.max_message_size, 10 * 1024 * 1024);
    assert_int_equal(d.params.max_recipients_per_message, 50);
    assert_int_equal(d.params.rate_limit_code, 452);
    assert_string_equal(d.params.rate_limit_text, "Too many recipients received this hour");
    assert_int_equal(d.params.banner_code, 220);
    assert_string_equal(d.params.banner_text, "ESMTP");
    policy_table_free(t);
    config_unref(cfg);

    assert_string_equal(policy_access_name(ACCESS_ACCEPT), "ACCEPT");
    assert_string_equal(policy_access_name(ACCESS_REJECT), "REJECT");
    assert_string_equal(policy_access_name(ACCESS_TCPREFUSE), "TCPREFUSE");
    assert_string_equal(policy_access_name(ACCESS_RELAY), "RELAY");
    assert_string_equal(policy_access_name(ACCESS_CONTINUE), "CONTINUE");
}

/* The zones a lookup needs: reputation lists and dnslist[] members of the
 * table's groups, each once. */
static void test_dnslists(void **state)
{
    struct config *cfg =
        load_ok("reputation:\n"
                "  lists:\n"
                "    - {zone: zen.example}\n"
                "    - {zone: allow.example, type: allow}\n"
                "sender_groups:\n"
                "  - name: BLACKLIST\n"
                "    members: [\"dnslist[zen.example]\", \"dnslist[b.example]\"]\n"
                "  - {name: OTHER, policy: BLOCKED, members: [\"dnslist[c.x]\"]}\n");
    struct policy_table *t = compile(cfg, 0);
    const char *zones[POLICY_MAX_DNSLISTS];
    size_t n = policy_table_dnslists(t, zones, POLICY_MAX_DNSLISTS);
    assert_int_equal(n, 3); /* OTHER is not in the HAT */
    assert_string_equal(zones[0], "zen.example");
    assert_string_equal(zones[1], "allow.example");
    assert_string_equal(zones[2], "b.example");
    assert_int_equal(policy_table_dnslists(t, zones, 2), 2);
    policy_table_free(t);
    config_unref(cfg);
}

static void test_banner(void **state)
{
    static const struct {
        const char *text;
        enum ptr_status ptr;
        const char *name;
        bool verified;
        const char *group, *want;
    } rows[] = {
        {"ESMTP $Hostname", PTR_OK, "mx.example.com", true, "G", "ESMTP mx.example.com"},
        {"ESMTP $Hostname", PTR_OK, "mx.example.com", false, "G", "ESMTP None"},
        {"ESMTP $Hostname", PTR_MISSING, "", false, "G", "ESMTP Unknown"},
        {"ESMTP $Hostname", PTR_TEMPFAIL, "", false, "G", "ESMTP Unknown"},
        {"ESMTP $Hostname", PTR_NOT_LOOKED, "", false, "G", "ESMTP Unknown"},
        {"$Group/$group", PTR_MISSING, "", false, "WHITELIST", "WHITELIST/WHITELIST"},
        {"$Group", PTR_MISSING, "", false, NULL, "None"},
        {"from $RemoteIP.", PTR_MISSING, "", false, NULL, "from 192.0.2.9."},
        {"$ $x $$Group $", PTR_MISSING, "", false, "G", "$ $x $G $"},
        {"no variables", PTR_MISSING, "", false, "G", "no variables"},
        {"", PTR_MISSING, "", false, "G", ""},
        /* a hostile PTR name cannot put CR/LF into a reply */
        {"$Hostname!", PTR_OK, "a\r\nMAIL FROM:<x>", true, "G", "a??MAIL FROM:<x>!"},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        struct policy_facts f;
        char out[200];
        struct fact_row fr = facts_row("192.0.2.9", rows[i].ptr, rows[i].name, rows[i].verified);
        make_facts(&fr, &f);
        policy_expand_banner(rows[i].text, &f, rows[i].group, out, sizeof out);
        if (strcmp(out, rows[i].want) != 0)
            fail_msg("row %zu: got '%s', want '%s'", i, out, rows[i].want);
    }
    /* Bounded: output cut, always terminated. */
    struct policy_facts f;
    char small[8];
    struct fact_row fr = facts_row("192.0.2.9", PTR_OK, "mx.example.com", true);
    make_facts(&fr, &f);
    policy_expand_banner("x $Hostname", &f, NULL, small, sizeof small);
    assert_string_equal(small, "x mx.ex");
    policy_expand_banner("abc", &f, NULL, small, 1);
    assert_string_equal(small, "");
    policy_expand_banner("abc", &f, NULL, small, 0); /* no write at all */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_valid),     cmocka_unit_test(test_member_invalid),
        cmocka_unit_test(test_member_normalize), cmocka_unit_test(test_decide_members),
        cmocka_unit_test(test_decide_defaults),  cmocka_unit_test(test_decide_overlaps),
        cmocka_unit_test(test_decide_params),    cmocka_unit_test(test_dnslists),
        cmocka_unit_test(test_banner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
