/*
 * resolver: c-ares on the libevent loop, a shared cache, coalescing and
 * request ids (see resolver.h for the contract, docs/dns.md for the rules).
 *
 * Loop integration
 *   c-ares tells us about its sockets through ARES_OPT_SOCK_STATE_CB; each
 *   socket gets one persistent libevent event (struct sockev) for the
 *   directions c-ares wants; readiness calls ares_process_fd() for that one
 *   socket. One timer, re-armed from ares_timeout() after every c-ares call,
 *   drives retransmissions and timeouts. Nothing polls.
 *
 * Objects
 *   struct chan    an ares channel plus the resolver it belongs to (the
 *                  sock-state callback's data). One live channel; a
 *                  reconfigure makes a new one, then destroys the old one,
 *                  whose queries come back with ARES_EDESTRUCTION and are
 *                  re-sent on the new one.
 *   struct entry   one key (lower-cased name, type): either in flight (a
 *                  network query, with the requests waiting for it: that is
 *                  the coalescing) or cached (an answer and its expiry, on
 *                  the LRU list). In-flight entries are never evicted.
 *   struct answer  an immutable, reference-counted outcome: status, parsed
 *                  records, TTL, birth time. Shared by the cache entry and
 *                  every delivery of it, so eviction never frees what a
 *                  pending callback will read.
 *   struct req     one caller's request, found by id in r->reqs. WAITING on
 *                  an in-flight entry, or READY on r->ready with its answer.
 *
 * Invariants
 *   - User callbacks run only from deliver_cb (a zero timer), never from
 *     c-ares callbacks or resolver_query: so no user code ever runs inside
 *     ares_process_fd(), and a caller never re-enters itself.
 *   - A req is in r->reqs exactly until its callback starts or it is
 *     cancelled, so resolver_cancel() of a finished id finds nothing.
 *   - c-ares callbacks may run synchronously inside ares_query(); code
 *     never touches an entry after handing it to ares_query().
 */
#include "dns/resolver.h"

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"

#include <ares.h>
#include <arpa/inet.h>
#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

/* RFC 2308 §5 / RFC 9520: positive TTLs are clamped to [1 s, 1 day] (a TTL
 * of 0 would send every session's identical query to the network; a day
 * bounds how long a bad record can stick); negative answers without an SOA
 * get 300 s and are clamped to [1 s, 3 h] (RFC 2308 §5 suggests 1-3 hours
 * as the maximum); failures (SERVFAIL, REFUSED, timeout, unusable answer)
 * are cached 5 s (RFC 9520 §3.2: at least 1 s, so a broken zone does not
 * cost every new connection a full timeout, short enough that a transient
 * failure is soon retried). */
#define TTL_MIN     1
#define TTL_MAX     86400
#define NEG_TTL_DEF 300
#define NEG_TTL_MAX 10800
#define FAIL_TTL    5
/* DNS flag day 2020: 1232 octets fits any path MTU without fragmentation;
 * larger answers fall back to TCP (c-ares does that on TC). */
#define EDNS_PAYLOAD 1232
/* Cache buckets: a power of two above RESOLVER_CACHE_MAX plus what is in
 * flight, so chains stay about one entry long. */
#define ENTRY_BUCKETS 16384
/* Request buckets: ids are sequential, so id & mask spreads perfectly;
 * 4096 keeps chains short for thousands of concurrent sessions. */
#define REQ_BUCKETS 4096
/* Longest presentation name accepted (255 octets, each "\DDD"). */
#define NAME_TEXT_MAX 1024

struct resolver;

struct chan {
    struct resolver *r;
    ares_channel ch;
};

struct sockev {
    LIST_ENTRY(sockev) link;
    struct chan *c;
    ares_socket_t fd;
    short what;
    struct event *ev;
};

struct answer {
    int refs;
    enum dns_status status;
    struct dns_result *res; /* NULL when there are no records */
    uint32_t ttl;           /* cache lifetime; 0 = not cacheable */
    double born;            /* monotonic seconds */
};

struct req;
TAILQ_HEAD(req_list, req);

struct entry {
    struct resolver *r;
    LIST_ENTRY(entry) hlink;
    TAILQ_ENTRY(entry) lru; /* only while cached */
    char *name;
    enum dns_type type;
    uint32_t hash;
    bool in_flight;
    struct answer *ans; /* cached answer; NULL while in flight */
    double expires;
    struct req_list waiters;
};

enum req_state { REQ_WAITING, REQ_READY };

struct req {
    LIST_ENTRY(req) hlink;
    TAILQ_ENTRY(req) qlink; /* entry->waiters or r->ready */
    uint64_t id;
    enum req_state state;
    struct entry *e;    /* REQ_WAITING */
    struct answer *ans; /* REQ_READY */
    char *name;         /* as delivered in dns_answer.name */
    enum dns_type type;
    bool from_cache;
    double start;
    dns_cb cb;
    void *arg;
};

LIST_HEAD(entry_list, entry);
LIST_HEAD(req_hlist, req);
TAILQ_HEAD(lru_list, entry);

struct resolver {
    struct event_base *base;
    struct chan *chan;
    LIST_HEAD(, sockev) socks;
    struct event *timer;
    struct event *deliver_ev;
    struct entry_list entries[ENTRY_BUCKETS];
    struct lru_list lru; /* head = most recently used */
    size_t ncached;
    size_t cache_max;
    struct req_hlist reqs[REQ_BUCKETS];
    struct req_list ready;
    uint64_t next_id;
    int delivering; /* deliver_cb is running user callbacks */
    bool freeing;   /* resolver_free: ignore c-ares callbacks */
    bool dying;     /* resolver_free ran inside a callback */
    struct resolver_stats st;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t clamp_ttl(uint32_t ttl, uint32_t lo, uint32_t hi)
{
    return ttl < lo ? lo : ttl > hi ? hi : ttl;
}

const char *dns_status_str(enum dns_status s)
{
    static const char *const names[DNS_STATUS__COUNT] = {
        [DNS_OK] = "OK",           [DNS_NXDOMAIN] = "NXDOMAIN",
        [DNS_NODATA] = "NODATA",   [DNS_SERVFAIL] = "SERVFAIL",
        [DNS_TIMEOUT] = "TIMEOUT", [DNS_REFUSED] = "REFUSED",
        [DNS_ERROR] = "ERROR",
    };
    return (unsigned)s < DNS_STATUS__COUNT ? names[s] : "?";
}

bool dns_status_is_final(enum dns_status s)
{
    return s == DNS_OK || s == DNS_NXDOMAIN || s == DNS_NODATA;
}

/* ---- reverse names ------------------------------------------------------ */

bool dns_ptr_name(const char *ip, char *out, size_t outlen)
{
    unsigned char a[16];
    size_t n = 0;

    if (inet_pton(AF_INET, ip, a) == 1) {
        int w = snprintf(out, outlen, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
        return w > 0 && (size_t)w < outlen;
    }
    if (inet_pton(AF_INET6, ip, a) != 1 || outlen < 16 * 4 + sizeof "ip6.arpa")
        return false;
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[n++] = hex[a[i] & 0x0f];
        out[n++] = '.';
        out[n++] = hex[a[i] >> 4];
        out[n++] = '.';
    }
    memcpy(out + n, "ip6.arpa", sizeof "ip6.arpa");
    return true;
}

/* ---- answers ------------------------------------------------------------- */

static struct answer *answer_new(enum dns_status status, struct dns_result *res, uint32_t ttl)
{
    struct answer *a = xcalloc(1, sizeof *a);
    a->refs = 1;
    a->status = status;
    a->res = res;
    a->ttl = ttl;
    a->born = mono_now();
    return a;
}

static struct answer *answer_ref(struct answer *a)
{
    a->refs++;
    return a;
}

static void answer_unref(struct answer *a)
{
    if (a == NULL || --a->refs > 0)
        return;
    dns_result_free(a->res);
    free(a);
}

/* Status and cache TTL of a parsed answer. */
static struct answer *answer_from_result(struct dns_result *res)
{
    uint32_t neg = res->has_soa ? res->neg_ttl : NEG_TTL_DEF;

    switch (res->rcode) {
    case 0:
        if (res->n > 0)
            return answer_new(DNS_OK, res, clamp_ttl(res->min_ttl, TTL_MIN, TTL_MAX));
        return answer_new(DNS_NODATA, res, clamp_ttl(neg, TTL_MIN, NEG_TTL_MAX));
    case 3:
        return answer_new(DNS_NXDOMAIN, res, clamp_ttl(neg, TTL_MIN, NEG_TTL_MAX));
    case 2:
    case 4:
        return answer_new(DNS_SERVFAIL, res, FAIL_TTL);
    case 5:
        return answer_new(DNS_REFUSED, res, FAIL_TTL);
    default:
        return answer_new(DNS_ERROR, res, FAIL_TTL);
    }
}

/* Parse the raw answer c-ares handed us. */
static struct answer *answer_parse(const struct entry *e, const unsigned char *abuf, int alen)
{
    struct dns_result *res;

    if (abuf == NULL || alen <= 0)
        return answer_new(DNS_ERROR, NULL, FAIL_TTL);
    enum dns_parse_err pe = dns_parse_answer(abuf, (size_t)alen, e->name, e->type, &res);
    if (pe != DNS_PARSE_OK) {
        char esc[300];
        maillog(LOG_WARNING, "DNS unusable answer for %s %s: %s",
                log_escape(esc, sizeof esc, e->name, strlen(e->name)), dns_type_str(e->type),
                dns_parse_strerror(pe));
        return answer_new(DNS_ERROR, NULL, FAIL_TTL);
    }
    return answer_from_result(res);
}

/* A c-ares outcome without a packet. */
static struct answer *answer_from_status(int status)
{
    switch (status) {
    case ARES_ESERVFAIL:
    case ARES_ENOTIMP:
        return answer_new(DNS_SERVFAIL, NULL, FAIL_TTL);
    case ARES_EREFUSED:
        return answer_new(DNS_REFUSED, NULL, FAIL_TTL);
    case ARES_ETIMEOUT:
        return answer_new(DNS_TIMEOUT, NULL, FAIL_TTL);
    case ARES_ECONNREFUSED: /* no server reachable */
    case ARES_EBADRESP:
    case ARES_SUCCESS: /* without a packet: cannot happen, but not OK */
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
    case ARES_EFORMERR:
        return answer_new(DNS_ERROR, NULL, FAIL_TTL);
    default: /* local: ENOMEM, EBADNAME...: nothing to remember about the name */
        return answer_new(DNS_ERROR, NULL, 0);
    }
}

/* Map a c-ares outcome to an answer: from the packet whenever there is one
 * (ares_query passes it for every RCODE), so the RCODE, records and SOA
 * decide, not c-ares's summary of them. */
static struct answer *answer_from_ares(const struct entry *e, int status, const unsigned char *abuf,
                                       int alen)
{
    switch (status) {
    case ARES_SUCCESS:
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
    case ARES_EFORMERR:
    case ARES_ESERVFAIL:
    case ARES_ENOTIMP:
    case ARES_EREFUSED:
        if (abuf != NULL && alen > 0)
            return answer_parse(e, abuf, alen);
        break;
    default:
        break;
    }
    return answer_from_status(status);
}

/* ---- requests ------------------------------------------------------------ */

static struct req_hlist *req_bucket(struct resolver *r, uint64_t id)
{
    return &r->reqs[id & (REQ_BUCKETS - 1)];
}

static struct req *req_new(struct resolver *r, const char *name, enum dns_type type, dns_cb cb,
                           void *arg)
{
    struct req *q = xcalloc(1, sizeof *q);
    q->id = r->next_id++;
    q->name = xstrdup(name);
    q->type = type;
    q->cb = cb;
    q->arg = arg;
    q->start = mono_now();
    LIST_INSERT_HEAD(req_bucket(r, q->id), q, hlink);
    r->st.pending++;
    return q;
}

static struct req *req_find(struct resolver *r, uint64_t id)
{
    for (struct req *q = LIST_FIRST(req_bucket(r, id)); q != NULL; q = LIST_NEXT(q, hlink))
        if (q->id == id)
            return q;
    return NULL;
}

/* Take q out of the id table and of whichever list it is on. */
static void req_detach(struct resolver *r, struct req *q)
{
    LIST_REMOVE(q, hlink);
    r->st.pending--;
    if (q->state == REQ_WAITING)
        TAILQ_REMOVE(&q->e->waiters, q, qlink);
    else
        TAILQ_REMOVE(&r->ready, q, qlink);
}

static void req_free(struct req *q)
{
    answer_unref(q->ans);
    free(q->name);
    free(q);
}

/* Queue q for its callback on the next loop turn. Takes the ref a. */
static void req_ready(struct resolver *r, struct req *q, struct answer *a, bool from_cache)
{
    static const struct timeval zero = {0, 0};

    q->state = REQ_READY;
    q->e = NULL;
    q->ans = a;
    q->from_cache = from_cache;
    TAILQ_INSERT_TAIL(&r->ready, q, qlink);
    /* A zero timer rather than event_active(): timers run after the next
     * poll, so a chain of cache hits issued from callbacks cannot starve
     * socket events. */
    evtimer_add(r->deliver_ev, &zero);
}

/* ---- cache --------------------------------------------------------------- */

/* FNV-1a over the key. */
static uint32_t key_hash(const char *name, enum dns_type type)
{
    uint32_t h = 2166136261u ^ (uint32_t)type;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static struct entry *entry_find(struct resolver *r, const char *name, enum dns_type type)
{
    uint32_t h = key_hash(name, type);
    struct entry *e;
    for (e = LIST_FIRST(&r->entries[h & (ENTRY_BUCKETS - 1)]); e != NULL; e = LIST_NEXT(e, hlink)) {
        if (e->hash == h && e->type == type && strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

static struct entry *entry_new(struct resolver *r, const char *name, enum dns_type type)
{
    struct entry *e = xcalloc(1, sizeof *e);
    e->r = r;
    e->name = xstrdup(name);
    e->type = type;
    e->hash = key_hash(name, type);
    TAILQ_INIT(&e->waiters);
    LIST_INSERT_HEAD(&r->entries[e->hash & (ENTRY_BUCKETS - 1)], e, hlink);
    return e;
}

/* Drop the cached answer of e (it stays in the table). */
static void entry_uncache(struct resolver *r, struct entry *e)
{
    if (e->ans == NULL)
        return;
    TAILQ_REMOVE(&r->lru, e, lru);
    r->ncached--;
    answer_unref(e->ans);
    e->ans = NULL;
}

static void entry_free(struct resolver *r, struct entry *e)
{
    entry_uncache(r, e);
    LIST_REMOVE(e, hlink);
    free(e->name);
    free(e);
}

/* Evict least recently used answers beyond the bound. */
static void cache_trim(struct resolver *r)
{
    while (r->ncached > r->cache_max)
        entry_free(r, TAILQ_LAST(&r->lru, lru_list));
}

/* Remember a for e (takes the ref). */
static void cache_store(struct resolver *r, struct entry *e, struct answer *a)
{
    e->ans = a;
    e->expires = a->born + a->ttl;
    TAILQ_INSERT_HEAD(&r->lru, e, lru);
    r->ncached++;
    cache_trim(r);
}

/* Forget every cached answer; in-flight entries stay. */
static void cache_flush(struct resolver *r)
{
    struct entry *e;
    while ((e = TAILQ_FIRST(&r->lru)) != NULL)
        entry_free(r, e);
}

/* ---- c-ares on the loop -------------------------------------------------- */

static void timer_rearm(struct resolver *r)
{
    struct timeval tv, *tvp;

    if (r->chan == NULL)
        return;
    tvp = ares_timeout(r->chan->ch, NULL, &tv);
    if (tvp != NULL)
        evtimer_add(r->timer, tvp);
    else
        evtimer_del(r->timer);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct resolver *r = arg;
    ares_process_fd(r->chan->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    timer_rearm(r);
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
    struct sockev *s = arg;
    struct chan *c = s->c; /* s may be freed inside ares_process_fd */

    ares_process_fd(c->ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    timer_rearm(c->r);
}

static struct sockev *sockev_find(struct resolver *r, struct chan *c, ares_socket_t fd)
{
    struct sockev *s;
    for (s = LIST_FIRST(&r->socks); s != NULL; s = LIST_NEXT(s, link)) {
        if (s->c == c && s->fd == fd)
            return s;
    }
    return NULL;
}

static void sockev_free(struct sockev *s)
{
    LIST_REMOVE(s, link);
    event_free(s->ev);
    free(s);
}

/* ARES_OPT_SOCK_STATE_CB: c-ares wants (or no longer wants) a socket
 * watched. A handful of sockets at most (one UDP per server, TCP after a
 * truncated answer), so a list is enough. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct chan *c = data;
    struct resolver *r = c->r;
    struct sockev *s = sockev_find(r, c, fd);
    short what = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));

    if (what == 0) {
        if (s != NULL)
            sockev_free(s);
        return;
    }
    if (s != NULL && s->what == what)
        return;
    if (s == NULL) {
        s = xcalloc(1, sizeof *s);
        s->c = c;
        s->fd = fd;
        LIST_INSERT_HEAD(&r->socks, s, link);
    } else {
        event_free(s->ev);
    }
    s->what = what;
    s->ev = event_new(r->base, fd, (short)(what | EV_PERSIST), on_sock, s);
    if (s->ev == NULL || event_add(s->ev, NULL) != 0)
        abort(); /* out of memory or a broken base: invariant, not a DNS error */
}

static void on_ares_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* Start the network query of e. e may be completed (and freed) before this
 * returns: c-ares can call back synchronously. */
static void entry_send(struct resolver *r, struct entry *e)
{
    r->st.sent++;
    r->st.in_flight++;
    ares_query(r->chan->ch, e->name, 1 /* C_IN */, dns_type_code(e->type), on_ares_answer, e);
    timer_rearm(r);
}

/* The network query of e finished with a: hand it to every waiter, cache it. */
static void entry_complete(struct resolver *r, struct entry *e, struct answer *a)
{
    struct req *q;

    e->in_flight = false;
    r->st.outcomes[a->status]++;
    while ((q = TAILQ_FIRST(&e->waiters)) != NULL) {
        TAILQ_REMOVE(&e->waiters, q, qlink);
        req_ready(r, q, answer_ref(a), false);
    }
    if (a->ttl == 0) {
        answer_unref(a);
        entry_free(r, e);
    } else {
        cache_store(r, e, a);
    }
}

static void on_ares_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct entry *e = arg;
    struct resolver *r = e->r;

    if (r->freeing)
        return; /* resolver_free: the entry goes with everything else */
    r->st.in_flight--;
    if (status == ARES_EDESTRUCTION) {
        entry_send(r, e); /* a reconfigure destroyed the old channel */
        return;
    }
    entry_complete(r, e, answer_from_ares(e, status, abuf, alen));
}

/* ---- delivery ------------------------------------------------------------ */

/* Run one ready request's callback. q is already out of every list. */
static void req_deliver(struct req *q)
{
    const struct answer *a = q->ans;
    const struct dns_result *res = a->res;
    struct dns_rr *copy = NULL;
    double now = mono_now();
    struct dns_answer ans = {
        .id = q->id,
        .status = a->status,
        .name = q->name,
        .type = q->type,
        .n = a->status == DNS_OK ? res->n : 0,
        .rr = a->status == DNS_OK ? res->rr : NULL,
        .ttl = a->ttl,
        .elapsed_ms = (now - q->start) * 1000.0,
        .from_cache = q->from_cache,
    };

    if (q->from_cache) {
        /* What a caching resolver shows: TTLs minus the answer's age. */
        double left = a->born + a->ttl - now;
        uint32_t age = (uint32_t)(now - a->born);
        ans.ttl = left > 0 ? (uint32_t)left : 0;
        if (left > 0 && (double)ans.ttl < left)
            ans.ttl++; /* round up: a live entry never shows 0 */
        if (ans.n > 0) {
            copy = xmalloc(ans.n * sizeof *copy);
            memcpy(copy, res->rr, ans.n * sizeof *copy);
            for (size_t i = 0; i < ans.n; i++)
                copy[i].ttl = copy[i].ttl > age ? copy[i].ttl - age : 0;
            ans.rr = copy;
        }
    }
    q->cb(q->arg, &ans);
    free(copy);
}

static void resolver_release(struct resolver *r);

/* Zero timer: run the callbacks of the requests that were ready when it
 * fired; later ones wait for the next turn. */
static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    struct resolver *r = arg;
    struct req *q;
    size_t todo = 0;

    for (q = TAILQ_FIRST(&r->ready); q != NULL; q = TAILQ_NEXT(q, qlink))
        todo++;
    r->delivering++;
    while (todo-- > 0 && !r->dying && (q = TAILQ_FIRST(&r->ready)) != NULL) {
        req_detach(r, q);
        req_deliver(q);
        req_free(q);
    }
    r->delivering--;
    if (r->dying) {
        if (r->delivering == 0)
            resolver_release(r);
        return;
    }
    if (!TAILQ_EMPTY(&r->ready)) {
        static const struct timeval zero = {0, 0};
        evtimer_add(r->deliver_ev, &zero);
    }
}

/* ---- channels ------------------------------------------------------------ */

/* "ip", "ip:port" (IPv4), "[ipv6]:port" or a bare IPv6 literal (the forms
 * config.c accepts) into n. */
static bool server_parse(const char *s, struct ares_addr_port_node *n)
{
    char host[INET6_ADDRSTRLEN];
    const char *port = NULL;
    size_t hlen;

    memset(n, 0, sizeof *n);
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return false;
        hlen = (size_t)(close - s - 1);
        s++;
        port = close + 2;
    } else if (strchr(s, ':') != NULL && strchr(s, ':') == strrchr(s, ':')) {
        hlen = (size_t)(strchr(s, ':') - s);
        port = strchr(s, ':') + 1;
    } else {
        hlen = strlen(s);
    }
    if (hlen >= sizeof host)
        return false;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, &n->addr.addr4) == 1)
        n->family = AF_INET;
    else if (inet_pton(AF_INET6, host, &n->addr.addr6) == 1)
        n->family = AF_INET6;
    else
        return false;
    long p = 53;
    if (port != NULL) {
        char *end;
        p = strtol(port, &end, 10);
        if (*port == '\0' || *end != '\0' || p < 1 || p > 65535)
            return false;
    }
    n->udp_port = n->tcp_port = (int)p;
    return true;
}

/* Give c's channel the servers of cfg (none: keep resolv.conf's). */
static int chan_set_servers(struct chan *c, const struct cfg_resolver *cfg, char *err,
                            size_t errlen)
{
    if (cfg->nservers == 0)
        return 0;
    struct ares_addr_port_node *nodes = xcalloc(cfg->nservers, sizeof *nodes);
    int rc = 0;
    for (size_t i = 0; i < cfg->nservers && rc == 0; i++) {
        if (!server_parse(cfg->servers[i], &nodes[i])) {
            snprintf(err, errlen, "resolver: bad server \"%s\"", cfg->servers[i]);
            rc = -1;
        }
        nodes[i].next = i + 1 < cfg->nservers ? &nodes[i + 1] : NULL;
    }
    int ar = rc == 0 ? ares_set_servers_ports(c->ch, nodes) : ARES_SUCCESS;
    if (ar != ARES_SUCCESS) {
        snprintf(err, errlen, "resolver: setting servers: %s", ares_strerror(ar));
        rc = -1;
    }
    free(nodes);
    return rc;
}

static struct chan *chan_new(struct resolver *r, const struct cfg_resolver *cfg, char *err,
                             size_t errlen)
{
    struct chan *c = xcalloc(1, sizeof *c);
    struct ares_options o;
    char lookups[] = "b"; /* DNS only, never the hosts file */

    memset(&o, 0, sizeof o);
    c->r = r;
    /* NOSEARCH: names are absolute; NOALIASES: no HOSTALIASES from the
     * environment; EDNS: larger UDP answers (DNSBL TXT, big MX sets).
     * NOCHECKRESP: c-ares 1.18 turns SERVFAIL and REFUSED from every
     * server into ARES_ECONNREFUSED, losing what the operator needs to
     * see (a resolver refusing us is a classic misconfiguration); with it
     * we get the answer itself. The price: no failover to the next server
     * on SERVFAIL/REFUSED (timeouts and unreachable servers still fail
     * over), and the question check c-ares skips is done by dns_parse. */
    o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | ARES_FLAG_EDNS | ARES_FLAG_NOCHECKRESP;
    o.timeout = (int)(cfg->timeout > INT_MAX ? INT_MAX : cfg->timeout);
    o.tries = (int)(cfg->attempts > 0 ? cfg->attempts : 1);
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = c;
    o.lookups = lookups;
    o.ednspsz = EDNS_PAYLOAD;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB |
               ARES_OPT_LOOKUPS | ARES_OPT_EDNSPSZ;
    int ar = ares_init_options(&c->ch, &o, mask);
    if (ar != ARES_SUCCESS) {
        snprintf(err, errlen, "resolver: %s", ares_strerror(ar));
        free(c);
        return NULL;
    }
    if (chan_set_servers(c, cfg, err, errlen) != 0) {
        ares_destroy(c->ch);
        free(c);
        return NULL;
    }
    return c;
}

/* Destroy c: its queries call back with ARES_EDESTRUCTION first. */
static void chan_free(struct resolver *r, struct chan *c)
{
    struct sockev *s, *next;

    ares_destroy(c->ch);
    for (s = LIST_FIRST(&r->socks); s != NULL; s = next) {
        next = LIST_NEXT(s, link);
        if (s->c == c)
            sockev_free(s);
    }
    free(c);
}

/* ---- public API ---------------------------------------------------------- */

struct resolver *resolver_new(struct event_base *base, const struct cfg_resolver *cfg, char *err,
                              size_t errlen)
{
    int ar = ares_library_init(ARES_LIB_INIT_ALL);
    if (ar != ARES_SUCCESS) {
        snprintf(err, errlen, "resolver: %s", ares_strerror(ar));
        return NULL;
    }
    struct resolver *r = xcalloc(1, sizeof *r);
    r->base = base;
    r->next_id = 1;
    r->cache_max = RESOLVER_CACHE_MAX;
    LIST_INIT(&r->socks);
    TAILQ_INIT(&r->lru);
    TAILQ_INIT(&r->ready);
    r->chan = chan_new(r, cfg, err, errlen);
    r->timer = evtimer_new(base, on_timer, r);
    r->deliver_ev = evtimer_new(base, deliver_cb, r);
    if (r->chan == NULL || r->timer == NULL || r->deliver_ev == NULL) {
        if (r->chan != NULL)
            snprintf(err, errlen, "resolver: cannot create events");
        resolver_free(r);
        return NULL;
    }
    return r;
}

int resolver_reconfigure(struct resolver *r, const struct cfg_resolver *cfg, char *err,
                         size_t errlen)
{
    struct chan *c = chan_new(r, cfg, err, errlen);
    if (c == NULL)
        return -1;
    struct chan *old = r->chan;
    r->chan = c;
    cache_flush(r);
    chan_free(r, old); /* its queries are re-sent on c from on_ares_answer */
    timer_rearm(r);
    return 0;
}

/* Free the resolver object itself, once nothing runs inside it. */
static void resolver_release(struct resolver *r)
{
    if (r->deliver_ev)
        event_free(r->deliver_ev);
    free(r);
    ares_library_cleanup();
}

void resolver_free(struct resolver *r)
{
    if (r == NULL || r->freeing)
        return;
    r->freeing = true;
    for (size_t i = 0; i < REQ_BUCKETS; i++) {
        struct req *q;
        while ((q = LIST_FIRST(&r->reqs[i])) != NULL) {
            req_detach(r, q);
            req_free(q);
        }
    }
    if (r->chan != NULL)
        chan_free(r, r->chan);
    r->chan = NULL;
    for (size_t i = 0; i < ENTRY_BUCKETS; i++) {
        struct entry *e;
        while ((e = LIST_FIRST(&r->entries[i])) != NULL)
            entry_free(r, e);
    }
    if (r->timer)
        event_free(r->timer);
    r->timer = NULL;
    if (r->delivering > 0) {
        r->dying = true; /* deliver_cb releases r when the callback returns */
        return;
    }
    resolver_release(r);
}

/* Lower-case name without its trailing dot into a new string; NULL if it
 * cannot be a domain name. */
static char *name_key(const char *name)
{
    uint8_t wire[256];
    size_t len = name ? strnlen(name, NAME_TEXT_MAX + 1) : 0;

    if (len == 0 || len > NAME_TEXT_MAX || strcmp(name, ".") == 0)
        return NULL;
    if (dns_name_to_wire(name, wire, sizeof wire) == 0)
        return NULL;
    char *key = xstrndup(name, len);
    if (len > 1 && key[len - 1] == '.' && key[len - 2] != '\\')
        key[len - 1] = '\0';
    for (char *p = key; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return key;
}

uint64_t resolver_query(struct resolver *r, const char *name, enum dns_type type, dns_cb cb,
                        void *arg)
{
    char *key = (unsigned)type < DNS_TYPE__COUNT ? name_key(name) : NULL;
    struct req *q = req_new(r, key ? key : (name ? name : ""), type, cb, arg);
    uint64_t id = q->id;

    r->st.queries++;
    if (key == NULL) {
        req_ready(r, q, answer_new(DNS_ERROR, NULL, 0), false);
        return id;
    }
    struct entry *e = entry_find(r, key, type);
    free(key);
    if (e != NULL && e->ans != NULL && e->expires > mono_now()) {
        r->st.cache_hits++;
        TAILQ_REMOVE(&r->lru, e, lru);
        TAILQ_INSERT_HEAD(&r->lru, e, lru);
        req_ready(r, q, answer_ref(e->ans), true);
        return id;
    }
    q->state = REQ_WAITING;
    if (e != NULL && e->in_flight) {
        r->st.coalesced++;
        q->e = e;
        TAILQ_INSERT_TAIL(&e->waiters, q, qlink);
        return id;
    }
    if (e != NULL)
        entry_uncache(r, e); /* expired: refresh in place */
    else
        e = entry_new(r, q->name, type);
    e->in_flight = true;
    q->e = e;
    TAILQ_INSERT_TAIL(&e->waiters, q, qlink);
    entry_send(r, e);
    return id;
}

uint64_t resolver_query_ptr(struct resolver *r, const char *ip, dns_cb cb, void *arg)
{
    char name[80];

    if (ip == NULL || !dns_ptr_name(ip, name, sizeof name)) {
        struct req *q = req_new(r, ip ? ip : "", DNS_PTR, cb, arg);
        r->st.queries++;
        req_ready(r, q, answer_new(DNS_ERROR, NULL, 0), false);
        return q->id;
    }
    return resolver_query(r, name, DNS_PTR, cb, arg);
}

void resolver_cancel(struct resolver *r, uint64_t id)
{
    struct req *q = req_find(r, id);
    if (q == NULL)
        return;
    req_detach(r, q);
    req_free(q);
    r->st.cancelled++;
}

void resolver_set_cache_max(struct resolver *r, size_t max)
{
    r->cache_max = max;
    cache_trim(r);
}

void resolver_get_stats(const struct resolver *r, struct resolver_stats *st)
{
    *st = r->st;
    st->cache_entries = r->ncached;
}
