/*
 * policy_lookup: the pre-banner DNS lookups of one connection, filling a
 * struct policy_facts (policy.h) for the host access table decision.
 *
 * Three chains run in parallel on the resolver (gateway-behaviour.md §1):
 *   - PTR of the client IP, then a forward lookup (A for an IPv4 client,
 *     AAAA for IPv6) of the first PTR name: the name is verified when the
 *     forward answer contains the client IP (forward-confirmed rDNS, the
 *     "iprev" of RFC 8601 §3);
 *   - one A query per DNS list (RFC 5782: reversed address + zone) for the
 *     reputation score and the dnslist[zone] sender group members.
 * Loopback and private ranges get the PTR (the appliance logs reverse DNS
 * for every host) but no DNS list query unless reputation.lookup_private:
 * facts.rfc1918 is set and the score stays None (logged as "rfc1918").
 *
 * Usage:
 *
 *   struct policy_lookup_params p = {&cfg->reputation, zones, nzones,
 *                                    cfg->connection_dns_deadline};
 *   sess->lookup = policy_lookup_start(base, r, ip, &p, on_facts, sess);
 *   ...
 *   static void on_facts(void *arg, const struct policy_facts *f)
 *   {   sess->lookup = NULL;  (already freed)  ... decide, send banner }
 *   ... the client went away first: policy_lookup_cancel(sess->lookup);
 *
 * Contract
 *   - The callback runs exactly once, from the event loop, never from
 *     inside policy_lookup_start(), unless policy_lookup_cancel() ran first;
 *     then it never runs.
 *   - Ownership: the lookup belongs to this module from start until the
 *     callback returns. The object is freed right after the callback
 *     returns, or by policy_lookup_cancel(); the handle must not be used
 *     after either. policy_lookup_cancel() from inside the callback is a
 *     no-op (the object goes when the callback returns).
 *   - facts is valid only during the callback: copy what you keep.
 *   - Nothing of params, ip or the configuration is referenced after
 *     policy_lookup_start() returns (zones and codes are copied), so a
 *     configuration reload cannot pull them from under a lookup.
 *   - The event_base and the resolver must outlive the lookup: cancel
 *     pending lookups before resolver_free().
 *   - Deadline: params.deadline_ms after the start, whatever is still
 *     pending is cancelled and counted as failed (PTR: PTR_TEMPFAIL;
 *     forward lookup: not verified; DNS list: not answered) and the callback
 *     runs. 0 means no deadline of our own (each query is still bounded by
 *     the resolver's timeout x attempts).
 *
 * Threading: loop thread only.
 */
#ifndef POSTERN_POLICY_LOOKUP_H
#define POSTERN_POLICY_LOOKUP_H

#include "policy/policy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct resolver;
struct cfg_reputation;

struct policy_lookup; /* one connection's lookups */

struct policy_lookup_params {
    /* The lists of the reputation score, and lookup_private. NULL: none. */
    const struct cfg_reputation *reputation;
    /* Extra DNS list zones used by sender groups (dnslist[zone]): queried
     * and reported in facts.dnslists, listed on any 127.0.0.0/8 answer
     * (unless the zone is also a reputation list: then its codes apply);
     * no weight, so they never make or change the score. */
    const char *const *zones;
    size_t nzones;
    /* All lookups of this connection (ms, from the start); 0 = none. */
    uint64_t deadline_ms;
};

typedef void (*policy_lookup_cb)(void *arg, const struct policy_facts *facts);

/* Start the lookups for the client address ip (IPv4 or IPv6 literal; an
 * IPv4-mapped IPv6 address "::ffff:a.b.c.d" is treated as the IPv4 client it
 * is). Returns NULL, and the callback never runs, if ip is not a literal. */
struct policy_lookup *policy_lookup_start(struct event_base *base, struct resolver *r,
                                          const char *ip, const struct policy_lookup_params *p,
                                          policy_lookup_cb cb, void *arg);

/* The callback will not run; pending queries are cancelled; the lookup is
 * freed. Safe at any time before the callback runs (NULL is ignored), and a
 * no-op from inside the callback. Not after the callback returned: the
 * object is gone. */
void policy_lookup_cancel(struct policy_lookup *l);

/* True for loopback (127/8, ::1), unspecified and "this network" (0/8,
 * ::), RFC 1918 (10/8, 172.16/12, 192.168/16), CGNAT (100.64/10, RFC 6598),
 * link-local (169.254/16, fe80::/10) and unique local (fc00::/7) addresses,
 * also IPv4-mapped. False for anything else, including non-literals. */
bool policy_ip_is_private(const char *ip);

/* The DNS list query name of ip in zone (RFC 5782 §2.1, §2.4):
 * "4.3.2.1.zone" for 1.2.3.4, 32 reversed nibbles + ".zone" for IPv6
 * (IPv4-mapped addresses as IPv4). A trailing dot of zone is dropped.
 * Returns false if ip is not a literal, zone is empty, or out is too small
 * (74 + strlen(zone) bytes always suffice). */
bool policy_dnsbl_name(const char *ip, const char *zone, char *out, size_t outlen);

#endif
