/*
 * policy_lookup: the pre-banner DNS lookups of one connection (lookup.h has
 * the contract; docs/policy-lookups.md the operator's view).
 *
 * A lookup owns a struct policy_facts and up to 2 + POLICY_MAX_DNSLISTS
 * outstanding resolver requests, each remembered by its request id (0 =
 * not pending), never by pointer:
 *
 *   ptr_id      PTR of the client      -> on_ptr: sets facts.ptr; on PTR_OK
 *                                         asks the forward lookup
 *   fwd_id      A/AAAA of the PTR name -> on_forward: sets facts.verified
 *   zone_id[i]  A of <reversed ip>.zone -> on_zone: facts.dnslists[i]
 *
 * States of a lookup:
 *
 *   RUNNING --(last pending answer)------+--> IN_CALLBACK --(returns)--> freed
 *      |    --(deadline timer: cancel    |
 *      |       every pending id)---------+
 *      +----(policy_lookup_cancel: cancel every pending id)--> freed
 *
 * Everything that ends a lookup runs from the loop (a resolver callback or
 * the deadline timer), so the user callback never runs inside
 * policy_lookup_start(). The PTR query is always asked, so a running lookup
 * always has something pending and needs no zero-delay "nothing to do"
 * event.
 *
 * The chains are independent resolver requests: a slow list or PTR never
 * delays another chain or another connection (the resolver gives each
 * request its own timeout); only the forward lookup waits, necessarily, for
 * its PTR answer.
 *
 * Ownership: the object belongs to this module until the user callback
 * returns, then it is freed here. Zones and reputation codes are copied at
 * start, so a configuration reload while lookups are in flight is safe.
 */
#include "policy/lookup.h"

#include "core/alloc.h"
#include "core/config.h"
#include "dns/resolver.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Why 10: the appliance's SBRS scale is [-10.0, +10.0]. */
#define SBRS_MIN -10.0
#define SBRS_MAX 10.0

/* A reputation list, copied from the configuration. */
struct lk_list {
    size_t zone;     /* index in facts.dnslists and zone_id */
    double weight;   /* added to the score when the list lists the host */
    uint32_t *codes; /* host byte order; ncodes == 0: any 127.0.0.0/8 */
    size_t ncodes;
    bool listed;
};

struct policy_lookup {
    struct resolver *r;
    policy_lookup_cb cb;
    void *arg;
    bool in_callback;
    double t0;    /* monotonic ms at start */
    double t_fwd; /* monotonic ms when the forward lookup was asked */
    struct event *deadline;
    uint64_t ptr_id; /* pending request ids, 0 = not pending */
    uint64_t fwd_id;
    uint64_t zone_id[POLICY_MAX_DNSLISTS];
    size_t zones_pending;
    struct lk_list lists[POLICY_MAX_DNSLISTS];
    size_t nlists;
    struct policy_facts facts;
};

/* ---- address helpers -------------------------------------------------- */

/* Parse an IPv4/IPv6 literal into *family and the IPv4-mapped form *a6. An
 * IPv4-mapped IPv6 literal (a dual-stack socket's view of an IPv4 client)
 * is reported as AF_INET. */
static bool lk_parse_ip(const char *ip, int *family, struct in6_addr *a6)
{
    struct in_addr a4;

    if (ip == NULL)
        return false;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        memset(a6, 0, sizeof *a6);
        a6->s6_addr[10] = 0xff;
        a6->s6_addr[11] = 0xff;
        memcpy(&a6->s6_addr[12], &a4, 4);
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, ip, a6) != 1)
        return false;
    *family = IN6_IS_ADDR_V4MAPPED(a6) ? AF_INET : AF_INET6;
    return true;
}

/* The IPv4 address of a mapped a6, host byte order. */
static uint32_t lk_v4(const struct in6_addr *a6)
{
    const uint8_t *b = &a6->s6_addr[12];
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static bool lk_v4_in(uint32_t a, uint32_t net, unsigned prefix)
{
    uint32_t mask = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
    return (a & mask) == net;
}

static bool lk_v4_private(uint32_t a)
{
    static const struct {
        uint32_t net;
        unsigned prefix;
    } ranges[] = {
        {0x00000000u, 8},  /* 0/8 "this network", includes unspecified */
        {0x0a000000u, 8},  /* 10/8, RFC 1918 */
        {0x64400000u, 10}, /* 100.64/10 CGNAT, RFC 6598 */
        {0x7f000000u, 8},  /* 127/8 loopback */
        {0xa9fe0000u, 16}, /* 169.254/16 link-local */
        {0xac100000u, 12}, /* 172.16/12, RFC 1918 */
        {0xc0a80000u, 16}, /* 192.168/16, RFC 1918 */
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        if (lk_v4_in(a, ranges[i].net, ranges[i].prefix))
            return true;
    return false;
}

static bool lk_v6_private(const struct in6_addr *a6)
{
    const uint8_t *b = a6->s6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || IN6_IS_ADDR_UNSPECIFIED(a6) ||
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
           (b[0] & 0xfe) == 0xfc;                     /* fc00::/7 unique local */
}

static bool lk_private(int family, const struct in6_addr *a6)
{
    return family == AF_INET ? lk_v4_private(lk_v4(a6)) : lk_v6_private(a6);
}

bool policy_ip_is_private(const char *ip)
{
    int family;
    struct in6_addr a6;
    return lk_parse_ip(ip, &family, &a6) && lk_private(family, &a6);
}

/* Length of zone without one trailing dot. */
static size_t lk_zone_len(const char *zone)
{
    size_t n = strlen(zone);
    return n > 0 && zone[n - 1] == '.' ? n - 1 : n;
}

static bool lk_dnsbl_name(int family, const struct in6_addr *a6, const char *zone, char *out,
                          size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    size_t zlen = lk_zone_len(zone);
    char rev[72];
    size_t n = 0;
    int len;

    if (zlen == 0)
        return false;
    if (family == AF_INET) {
        const uint8_t *b = &a6->s6_addr[12];
        n = (size_t)snprintf(rev, sizeof rev, "%u.%u.%u.%u", b[3], b[2], b[1], b[0]);
    } else {
        /* RFC 5782 §2.4: every nibble, least significant first */
        for (int i = 15; i >= 0; i--) {
            rev[n++] = hex[a6->s6_addr[i] & 0xf];
            rev[n++] = '.';
            rev[n++] = hex[a6->s6_addr[i] >> 4];
            rev[n++] = i > 0 ? '.' : '\0';
        }
    }
    len = snprintf(out, outlen, "%s.%.*s", rev, (int)zlen, zone);
    return len > 0 && (size_t)len < outlen;
}

bool policy_dnsbl_name(const char *ip, const char *zone, char *out, size_t outlen)
{
    int family;
    struct in6_addr a6;
    if (zone == NULL || out == NULL || !lk_parse_ip(ip, &family, &a6))
        return false;
    return lk_dnsbl_name(family, &a6, zone, out, outlen);
}

/* ---- time ------------------------------------------------------------- */

static double lk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ---- zones and lists -------------------------------------------------- */

/* Index of zone in facts.dnslists, adding it (lower-cased, without the
 * trailing dot) if new. Returns -1 when it is empty, too long, or the table
 * is full. Why a fixed table: facts.dnslists has POLICY_MAX_DNSLISTS slots
 * and the facts travel by value; more lists than that is a configuration
 * the loader should refuse, and here they are simply not asked. */
static int lk_zone_add(struct policy_facts *f, const char *zone)
{
    size_t zlen = zone == NULL ? 0 : lk_zone_len(zone);
    char norm[sizeof f->dnslists[0].zone];

    if (zlen == 0 || zlen >= sizeof norm)
        return -1;
    for (size_t i = 0; i < zlen; i++)
        norm[i] = (zone[i] >= 'A' && zone[i] <= 'Z') ? (char)(zone[i] - 'A' + 'a') : zone[i];
    norm[zlen] = '\0';
    for (size_t i = 0; i < f->ndnslists; i++)
        if (strcmp(f->dnslists[i].zone, norm) == 0)
            return (int)i;
    if (f->ndnslists == POLICY_MAX_DNSLISTS)
        return -1;
    memcpy(f->dnslists[f->ndnslists].zone, norm, zlen + 1);
    return (int)f->ndnslists++;
}

/* Copy one reputation list (its codes parsed once, here). */
static void lk_list_add(struct policy_lookup *l, const struct cfg_dnslist *d)
{
    int zone = lk_zone_add(&l->facts, d->zone);
    if (zone < 0 || l->nlists == POLICY_MAX_DNSLISTS)
        return;
    struct lk_list *li = &l->lists[l->nlists++];
    li->zone = (size_t)zone;
    li->weight = d->weight;
    if (d->ncodes > 0)
        li->codes = xcalloc(d->ncodes, sizeof *li->codes);
    for (size_t i = 0; i < d->ncodes; i++) {
        struct in_addr a;
        /* the loader validates codes; one that does not parse matches nothing */
        if (d->codes[i] != NULL && inet_pton(AF_INET, d->codes[i], &a) == 1)
            li->codes[li->ncodes++] = ntohl(a.s_addr);
    }
    if (d->ncodes > 0 && li->ncodes == 0) {
        /* every code was bad: keep "nothing matches", not "any 127/8" */
        li->codes[0] = 0;
        li->ncodes = 1;
    }
}

static void lk_zones_collect(struct policy_lookup *l, const struct policy_lookup_params *p)
{
    const struct cfg_reputation *rep = p->reputation;
    if (rep != NULL)
        for (size_t i = 0; i < rep->nlists; i++)
            lk_list_add(l, &rep->lists[i]);
    for (size_t i = 0; i < p->nzones && p->zones != NULL; i++)
        (void)lk_zone_add(&l->facts, p->zones[i]);
}

/* Does an A record a (host order) count for a filter? */
static bool lk_code_matches(const uint32_t *codes, size_t ncodes, uint32_t a)
{
    /* RFC 5782 §2.3: listings are 127.0.0.0/8 addresses; anything else
     * (a wildcard or hijacking resolver) must not list the world */
    if (ncodes == 0)
        return (a >> 24) == 127;
    for (size_t i = 0; i < ncodes; i++)
        if (codes[i] == a)
            return true;
    return false;
}

static bool lk_answer_matches(const struct dns_answer *ans, const uint32_t *codes, size_t ncodes)
{
    for (size_t i = 0; i < ans->n; i++)
        if (ans->rr[i].family == AF_INET &&
            lk_code_matches(codes, ncodes, ntohl(ans->rr[i].addr.v4.s_addr)))
            return true;
    return false;
}

/* ---- ending ----------------------------------------------------------- */

static void lk_free(struct policy_lookup *l)
{
    if (l->deadline != NULL)
        event_free(l->deadline);
    for (size_t i = 0; i < l->nlists; i++)
        free(l->lists[i].codes);
    free(l);
}

/* Cancel every pending request; each is marked as failed in the facts. */
static void lk_cancel_pending(struct policy_lookup *l)
{
    double now = lk_now_ms();
    if (l->ptr_id != 0) {
        resolver_cancel(l->r, l->ptr_id);
        l->ptr_id = 0;
        l->facts.ptr = PTR_TEMPFAIL;
        l->facts.ms_ptr = now - l->t0;
    }
    if (l->fwd_id != 0) {
        resolver_cancel(l->r, l->fwd_id);
        l->fwd_id = 0;
        l->facts.verified = false;
        l->facts.ms_forward = now - l->t_fwd;
    }
    for (size_t i = 0; i < l->facts.ndnslists; i++) {
        if (l->zone_id[i] == 0)
            continue;
        resolver_cancel(l->r, l->zone_id[i]);
        l->zone_id[i] = 0;
        l->facts.dnslists[i].answered = false;
    }
    if (l->zones_pending > 0) {
        l->zones_pending = 0;
        l->facts.ms_reputation = now - l->t0;
    }
}

/* The score: None when no reputation list answered, else the clamped sum
 * of the weights of the lists that listed the host. */
static void lk_score(struct policy_lookup *l)
{
    struct policy_facts *f = &l->facts;
    double sum = 0.0;

    f->sbrs_none = true;
    for (size_t i = 0; i < l->nlists; i++) {
        if (!f->dnslists[l->lists[i].zone].answered)
            continue;
        f->sbrs_none = false;
        if (l->lists[i].listed)
            sum += l->lists[i].weight;
    }
    if (sum < SBRS_MIN)
        sum = SBRS_MIN;
    if (sum > SBRS_MAX)
        sum = SBRS_MAX;
    f->sbrs = f->sbrs_none ? 0.0 : sum;
}

/* Run the user callback once and free the lookup. Called from the loop
 * only, with nothing pending. */
static void lk_finish(struct policy_lookup *l)
{
    lk_score(l);
    l->facts.ms_total = lk_now_ms() - l->t0;
    if (l->deadline != NULL)
        event_del(l->deadline);
    l->in_callback = true;
    l->cb(l->arg, &l->facts);
    lk_free(l);
}

/* End the lookup if nothing is pending. Must be the last use of l by the
 * caller: l may be freed. */
static void lk_maybe_finish(struct policy_lookup *l)
{
    if (l->ptr_id == 0 && l->fwd_id == 0 && l->zones_pending == 0)
        lk_finish(l);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct policy_lookup *l = arg;
    (void)fd;
    (void)what;
    lk_cancel_pending(l);
    lk_finish(l);
}

/* ---- answers ---------------------------------------------------------- */

static void on_forward(void *arg, const struct dns_answer *ans)
{
    struct policy_lookup *l = arg;
    struct policy_facts *f = &l->facts;

    l->fwd_id = 0;
    f->ms_forward = ans->elapsed_ms;
    for (size_t i = 0; ans->status == DNS_OK && i < ans->n && !f->verified; i++) {
        const struct dns_rr *rr = &ans->rr[i];
        if (f->family == AF_INET)
            f->verified =
                rr->family == AF_INET && memcmp(&rr->addr.v4, &f->addr6.s6_addr[12], 4) == 0;
        else
            f->verified = rr->family == AF_INET6 && memcmp(&rr->addr.v6, &f->addr6, 16) == 0;
    }
    lk_maybe_finish(l);
}

/* Keep the first PTR name and ask for its addresses. */
static void lk_ptr_found(struct policy_lookup *l, const char *host)
{
    struct policy_facts *f = &l->facts;
    size_t n = strlen(host);

    f->ptr = PTR_OK;
    /* A name that does not fit is only possible with many \DDD escapes
     * (RFC 1035 names are at most 255 octets): keep what fits for the log,
     * but never forward-confirm a truncated name. The root "." names no
     * host: nothing to confirm either. */
    for (size_t i = 0; i < n && i < sizeof f->ptr_name - 1; i++)
        f->ptr_name[i] = (host[i] >= 'A' && host[i] <= 'Z') ? (char)(host[i] - 'A' + 'a') : host[i];
    f->ptr_name[n < sizeof f->ptr_name ? n : sizeof f->ptr_name - 1] = '\0';
    if (n >= sizeof f->ptr_name || strcmp(host, ".") == 0)
        return;
    l->t_fwd = lk_now_ms();
    l->fwd_id =
        resolver_query(l->r, f->ptr_name, f->family == AF_INET ? DNS_A : DNS_AAAA, on_forward, l);
}

static void on_ptr(void *arg, const struct dns_answer *ans)
{
    struct policy_lookup *l = arg;

    l->ptr_id = 0;
    l->facts.ms_ptr = ans->elapsed_ms;
    if (ans->status == DNS_OK && ans->n > 0)
        /* only the first name is checked, as the appliance does: a host
         * with several PTR names is verified by its first one */
        lk_ptr_found(l, ans->rr[0].host);
    else if (dns_status_is_final(ans->status))
        l->facts.ptr = PTR_MISSING; /* NXDOMAIN, NODATA */
    else
        l->facts.ptr = PTR_TEMPFAIL;
    lk_maybe_finish(l);
}

static size_t lk_zone_of(const struct policy_lookup *l, uint64_t id)
{
    for (size_t i = 0; i < l->facts.ndnslists; i++)
        if (l->zone_id[i] == id)
            return i;
    /* every pending id is in zone_id and cancelled ids never call back */
    fprintf(stderr, "policy_lookup: answer for unknown request %llu\n", (unsigned long long)id);
    abort();
}

static void on_zone(void *arg, const struct dns_answer *ans)
{
    struct policy_lookup *l = arg;
    size_t z = lk_zone_of(l, ans->id);
    bool used = false, listed = false;

    l->zone_id[z] = 0;
    /* NXDOMAIN (and NODATA) is the list's "not listed"; only timeouts and
     * server failures leave the list unanswered (the score's None) */
    l->facts.dnslists[z].answered = dns_status_is_final(ans->status);
    for (size_t i = 0; i < l->nlists; i++) {
        struct lk_list *li = &l->lists[i];
        if (li->zone != z)
            continue;
        used = true;
        li->listed = ans->status == DNS_OK && lk_answer_matches(ans, li->codes, li->ncodes);
        listed = listed || li->listed;
    }
    if (!used) /* an extra dnslist[] zone: any 127/8 answer */
        listed = ans->status == DNS_OK && lk_answer_matches(ans, NULL, 0);
    l->facts.dnslists[z].listed = listed;
    if (--l->zones_pending == 0)
        l->facts.ms_reputation = lk_now_ms() - l->t0;
    lk_maybe_finish(l);
}

/* ---- start / cancel --------------------------------------------------- */

static void lk_facts_init(struct policy_facts *f, int family, const struct in6_addr *a6)
{
    memset(f, 0, sizeof *f);
    f->family = family;
    f->addr6 = *a6;
    if (family == AF_INET)
        inet_ntop(AF_INET, &a6->s6_addr[12], f->ip, sizeof f->ip);
    else
        inet_ntop(AF_INET6, a6, f->ip, sizeof f->ip);
    f->ptr = PTR_NOT_LOOKED;
    f->rfc1918 = lk_private(family, a6);
    f->sbrs_none = true;
    f->ms_ptr = f->ms_forward = f->ms_reputation = f->ms_total = -1;
}

static void lk_ask_zones(struct policy_lookup *l)
{
    /* 64 nibble labels + dots + a zone of at most 255 octets */
    char name[sizeof l->facts.dnslists[0].zone + 80];
    struct policy_facts *f = &l->facts;

    for (size_t i = 0; i < f->ndnslists; i++) {
        if (!lk_dnsbl_name(f->family, &f->addr6, f->dnslists[i].zone, name, sizeof name)) {
            fprintf(stderr, "policy_lookup: no DNS list name for %s\n", f->dnslists[i].zone);
            abort(); /* the buffer is sized for any zone lk_zone_add keeps */
        }
        l->zone_id[i] = resolver_query(l->r, name, DNS_A, on_zone, l);
        l->zones_pending++;
    }
}

struct policy_lookup *policy_lookup_start(struct event_base *base, struct resolver *r,
                                          const char *ip, const struct policy_lookup_params *p,
                                          policy_lookup_cb cb, void *arg)
{
    int family;
    struct in6_addr a6;

    if (!lk_parse_ip(ip, &family, &a6))
        return NULL;
    struct policy_lookup *l = xcalloc(1, sizeof *l);
    l->r = r;
    l->cb = cb;
    l->arg = arg;
    l->t0 = lk_now_ms();
    lk_facts_init(&l->facts, family, &a6);
    bool lookup_private = p->reputation != NULL && p->reputation->lookup_private;
    if (!l->facts.rfc1918 || lookup_private)
        lk_zones_collect(l, p);
    l->deadline = evtimer_new(base, on_deadline, l);
    if (l->deadline == NULL) {
        fprintf(stderr, "policy_lookup: evtimer_new failed\n");
        abort();
    }
    if (p->deadline_ms > 0) {
        struct timeval tv = {(time_t)(p->deadline_ms / 1000),
                             (suseconds_t)(p->deadline_ms % 1000 * 1000)};
        event_add(l->deadline, &tv);
    }
    /* the reverse DNS is logged for every host, private ones included */
    l->ptr_id = resolver_query_ptr(r, l->facts.ip, on_ptr, l);
    lk_ask_zones(l);
    return l;
}

void policy_lookup_cancel(struct policy_lookup *l)
{
    if (l == NULL || l->in_callback)
        return;
    lk_cancel_pending(l);
    lk_free(l);
}
