/*
 * resolver: asynchronous DNS on the libevent loop (c-ares), with one shared
 * cache, negative caching and coalescing of identical queries.
 *
 * Usage (OpenSMTPD style: waits are keyed by request id, never by pointer):
 *
 *   uint64_t id = resolver_query(r, "example.com", DNS_MX, on_mx, sess);
 *   ... the session dies before the answer: resolver_cancel(r, id);
 *
 * Contract
 *   - The callback runs exactly once per request id, from the event loop,
 *     never from inside resolver_query*() (not even on a cache hit or an
 *     invalid name), unless the request is cancelled first or the resolver
 *     is freed first; then it never runs.
 *   - resolver_cancel() is safe at any time, for any id: pending, already
 *     delivered, unknown, or the id whose callback is running now.
 *   - Everything the callback sees through `ans` (name, rr[], strings) is
 *     valid only during the callback: copy what you keep.
 *   - A slow or lost answer never delays another query: each query has its
 *     own timeout (cfg_resolver.timeout per try, attempts tries; c-ares
 *     doubles the per-try timeout after each round over all servers).
 *   - Identical queries (same lower-cased name and type) in flight at the
 *     same time share one network query.
 *
 * Cache (see docs/dns.md): positive answers for their minimum TTL clamped
 * to [1 s, 1 day]; NXDOMAIN/NODATA for min(SOA TTL, SOA MINIMUM) from the
 * authority section, else 300 s, clamped to [1 s, 3 h]; SERVFAIL, REFUSED,
 * timeouts and unusable answers for 5 s. At most RESOLVER_CACHE_MAX
 * entries, least recently used evicted first. resolver_reconfigure()
 * empties it.
 *
 * Threading: loop thread only.
 */
#ifndef POSTERN_DNS_RESOLVER_H
#define POSTERN_DNS_RESOLVER_H

#include "dns/dns_parse.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct cfg_resolver;
struct resolver;

enum dns_status {
    DNS_OK,       /* n >= 1 records */
    DNS_NXDOMAIN, /* the name does not exist (RCODE 3) */
    DNS_NODATA,   /* the name exists, no record of this type */
    DNS_SERVFAIL, /* the server answered SERVFAIL (or NOTIMP) */
    DNS_TIMEOUT,  /* no answer within timeout x attempts */
    DNS_REFUSED,  /* the server answered REFUSED */
    DNS_ERROR,    /* invalid name or address, malformed answer, no server
                   * reachable (connection refused), out of memory */
    DNS_STATUS__COUNT
};

/* "OK", "NXDOMAIN", "NODATA", "SERVFAIL", "TIMEOUT", "REFUSED", "ERROR". */
const char *dns_status_str(enum dns_status s);
/* True for outcomes that say something about the name (OK, NXDOMAIN,
 * NODATA); false for the "try again later" ones (e.g. "PTR lookup failed
 * temporarily", reputation None). */
bool dns_status_is_final(enum dns_status s);

struct dns_answer {
    uint64_t id; /* the request id resolver_query returned */
    enum dns_status status;
    const char *name; /* as asked: lower-cased, no trailing dot */
    enum dns_type type;
    size_t n;
    const struct dns_rr *rr; /* records in answer order (MX: not sorted) */
    /* Seconds this answer may still be used: the minimum record TTL, the
     * negative TTL, or the failure TTL; for a cache hit, what remains.
     * rr[i].ttl of a cache hit are decremented by the entry's age too. */
    uint32_t ttl;
    double elapsed_ms; /* from resolver_query() to this callback */
    bool from_cache;
};

typedef void (*dns_cb)(void *arg, const struct dns_answer *ans);

/* Bound of the shared cache; the 1 day / 3 h clamps bound staleness. */
#define RESOLVER_CACHE_MAX 10000

/* Create a resolver on base with the servers, timeout and attempts of cfg
 * (no servers: the system's resolv.conf). No search domains, no hosts file.
 * Returns NULL with a message in err on failure. */
struct resolver *resolver_new(struct event_base *base, const struct cfg_resolver *cfg, char *err,
                              size_t errlen);
/* SIGHUP: switch to cfg's servers/timeout/attempts. Queries in flight are
 * re-sent to the new servers (their callbacks still run once); the cache is
 * emptied. On error (returns -1, message in err) the old setup stays. */
int resolver_reconfigure(struct resolver *r, const struct cfg_resolver *cfg, char *err,
                         size_t errlen);
/* Cancel everything (no callback runs), free everything. Safe from inside
 * a resolver callback (the memory goes when that callback returns). */
void resolver_free(struct resolver *r);

/* Look up (name, type). name: presentation form, any case, trailing dot
 * optional. Returns a request id, never 0. */
uint64_t resolver_query(struct resolver *r, const char *name, enum dns_type type, dns_cb cb,
                        void *arg);
/* PTR of an IPv4 or IPv6 literal (in-addr.arpa / ip6.arpa); an invalid
 * literal is answered DNS_ERROR (from the loop, like any answer). */
uint64_t resolver_query_ptr(struct resolver *r, const char *ip, dns_cb cb, void *arg);
/* The callback of id will not run. */
void resolver_cancel(struct resolver *r, uint64_t id);

/* The reverse-lookup name of an IPv4/IPv6 literal into out ("4.3.2.1.in-addr.arpa",
 * nibbles + ".ip6.arpa"). Returns false if ip is not a literal or out is
 * too small (73 bytes always suffice). */
bool dns_ptr_name(const char *ip, char *out, size_t outlen);

/* Change the cache bound (tests, tuning); evicts down to it at once. */
void resolver_set_cache_max(struct resolver *r, size_t max);

struct resolver_stats {
    uint64_t queries;    /* resolver_query* calls */
    uint64_t cache_hits; /* answered from the cache */
    uint64_t coalesced;  /* joined an identical query in flight */
    uint64_t sent;       /* network queries started (ares_query calls) */
    uint64_t cancelled;
    /* outcomes of network queries, by status (DNS_OK... DNS_ERROR) */
    uint64_t outcomes[DNS_STATUS__COUNT];
    size_t cache_entries;
    size_t in_flight; /* network queries not finished */
    size_t pending;   /* requests whose callback has not run yet */
};

void resolver_get_stats(const struct resolver *r, struct resolver_stats *st);

#endif
