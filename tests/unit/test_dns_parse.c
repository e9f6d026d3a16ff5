/*
 * test_dns_parse: the DNS answer parser on hand-built packets, table
 * driven. Each case is a small builder function plus what the parser must
 * say: error code, RCODE, records (formatted), minimum TTL, negative TTL.
 * Covers name compression, compression loops (self, forward, ping-pong),
 * the 63/255-octet limits (also when reached through pointers), truncation
 * at every offset of every valid packet, wrong questions, RDATA length
 * mismatches, CNAME chains and loops, SOA minimum, TTL high bit, escaping
 * of odd label bytes, and random single-byte corruption (run under ASan).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dns/dns_parse.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- packet builder -------------------------------------------------------- */

struct pb {
    uint8_t b[2048];
    size_t n;
};

static void u8(struct pb *p, unsigned v)
{
    p->b[p->n++] = (uint8_t)v;
}

static void u16(struct pb *p, unsigned v)
{
    u8(p, v >> 8);
    u8(p, v & 0xff);
}

static void u32(struct pb *p, uint32_t v)
{
    u16(p, v >> 16);
    u16(p, v & 0xffff);
}

static void bytes(struct pb *p, const void *d, size_t n)
{
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

/* Uncompressed name; "" is the root. A trailing "@off" is not supported:
 * use name_ptr after the labels. */
static void labels(struct pb *p, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        u8(p, (unsigned)l);
        bytes(p, name, l);
        name += l + (dot ? 1 : 0);
    }
}

static void name(struct pb *p, const char *n)
{
    labels(p, n);
    u8(p, 0);
}

static void ptr(struct pb *p, unsigned off)
{
    u16(p, 0xc000 | off);
}

/* Header: id 0x1234, QR RD RA, rcode, counts. */
static void hdr(struct pb *p, unsigned rcode, unsigned qd, unsigned an, unsigned ns)
{
    u16(p, 0x1234);
    u16(p, 0x8180 | rcode);
    u16(p, qd);
    u16(p, an);
    u16(p, ns);
    u16(p, 0);
}

static void question(struct pb *p, const char *n, unsigned type)
{
    name(p, n);
    u16(p, type);
    u16(p, 1);
}

/* RR fixed part after an owner already written; returns where RDLENGTH is. */
static size_t rr(struct pb *p, unsigned type, uint32_t ttl)
{
    u16(p, type);
    u16(p, 1);
    u32(p, ttl);
    size_t at = p->n;
    u16(p, 0);
    return at;
}

static void rr_end(struct pb *p, size_t at)
{
    size_t len = p->n - at - 2;
    p->b[at] = (uint8_t)(len >> 8);
    p->b[at + 1] = (uint8_t)len;
}

static void a_rr(struct pb *p, uint32_t ttl, const char *ip)
{
    uint8_t a[4];
    inet_pton(AF_INET, ip, a);
    size_t at = rr(p, 1, ttl);
    bytes(p, a, 4);
    rr_end(p, at);
}

static void soa_rr(struct pb *p, uint32_t ttl, uint32_t minimum)
{
    size_t at = rr(p, 6, ttl);
    name(p, "ns.example.com");
    ptr(p, 12);
    u32(p, 1);
    u32(p, 3600);
    u32(p, 600);
    u32(p, 86400);
    u32(p, minimum);
    rr_end(p, at);
}

/* ---- cases ---------------------------------------------------------------------- */

#define Q 12 /* offset of the question name */

static void b_a_compressed(struct pb *p)
{
    hdr(p, 0, 1, 2, 0);
    question(p, "example.com", 1);
    ptr(p, Q);
    a_rr(p, 300, "192.0.2.1");
    ptr(p, Q);
    a_rr(p, 60, "192.0.2.2");
}

static void b_aaaa(struct pb *p)
{
    uint8_t a[16];
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 28);
    ptr(p, Q);
    inet_pton(AF_INET6, "2001:db8::1", a);
    size_t at = rr(p, 28, 7200);
    bytes(p, a, 16);
    rr_end(p, at);
}

static void b_mx(struct pb *p)
{
    hdr(p, 0, 1, 2, 0);
    question(p, "example.com", 15);
    ptr(p, Q);
    size_t at = rr(p, 15, 300);
    u16(p, 20);
    labels(p, "mx2");
    ptr(p, Q); /* mx2.example.com */
    rr_end(p, at);
    ptr(p, Q);
    at = rr(p, 15, 300);
    u16(p, 10);
    name(p, "mx1.other.net");
    rr_end(p, at);
}

static void b_null_mx(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 15);
    ptr(p, Q);
    size_t at = rr(p, 15, 3600);
    u16(p, 0);
    u8(p, 0);
    rr_end(p, at);
}

static void b_ptr_escapes(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "1.2.0.192.in-addr.arpa", 12);
    ptr(p, Q);
    size_t at = rr(p, 12, 300);
    bytes(p,
          "\x05"
          "a.b\x07"
          "c",
          6); /* one label "a.b<BEL>c" */
    name(p, "example.com");
    rr_end(p, at);
}

static void b_txt(struct pb *p)
{
    hdr(p, 0, 1, 2, 0);
    question(p, "2.0.0.127.zen.example", 16);
    ptr(p, Q);
    size_t at = rr(p, 16, 900);
    bytes(p,
          "\x03"
          "abc\x00\x03"
          "def",
          9); /* "abc", "", "def" */
    rr_end(p, at);
    ptr(p, Q);
    at = rr(p, 16, 900);
    bytes(p,
          "\x03"
          "a\0b",
          4); /* embedded NUL */
    rr_end(p, at);
}

/* www -> web (CNAME ttl 30) -> example.com A; plus records of other names. */
static void b_cname_chain(struct pb *p)
{
    hdr(p, 0, 1, 4, 0);
    question(p, "www.example.com", 1);
    ptr(p, Q);
    size_t at = rr(p, 5, 30);
    labels(p, "web");
    ptr(p, Q + 4); /* web.example.com */
    rr_end(p, at);
    name(p, "unrelated.example.com");
    a_rr(p, 5, "198.51.100.1");
    size_t web = p->n;
    labels(p, "WEB"); /* owner case differs */
    ptr(p, Q + 4);
    at = rr(p, 5, 300);
    ptr(p, Q + 4); /* example.com */
    rr_end(p, at);
    ptr(p, web + 4); /* example.com via the WEB owner */
    a_rr(p, 600, "192.0.2.80");
}

static void b_cname_loop(struct pb *p)
{
    hdr(p, 0, 1, 2, 0);
    question(p, "a.example.com", 1);
    ptr(p, Q);
    size_t at = rr(p, 5, 30);
    labels(p, "b");
    ptr(p, Q + 2);
    rr_end(p, at);
    labels(p, "b");
    ptr(p, Q + 2);
    at = rr(p, 5, 30);
    ptr(p, Q);
    rr_end(p, at);
}

static void b_nxdomain_soa(struct pb *p)
{
    hdr(p, 3, 1, 0, 1);
    question(p, "nx.example.com", 1);
    ptr(p, Q + 3);
    soa_rr(p, 3600, 60);
}

static void b_nodata_soa_ttl(struct pb *p)
{
    hdr(p, 0, 1, 0, 1);
    question(p, "example.com", 28);
    ptr(p, Q);
    soa_rr(p, 30, 600); /* SOA TTL below MINIMUM wins (RFC 2308 §5) */
}

static void b_servfail(struct pb *p)
{
    hdr(p, 2, 1, 0, 0);
    question(p, "example.com", 1);
}

static void b_ttl_highbit(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 1);
    ptr(p, Q);
    a_rr(p, 0x80000010u, "192.0.2.1");
}

/* Malformed ones. */
static void b_loop_self(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 1);
    ptr(p, (unsigned)p->n); /* points at itself */
    a_rr(p, 1, "192.0.2.1");
}

static void b_loop_forward(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 1);
    ptr(p, (unsigned)p->n + 2);
    a_rr(p, 1, "192.0.2.1");
}

static void b_loop_pingpong(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 1);
    size_t x = p->n;
    labels(p, "x");
    ptr(p, (unsigned)x); /* "x" then back to the "x" itself */
    a_rr(p, 1, "192.0.2.1");
}

static void b_label_ext(struct pb *p)
{
    hdr(p, 0, 1, 0, 0);
    u8(p, 0x41); /* extended label type 01 */
    u8(p, 0);
    u16(p, 1);
    u16(p, 1);
}

static void b_name_too_long(struct pb *p)
{
    char l63[64];
    memset(l63, 'x', 63);
    l63[63] = '\0';
    hdr(p, 0, 1, 0, 0);
    for (int i = 0; i < 4; i++)
        labels(p, l63);
    name(p, "");
    u16(p, 1);
    u16(p, 1);
}

/* 255 octets exceeded only through pointers: three names hidden in the
 * RDATA of a record of another type, each adding 64 octets to the previous
 * one, and an answer owner that adds 64 more (4 x 64 + 1 = 257). */
static void b_name_too_long_ptr(struct pb *p)
{
    char l63[64];
    memset(l63, 'y', 63);
    l63[63] = '\0';
    hdr(p, 0, 1, 2, 0);
    question(p, "example.com", 1);
    ptr(p, Q);
    size_t at = rr(p, 99, 1);
    size_t prev = p->n;
    name(p, l63);
    for (int i = 0; i < 2; i++) {
        size_t here = p->n;
        labels(p, l63);
        ptr(p, (unsigned)prev);
        prev = here;
    }
    rr_end(p, at);
    labels(p, l63);
    ptr(p, (unsigned)prev);
    a_rr(p, 1, "192.0.2.1");
}

static void b_a_badlen(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 1);
    ptr(p, Q);
    size_t at = rr(p, 1, 1);
    bytes(p, "\xc0\x00\x02\x01\x00", 5);
    rr_end(p, at);
}

static void b_mx_trailing(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 15);
    ptr(p, Q);
    size_t at = rr(p, 15, 1);
    u16(p, 10);
    ptr(p, Q);
    u8(p, 0); /* one octet after the name */
    rr_end(p, at);
}

static void b_txt_overrun(struct pb *p)
{
    hdr(p, 0, 1, 1, 0);
    question(p, "example.com", 16);
    ptr(p, Q);
    size_t at = rr(p, 16, 1);
    bytes(p,
          "\x05"
          "abc",
          4);
    rr_end(p, at);
}

static void b_rdlen_past_end(struct pb *p)
{
    b_a_compressed(p);
    p->b[p->n - 5] = 0x40; /* RDLENGTH of the last RR: 4 -> 64 */
}

static void b_qd0(struct pb *p)
{
    hdr(p, 0, 0, 0, 0);
}

static void b_qd2(struct pb *p)
{
    hdr(p, 0, 2, 0, 0);
    question(p, "example.com", 1);
    question(p, "example.com", 1);
}

static void b_query_not_answer(struct pb *p)
{
    b_a_compressed(p);
    p->b[2] = 0x01; /* QR clear */
}

static void b_ancount_lies(struct pb *p)
{
    b_a_compressed(p);
    p->b[7] = 3; /* three answers announced, two present */
}

typedef void (*builder)(struct pb *);

struct pcase {
    const char *what;
    builder build;
    const char *qname;
    enum dns_type qtype;
    enum dns_parse_err err;
    unsigned rcode;
    size_t n;
    const char *rr[3]; /* formatted records, in order */
    uint32_t min_ttl;
    int neg_ttl; /* -1: no SOA */
    unsigned cnames;
};

static const struct pcase cases[] = {
    {"A, owners compressed",
     b_a_compressed,
     "example.com",
     DNS_A,
     DNS_PARSE_OK,
     0,
     2,
     {"192.0.2.1/300", "192.0.2.2/60"},
     60,
     -1,
     0},
    {"A, qname any case + dot",
     b_a_compressed,
     "EXAMPLE.Com.",
     DNS_A,
     DNS_PARSE_OK,
     0,
     2,
     {"192.0.2.1/300", "192.0.2.2/60"},
     60,
     -1,
     0},
    {"AAAA",
     b_aaaa,
     "example.com",
     DNS_AAAA,
     DNS_PARSE_OK,
     0,
     1,
     {"2001:db8::1/7200"},
     7200,
     -1,
     0},
    {"MX, exchange compressed",
     b_mx,
     "example.com",
     DNS_MX,
     DNS_PARSE_OK,
     0,
     2,
     {"20 mx2.example.com/300", "10 mx1.other.net/300"},
     300,
     -1,
     0},
    {"null MX", b_null_mx, "example.com", DNS_MX, DNS_PARSE_OK, 0, 1, {"0 ./3600"}, 3600, -1, 0},
    {"PTR, odd label bytes escaped",
     b_ptr_escapes,
     "1.2.0.192.in-addr.arpa",
     DNS_PTR,
     DNS_PARSE_OK,
     0,
     1,
     {"a\\.b\\007c.example.com/300"},
     300,
     -1,
     0},
    {"TXT, strings concatenated",
     b_txt,
     "2.0.0.127.zen.example",
     DNS_TXT,
     DNS_PARSE_OK,
     0,
     2,
     {"abcdef/900", "a/900"},
     900,
     -1,
     0},
    {"CNAME chain",
     b_cname_chain,
     "www.example.com",
     DNS_A,
     DNS_PARSE_OK,
     0,
     1,
     {"192.0.2.80/600"},
     30,
     -1,
     2},
    {"CNAME chain, asked for another type",
     b_cname_chain,
     "www.example.com",
     DNS_AAAA,
     DNS_PARSE_QUESTION,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"CNAME loop", b_cname_loop, "a.example.com", DNS_A, DNS_PARSE_CHAIN, 0, 0, {0}, 0, -1, 0},
    {"NXDOMAIN + SOA", b_nxdomain_soa, "nx.example.com", DNS_A, DNS_PARSE_OK, 3, 0, {0}, 0, 60, 0},
    {"NODATA, SOA TTL < MINIMUM",
     b_nodata_soa_ttl,
     "example.com",
     DNS_AAAA,
     DNS_PARSE_OK,
     0,
     0,
     {0},
     0,
     30,
     0},
    {"SERVFAIL", b_servfail, "example.com", DNS_A, DNS_PARSE_OK, 2, 0, {0}, 0, -1, 0},
    {"TTL high bit reads as 0",
     b_ttl_highbit,
     "example.com",
     DNS_A,
     DNS_PARSE_OK,
     0,
     1,
     {"192.0.2.1/0"},
     0,
     -1,
     0},
    {"any question name (NULL)",
     b_mx,
     NULL,
     DNS_MX,
     DNS_PARSE_OK,
     0,
     2,
     {"20 mx2.example.com/300", "10 mx1.other.net/300"},
     300,
     -1,
     0},
    {"pointer to itself", b_loop_self, "example.com", DNS_A, DNS_PARSE_LOOP, 0, 0, {0}, 0, -1, 0},
    {"pointer forward", b_loop_forward, "example.com", DNS_A, DNS_PARSE_LOOP, 0, 0, {0}, 0, -1, 0},
    {"pointer back into its own name",
     b_loop_pingpong,
     "example.com",
     DNS_A,
     DNS_PARSE_LOOP,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"extended label type", b_label_ext, NULL, DNS_A, DNS_PARSE_NAME, 0, 0, {0}, 0, -1, 0},
    {"name over 255 octets", b_name_too_long, NULL, DNS_A, DNS_PARSE_NAME, 0, 0, {0}, 0, -1, 0},
    {"name over 255 through pointers",
     b_name_too_long_ptr,
     "example.com",
     DNS_A,
     DNS_PARSE_NAME,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"A with RDLENGTH 5", b_a_badlen, "example.com", DNS_A, DNS_PARSE_RDATA, 0, 0, {0}, 0, -1, 0},
    {"MX with a trailing octet",
     b_mx_trailing,
     "example.com",
     DNS_MX,
     DNS_PARSE_RDATA,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"TXT string past RDATA",
     b_txt_overrun,
     "example.com",
     DNS_TXT,
     DNS_PARSE_RDATA,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"RDLENGTH past the end",
     b_rdlen_past_end,
     "example.com",
     DNS_A,
     DNS_PARSE_SHORT,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"ANCOUNT larger than the packet",
     b_ancount_lies,
     "example.com",
     DNS_A,
     DNS_PARSE_SHORT,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"wrong question name",
     b_a_compressed,
     "example.org",
     DNS_A,
     DNS_PARSE_QUESTION,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"wrong question type",
     b_a_compressed,
     "example.com",
     DNS_MX,
     DNS_PARSE_QUESTION,
     0,
     0,
     {0},
     0,
     -1,
     0},
    {"no question", b_qd0, NULL, DNS_A, DNS_PARSE_QUESTION, 0, 0, {0}, 0, -1, 0},
    {"two questions", b_qd2, NULL, DNS_A, DNS_PARSE_QUESTION, 0, 0, {0}, 0, -1, 0},
    {"a query, not an answer",
     b_query_not_answer,
     "example.com",
     DNS_A,
     DNS_PARSE_NOTANSWER,
     0,
     0,
     {0},
     0,
     -1,
     0},
};

/* Format a record as the table spells it: "<data>/<ttl>". */
static void fmt_rr(enum dns_type t, const struct dns_rr *r, char *out, size_t len)
{
    switch (t) {
    case DNS_A:
    case DNS_AAAA:
        snprintf(out, len, "%s/%u", r->addr_str, r->ttl);
        break;
    case DNS_MX:
        snprintf(out, len, "%u %s/%u", r->pref, r->host, r->ttl);
        break;
    case DNS_PTR:
        snprintf(out, len, "%s/%u", r->host, r->ttl);
        break;
    default:
        snprintf(out, len, "%s/%u", r->text, r->ttl);
        break;
    }
}

static void check_case(const struct pcase *c)
{
    struct pb p = {{0}, 0};
    struct dns_result *res;
    char buf[600];

    c->build(&p);
    enum dns_parse_err e = dns_parse_answer(p.b, p.n, c->qname, c->qtype, &res);
    if (e != c->err)
        fail_msg("%s: got %s, want %s", c->what, dns_parse_strerror(e), dns_parse_strerror(c->err));
    if (e != DNS_PARSE_OK) {
        assert_null(res);
        return;
    }
    assert_int_equal(res->rcode, c->rcode);
    if (res->n != c->n)
        fail_msg("%s: %zu records, want %zu", c->what, res->n, c->n);
    for (size_t i = 0; i < res->n; i++) {
        fmt_rr(c->qtype, &res->rr[i], buf, sizeof buf);
        if (strcmp(buf, c->rr[i]) != 0)
            fail_msg("%s: record %zu is \"%s\", want \"%s\"", c->what, i, buf, c->rr[i]);
    }
    assert_int_equal(res->min_ttl, c->min_ttl);
    assert_int_equal(res->has_soa, c->neg_ttl >= 0);
    if (c->neg_ttl >= 0)
        assert_int_equal(res->neg_ttl, c->neg_ttl);
    assert_int_equal(res->cnames, c->cnames);
    assert_non_null(res->qname);
    dns_result_free(res);
}

static void test_table(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i]);
}

/* Every proper prefix of every well-formed packet is an error, never a
 * read past the end (ASan checks the latter; the copy is exactly n long). */
static void test_truncated_everywhere(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].err != DNS_PARSE_OK)
            continue;
        struct pb p = {{0}, 0};
        cases[i].build(&p);
        for (size_t n = 0; n < p.n; n++) {
            uint8_t *copy = malloc(n ? n : 1);
            memcpy(copy, p.b, n);
            struct dns_result *res;
            enum dns_parse_err e = dns_parse_answer(copy, n, cases[i].qname, cases[i].qtype, &res);
            if (e == DNS_PARSE_OK)
                fail_msg("%s: prefix of %zu/%zu octets parsed", cases[i].what, n, p.n);
            free(copy);
        }
    }
}

/* Flip every byte of every well-formed packet to a few values: whatever
 * the outcome, no crash, no leak, strings NUL-terminated. */
static void test_corruption(void **state)
{
    static const uint8_t vals[] = {0x00, 0x01, 0x3f, 0x40, 0xc0, 0xff};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].err != DNS_PARSE_OK)
            continue;
        struct pb p = {{0}, 0};
        cases[i].build(&p);
        for (size_t at = 0; at < p.n; at++) {
            for (size_t v = 0; v < sizeof vals; v++) {
                uint8_t *copy = malloc(p.n);
                memcpy(copy, p.b, p.n);
                copy[at] = vals[v];
                struct dns_result *res;
                if (dns_parse_answer(copy, p.n, NULL, cases[i].qtype, &res) == DNS_PARSE_OK) {
                    for (size_t k = 0; k < res->n; k++) {
                        if (res->rr[k].host)
                            assert_true(strlen(res->rr[k].host) < 1024);
                        if (res->rr[k].text)
                            assert_int_equal(res->rr[k].text[res->rr[k].text_len], '\0');
                    }
                    dns_result_free(res);
                }
                free(copy);
            }
        }
    }
}

static void test_name_to_wire(void **state)
{
    uint8_t w[256];
    char l63[70], l64[70], big[300];

    assert_int_equal(dns_name_to_wire("example.com", w, sizeof w), 13);
    assert_memory_equal(w,
                        "\x07"
                        "example\x03"
                        "com\x00",
                        13);
    assert_int_equal(dns_name_to_wire("example.com.", w, sizeof w), 13);
    assert_int_equal(dns_name_to_wire(".", w, sizeof w), 1);
    assert_int_equal(dns_name_to_wire("a\\.b.c", w, sizeof w), 7);
    assert_memory_equal(w,
                        "\x03"
                        "a.b\x01"
                        "c\x00",
                        7);
    assert_int_equal(dns_name_to_wire("a\\007b", w, sizeof w), 5);
    assert_int_equal(w[2], 7);
    assert_int_equal(dns_name_to_wire("a\\999", w, sizeof w), 0);
    assert_int_equal(dns_name_to_wire("a\\", w, sizeof w), 0);
    assert_int_equal(dns_name_to_wire("", w, sizeof w), 0);
    assert_int_equal(dns_name_to_wire("a..b", w, sizeof w), 0);
    assert_int_equal(dns_name_to_wire(".a", w, sizeof w), 0);
    memset(l63, 'x', 63);
    l63[63] = '\0';
    memset(l64, 'x', 64);
    l64[64] = '\0';
    assert_int_equal(dns_name_to_wire(l63, w, sizeof w), 65);
    assert_int_equal(dns_name_to_wire(l64, w, sizeof w), 0);
    /* 253 characters = 255 octets: the longest name; one more is too long */
    snprintf(big, sizeof big, "%s.%s.%s.%.61s", l63, l63, l63, l63);
    assert_int_equal(strlen(big), 253);
    assert_int_equal(dns_name_to_wire(big, w, sizeof w), 255);
    strcat(big, "x");
    assert_int_equal(dns_name_to_wire(big, w, sizeof w), 0);
    assert_int_equal(dns_name_to_wire("example.com", w, 5), 0);
}

static void test_types(void **state)
{
    enum dns_type t;
    assert_true(dns_type_from_str("aaaa", &t));
    assert_int_equal(t, DNS_AAAA);
    assert_true(dns_type_from_str("Mx", &t));
    assert_int_equal(t, DNS_MX);
    assert_false(dns_type_from_str("SOA", &t));
    assert_string_equal(dns_type_str(DNS_TXT), "TXT");
    assert_int_equal(dns_type_code(DNS_PTR), 12);
    assert_int_equal(dns_type_code(DNS_AAAA), 28);
    assert_string_equal(dns_type_str((enum dns_type)99), "?");
    assert_int_equal(dns_type_code((enum dns_type)99), 0);
    assert_string_equal(dns_parse_strerror(DNS_PARSE_LOOP), "compression pointer loop");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),      cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_corruption), cmocka_unit_test(test_name_to_wire),
        cmocka_unit_test(test_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
