/*
 * dns_parse: strict, bounded parser of DNS answers (see dns_parse.h).
 *
 * Shape: a packet is a buffer plus explicit length; every read goes through
 * a cursor (an offset) that is checked against that length first. Names are
 * expanded into a fixed 255-octet wire-format buffer on the stack, never
 * allocated. Parsing runs in steps:
 *
 *   1. header and the single question (must match what we asked);
 *   2. one walk over the answer and authority sections that checks every RR
 *      header and RDATA bound, remembers where the answer section starts
 *      and reads the first SOA of the authority section;
 *   3. the CNAME chain from the question name, one scan of the answer
 *      section per link (bounded by DNS_MAX_CNAME);
 *   4. a counting pass over the records of the asked type owned by the end
 *      of the chain (sizes of their strings), one exact allocation, then the
 *      same pass again filling it.
 *
 * Invariants: nothing is allocated before the packet is known to be
 * well-formed up to the answer and authority sections; the result and all
 * its strings are one block, so freeing can never leak half a result.
 */
#include "dns/dns_parse.h"

#include "core/alloc.h"

#include <arpa/inet.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 1035 §2.3.4: 255 octets per name (wire form), 63 per label. */
#define DNS_NAME_MAX  255
#define DNS_LABEL_MAX 63
#define DNS_HDR_LEN   12
/* RR fixed part after the owner: type, class, TTL, RDLENGTH. */
#define DNS_RR_FIXED 10
/* Real chains are one to three links (CDNs, RFC 2317 classless reverse
 * delegation); anything longer is broken or hostile, and each link costs a
 * scan of the answer section. */
#define DNS_MAX_CNAME 8

#define DNS_CLASS_IN   1
#define DNS_T_CNAME    5
#define DNS_T_SOA      6
#define DNS_OPCODE_STD 0

static const struct {
    const char *name;
    uint16_t code;
} type_tab[DNS_TYPE__COUNT] = {
    [DNS_A] = {"A", 1},      [DNS_AAAA] = {"AAAA", 28}, [DNS_MX] = {"MX", 15},
    [DNS_PTR] = {"PTR", 12}, [DNS_TXT] = {"TXT", 16},
};

struct pkt {
    const uint8_t *p;
    size_t len;
};

/* A name in uncompressed wire form. */
struct wname {
    uint8_t b[DNS_NAME_MAX];
    size_t len;
};

/* One RR header: owner, fixed fields and where its RDATA is. */
struct rr_hdr {
    struct wname owner;
    uint16_t type;
    uint16_t class;
    uint32_t ttl;
    size_t rdoff;
    size_t rdlen;
};

/* What step 2 and 3 found; input to the collect passes. */
struct scan {
    struct pkt k;
    uint16_t qtype;
    size_t ancount;
    size_t an_off;      /* first answer RR */
    struct wname qname; /* question name as received */
    struct wname owner; /* end of the CNAME chain */
    uint32_t chain_ttl; /* min TTL over the CNAMEs followed */
    unsigned cnames;
};

const char *dns_type_str(enum dns_type t)
{
    return (unsigned)t < DNS_TYPE__COUNT ? type_tab[t].name : "?";
}

uint16_t dns_type_code(enum dns_type t)
{
    return (unsigned)t < DNS_TYPE__COUNT ? type_tab[t].code : 0;
}

bool dns_type_from_str(const char *s, enum dns_type *out)
{
    for (unsigned i = 0; i < DNS_TYPE__COUNT; i++) {
        if (strcasecmp(s, type_tab[i].name) == 0) {
            *out = (enum dns_type)i;
            return true;
        }
    }
    return false;
}

const char *dns_parse_strerror(enum dns_parse_err e)
{
    switch (e) {
    case DNS_PARSE_OK:
        return "ok";
    case DNS_PARSE_SHORT:
        return "truncated packet";
    case DNS_PARSE_NAME:
        return "malformed name";
    case DNS_PARSE_LOOP:
        return "compression pointer loop";
    case DNS_PARSE_QUESTION:
        return "question does not match the query";
    case DNS_PARSE_NOTANSWER:
        return "not an answer to a standard query";
    case DNS_PARSE_RDATA:
        return "malformed record data";
    case DNS_PARSE_CHAIN:
        return "CNAME chain too long";
    }
    return "unknown error";
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* RFC 2181 §8: a TTL with the most significant bit set is treated as 0. */
static uint32_t ttl_sane(uint32_t ttl)
{
    return (ttl & 0x80000000u) ? 0 : ttl;
}

/* Expand the (possibly compressed) name at *off into w and move *off past
 * the name as stored. Loop rule: every pointer must point strictly below
 * the lowest offset read so far for this name, so positions visited after
 * a jump can never reach that pointer again and the walk terminates after
 * at most len jumps. */
static enum dns_parse_err name_read(const struct pkt *k, size_t *off, struct wname *w)
{
    size_t pos = *off, lowest = *off, end = 0;
    bool jumped = false;

    w->len = 0;
    for (;;) {
        if (pos >= k->len)
            return DNS_PARSE_SHORT;
        uint8_t c = k->p[pos];
        if ((c & 0xc0) == 0xc0) {
            if (pos + 1 >= k->len)
                return DNS_PARSE_SHORT;
            size_t target = ((size_t)(c & 0x3f) << 8) | k->p[pos + 1];
            if (target >= lowest)
                return DNS_PARSE_LOOP;
            if (!jumped)
                end = pos + 2;
            jumped = true;
            lowest = target;
            pos = target;
            continue;
        }
        if (c > DNS_LABEL_MAX) /* 0x40/0x80: extended label types, obsolete */
            return DNS_PARSE_NAME;
        if (w->len + 1 + c > DNS_NAME_MAX)
            return DNS_PARSE_NAME;
        if (pos + 1 + c > k->len)
            return DNS_PARSE_SHORT;
        memcpy(w->b + w->len, k->p + pos, 1 + (size_t)c);
        w->len += 1 + (size_t)c;
        pos += 1 + (size_t)c;
        if (c == 0)
            break;
    }
    *off = jumped ? end : pos;
    return DNS_PARSE_OK;
}

/* Case-insensitive (ASCII only, RFC 4343) equality of two wire names.
 * Length octets are <= 63, below 'A', so lowering them is harmless. */
static bool wname_eq(const struct wname *a, const struct wname *b)
{
    if (a->len != b->len)
        return false;
    for (size_t i = 0; i < a->len; i++) {
        uint8_t x = a->b[i], y = b->b[i];
        if (x >= 'A' && x <= 'Z')
            x = (uint8_t)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (uint8_t)(y + 32);
        if (x != y)
            return false;
    }
    return true;
}

/* Characters one label octet takes in presentation form. */
static size_t pres_octet_len(uint8_t c)
{
    if (c == '.' || c == '\\')
        return 2;
    if (c > 0x20 && c < 0x7f)
        return 1;
    return 4;
}

/* Write the presentation form of w into out (NUL-terminated) if out is not
 * NULL; return its length without the NUL. */
static size_t name_present(const struct wname *w, char *out)
{
    size_t n = 0;

    if (w->len <= 1) {
        if (out)
            memcpy(out, ".", 2);
        return 1;
    }
    for (size_t i = 0; i < w->len && w->b[i] != 0;) {
        size_t l = w->b[i++];
        if (n > 0) {
            if (out)
                out[n] = '.';
            n++;
        }
        for (size_t j = 0; j < l; j++, i++) {
            uint8_t c = w->b[i];
            size_t cl = pres_octet_len(c);
            if (out && cl == 1)
                out[n] = (char)c;
            else if (out && cl == 2)
                out[n] = '\\', out[n + 1] = (char)c;
            else if (out)
                out[n] = '\\', out[n + 1] = (char)('0' + c / 100),
                out[n + 2] = (char)('0' + c / 10 % 10), out[n + 3] = (char)('0' + c % 10);
            n += cl;
        }
    }
    if (out)
        out[n] = '\0';
    return n;
}

/* One octet of a presentation label at s (escapes decoded) into *c;
 * returns the characters consumed, 0 if malformed. */
static size_t pres_octet_read(const char *s, uint8_t *c)
{
    if (s[0] != '\\') {
        *c = (uint8_t)s[0];
        return 1;
    }
    if (s[1] >= '0' && s[1] <= '9') {
        if (!(s[2] >= '0' && s[2] <= '9' && s[3] >= '0' && s[3] <= '9'))
            return 0;
        unsigned v =
            (unsigned)(s[1] - '0') * 100 + (unsigned)(s[2] - '0') * 10 + (unsigned)(s[3] - '0');
        if (v > 255)
            return 0;
        *c = (uint8_t)v;
        return 4;
    }
    if (s[1] == '\0')
        return 0;
    *c = (uint8_t)s[1];
    return 2;
}

size_t dns_name_to_wire(const char *name, uint8_t *out, size_t outlen)
{
    size_t n = 0;

    if (outlen < 1 || name[0] == '\0')
        return 0;
    if (strcmp(name, ".") == 0) {
        out[0] = 0;
        return 1;
    }
    const char *s = name;
    while (*s != '\0') {
        size_t lpos = n++;
        size_t l = 0;
        while (*s != '\0' && *s != '.') {
            uint8_t c;
            size_t used = pres_octet_read(s, &c);
            if (used == 0 || l == DNS_LABEL_MAX || n + 1 >= outlen || n + 1 >= DNS_NAME_MAX)
                return 0;
            out[n++] = c;
            l++;
            s += used;
        }
        if (l == 0)
            return 0; /* empty label: "a..b" or a leading dot */
        out[lpos] = (uint8_t)l;
        if (*s == '.')
            s++;
    }
    if (n >= outlen || n + 1 > DNS_NAME_MAX)
        return 0;
    out[n++] = 0;
    return n;
}

/* Read one RR header at *off and move *off past its RDATA. */
static enum dns_parse_err rr_read(const struct pkt *k, size_t *off, struct rr_hdr *h)
{
    enum dns_parse_err e = name_read(k, off, &h->owner);
    if (e != DNS_PARSE_OK)
        return e;
    if (k->len - *off < DNS_RR_FIXED)
        return DNS_PARSE_SHORT;
    const uint8_t *f = k->p + *off;
    h->type = rd16(f);
    h->class = rd16(f + 2);
    h->ttl = ttl_sane(rd32(f + 4));
    h->rdlen = rd16(f + 8);
    h->rdoff = *off + DNS_RR_FIXED;
    if (k->len - h->rdoff < h->rdlen)
        return DNS_PARSE_SHORT;
    *off = h->rdoff + h->rdlen;
    return DNS_PARSE_OK;
}

/* A name that must fill the RDATA exactly from off to rdoff+rdlen. */
static enum dns_parse_err rdata_name(const struct pkt *k, const struct rr_hdr *h, size_t off,
                                     struct wname *w)
{
    enum dns_parse_err e = name_read(k, &off, w);
    if (e != DNS_PARSE_OK)
        return e == DNS_PARSE_SHORT ? DNS_PARSE_RDATA : e;
    return off == h->rdoff + h->rdlen ? DNS_PARSE_OK : DNS_PARSE_RDATA;
}

/* SOA RDATA: MNAME, RNAME, then five 32-bit fields; returns MINIMUM. */
static enum dns_parse_err soa_minimum(const struct pkt *k, const struct rr_hdr *h,
                                      uint32_t *minimum)
{
    struct wname w;
    size_t off = h->rdoff, end = h->rdoff + h->rdlen;
    struct pkt rk = {k->p, end}; /* names may not run past the RDATA */

    for (int i = 0; i < 2; i++) {
        enum dns_parse_err e = name_read(&rk, &off, &w);
        if (e != DNS_PARSE_OK)
            return e == DNS_PARSE_SHORT ? DNS_PARSE_RDATA : e;
    }
    if (end - off != 20)
        return DNS_PARSE_RDATA;
    *minimum = ttl_sane(rd32(k->p + off + 16));
    return DNS_PARSE_OK;
}

/* Header and question: step 1. Leaves *off at the first answer RR. */
static enum dns_parse_err parse_question(struct scan *s, const char *qname, size_t *off)
{
    const uint8_t *p = s->k.p;

    if (s->k.len < DNS_HDR_LEN)
        return DNS_PARSE_SHORT;
    if (!(p[2] & 0x80) || ((p[2] >> 3) & 0x0f) != DNS_OPCODE_STD)
        return DNS_PARSE_NOTANSWER;
    if (rd16(p + 4) != 1)
        return DNS_PARSE_QUESTION;
    *off = DNS_HDR_LEN;
    enum dns_parse_err e = name_read(&s->k, off, &s->qname);
    if (e != DNS_PARSE_OK)
        return e;
    if (s->k.len - *off < 4)
        return DNS_PARSE_SHORT;
    if (rd16(p + *off) != s->qtype || rd16(p + *off + 2) != DNS_CLASS_IN)
        return DNS_PARSE_QUESTION;
    *off += 4;
    if (qname != NULL) {
        struct wname want;
        want.len = dns_name_to_wire(qname, want.b, sizeof want.b);
        if (want.len == 0 || !wname_eq(&want, &s->qname))
            return DNS_PARSE_QUESTION;
    }
    return DNS_PARSE_OK;
}

/* Step 2: bounds-check answer and authority; read the first SOA. */
static enum dns_parse_err walk_sections(struct scan *s, size_t off, struct dns_result *hdr)
{
    size_t nscount = rd16(s->k.p + 8);
    struct rr_hdr h;

    s->ancount = rd16(s->k.p + 6);
    s->an_off = off;
    for (size_t i = 0; i < s->ancount; i++) {
        enum dns_parse_err e = rr_read(&s->k, &off, &h);
        if (e != DNS_PARSE_OK)
            return e;
    }
    for (size_t i = 0; i < nscount; i++) {
        enum dns_parse_err e = rr_read(&s->k, &off, &h);
        if (e != DNS_PARSE_OK)
            return e;
        if (h.type != DNS_T_SOA || h.class != DNS_CLASS_IN || hdr->has_soa)
            continue;
        uint32_t minimum;
        e = soa_minimum(&s->k, &h, &minimum);
        if (e != DNS_PARSE_OK)
            return e;
        hdr->has_soa = true; /* RFC 2308 §5: the lesser of SOA TTL and MINIMUM */
        hdr->neg_ttl = h.ttl < minimum ? h.ttl : minimum;
    }
    return DNS_PARSE_OK;
}

/* Find a CNAME owned by s->owner in the answer section; on success s->owner
 * becomes its target. Returns 1 found, 0 none, <0 -error. */
static int chain_step(struct scan *s)
{
    size_t off = s->an_off;
    struct rr_hdr h;

    for (size_t i = 0; i < s->ancount; i++) {
        if (rr_read(&s->k, &off, &h) != DNS_PARSE_OK)
            return -DNS_PARSE_SHORT; /* cannot happen: walk_sections checked */
        if (h.type != DNS_T_CNAME || h.class != DNS_CLASS_IN || !wname_eq(&h.owner, &s->owner))
            continue;
        struct wname target;
        enum dns_parse_err e = rdata_name(&s->k, &h, h.rdoff, &target);
        if (e != DNS_PARSE_OK)
            return -(int)e;
        s->owner = target;
        if (h.ttl < s->chain_ttl)
            s->chain_ttl = h.ttl;
        return 1;
    }
    return 0;
}

/* Step 3: follow the CNAME chain from the question name. */
static enum dns_parse_err follow_chain(struct scan *s)
{
    s->owner = s->qname;
    s->chain_ttl = UINT32_MAX;
    s->cnames = 0;
    for (;;) {
        int r = chain_step(s);
        if (r < 0)
            return (enum dns_parse_err) - r;
        if (r == 0)
            return DNS_PARSE_OK;
        if (++s->cnames > DNS_MAX_CNAME)
            return DNS_PARSE_CHAIN;
    }
}

/* Output cursor of the collect passes: counting when res is NULL. */
struct sink {
    struct dns_result *res;
    char *str;    /* next free string byte (fill pass) */
    size_t bytes; /* string bytes needed (count pass) */
    size_t n;     /* records */
};

/* Reserve len+1 bytes of string space; NULL in the counting pass. */
static char *sink_str(struct sink *o, size_t len)
{
    o->bytes += len + 1;
    if (o->res == NULL)
        return NULL;
    char *s = o->str;
    o->str += len + 1;
    return s;
}

static enum dns_parse_err rr_addr(const struct pkt *k, const struct rr_hdr *h, struct dns_rr *rr)
{
    size_t want = h->type == 1 ? 4 : 16;
    if (h->rdlen != want)
        return DNS_PARSE_RDATA;
    if (rr == NULL)
        return DNS_PARSE_OK;
    rr->family = want == 4 ? AF_INET : AF_INET6;
    memcpy(want == 4 ? (void *)&rr->addr.v4 : (void *)&rr->addr.v6, k->p + h->rdoff, want);
    inet_ntop(rr->family, &rr->addr, rr->addr_str, sizeof rr->addr_str);
    return DNS_PARSE_OK;
}

/* MX (pref + name) or PTR (name). */
static enum dns_parse_err rr_host(const struct pkt *k, const struct rr_hdr *h, struct sink *o,
                                  struct dns_rr *rr)
{
    size_t off = h->rdoff;
    struct wname w;

    if (h->type == 15) {
        if (h->rdlen < 3)
            return DNS_PARSE_RDATA;
        if (rr)
            rr->pref = rd16(k->p + off);
        off += 2;
    }
    enum dns_parse_err e = rdata_name(k, h, off, &w);
    if (e != DNS_PARSE_OK)
        return e;
    char *s = sink_str(o, name_present(&w, NULL));
    if (rr) {
        name_present(&w, s);
        rr->host = s;
    }
    return DNS_PARSE_OK;
}

/* TXT: one or more <length><octets> strings filling the RDATA exactly. */
static enum dns_parse_err rr_txt(const struct pkt *k, const struct rr_hdr *h, struct sink *o,
                                 struct dns_rr *rr)
{
    const uint8_t *p = k->p + h->rdoff;
    size_t total = 0;

    if (h->rdlen == 0)
        return DNS_PARSE_RDATA;
    for (size_t i = 0; i < h->rdlen; i += 1 + (size_t)p[i]) {
        if (i + 1 + p[i] > h->rdlen)
            return DNS_PARSE_RDATA;
        total += p[i];
    }
    char *s = sink_str(o, total);
    if (rr == NULL)
        return DNS_PARSE_OK;
    size_t n = 0;
    for (size_t i = 0; i < h->rdlen; i += 1 + (size_t)p[i]) {
        memcpy(s + n, p + i + 1, p[i]);
        n += p[i];
    }
    s[n] = '\0';
    rr->text = s;
    rr->text_len = n;
    return DNS_PARSE_OK;
}

/* One matching record: validate it (count pass) or store it (fill pass). */
static enum dns_parse_err collect_one(const struct scan *s, const struct rr_hdr *h, struct sink *o)
{
    struct dns_rr *rr = o->res ? &o->res->rr[o->n] : NULL;
    enum dns_parse_err e;

    if (rr) {
        memset(rr, 0, sizeof *rr);
        rr->ttl = h->ttl;
    }
    switch (h->type) {
    case 1:
    case 28:
        e = rr_addr(&s->k, h, rr);
        break;
    case 15:
    case 12:
        e = rr_host(&s->k, h, o, rr);
        break;
    default:
        e = rr_txt(&s->k, h, o, rr);
        break;
    }
    if (e == DNS_PARSE_OK)
        o->n++;
    return e;
}

/* Step 4: the records of the asked type owned by the end of the chain. */
static enum dns_parse_err collect(const struct scan *s, struct sink *o)
{
    size_t off = s->an_off;
    struct rr_hdr h;

    for (size_t i = 0; i < s->ancount; i++) {
        if (rr_read(&s->k, &off, &h) != DNS_PARSE_OK)
            return DNS_PARSE_SHORT; /* cannot happen: walk_sections checked */
        if (h.type != s->qtype || h.class != DNS_CLASS_IN || !wname_eq(&h.owner, &s->owner))
            continue;
        enum dns_parse_err e = collect_one(s, &h, o);
        if (e != DNS_PARSE_OK)
            return e;
    }
    return DNS_PARSE_OK;
}

/* Allocate the result block for the counts in o and copy hdr into it. */
static struct dns_result *result_alloc(const struct dns_result *hdr, const struct sink *o,
                                       size_t qlen)
{
    size_t rr_off = (sizeof *hdr + alignof(struct dns_rr) - 1) & ~(alignof(struct dns_rr) - 1);
    size_t str_off = rr_off + o->n * sizeof(struct dns_rr);
    char *block = xmalloc(str_off + o->bytes + qlen + 1);
    struct dns_result *res = (struct dns_result *)(void *)block;

    *res = *hdr;
    res->rr = o->n ? (struct dns_rr *)(void *)(block + rr_off) : NULL;
    res->qname = block + str_off + o->bytes;
    return res;
}

enum dns_parse_err dns_parse_answer(const uint8_t *pkt, size_t len, const char *qname,
                                    enum dns_type qtype, struct dns_result **out)
{
    struct scan s = {.k = {pkt, len}, .qtype = dns_type_code(qtype)};
    struct dns_result hdr = {0};
    size_t off;
    enum dns_parse_err e;

    *out = NULL;
    if (s.qtype == 0)
        return DNS_PARSE_QUESTION;
    if ((e = parse_question(&s, qname, &off)) != DNS_PARSE_OK ||
        (e = walk_sections(&s, off, &hdr)) != DNS_PARSE_OK ||
        (e = follow_chain(&s)) != DNS_PARSE_OK)
        return e;
    struct sink count = {0};
    if ((e = collect(&s, &count)) != DNS_PARSE_OK)
        return e;

    hdr.rcode = pkt[3] & 0x0f;
    hdr.aa = (pkt[2] & 0x04) != 0;
    hdr.cnames = s.cnames;
    size_t qlen = name_present(&s.qname, NULL);
    struct dns_result *res = result_alloc(&hdr, &count, qlen);
    struct sink fill = {.res = res, .str = (char *)res->qname - count.bytes};
    collect(&s, &fill); /* same input, same outcome as the counting pass */
    name_present(&s.qname, (char *)res->qname);
    res->n = fill.n;
    res->min_ttl = s.chain_ttl;
    for (size_t i = 0; i < res->n; i++)
        if (res->rr[i].ttl < res->min_ttl)
            res->min_ttl = res->rr[i].ttl;
    if (res->n == 0)
        res->min_ttl = 0;
    *out = res;
    return DNS_PARSE_OK;
}

void dns_result_free(struct dns_result *res)
{
    free(res);
}
