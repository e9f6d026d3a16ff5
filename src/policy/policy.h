/*
 * policy: the connection decision of a listener, taken before the banner
 * (gateway-behaviour.md section 1): which sender group the connecting host
 * belongs to, and so which mail flow policy applies and whether it may
 * connect at all.
 *
 * Two halves:
 *   - the facts about a client (struct policy_facts): its IP, its PTR name
 *     and whether that name is forward-confirmed, its reputation score and
 *     which DNS lists listed it. Gathered asynchronously by policy_lookup
 *     (lookup.h) through the resolver.
 *   - the decision (policy_decide): a pure function of a compiled host
 *     access table and the facts. The control socket's `trace` calls it
 *     with facts gathered the same way, without a connection.
 *
 * The host access table (HAT) of a listener is an ordered list of sender
 * groups, first match wins, each mapped to a mail flow policy. It is
 * compiled at configuration load (policy_table_compile) into sorted address
 * ranges and suffix lists, so matching never parses text per connection.
 */
#ifndef POSTERN_POLICY_POLICY_H
#define POSTERN_POLICY_POLICY_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct cfg_listener;

/* What is known of the connecting host. */
enum ptr_status {
    PTR_OK,        /* a PTR name was found (see verified) */
    PTR_MISSING,   /* NXDOMAIN / NODATA: no PTR record */
    PTR_TEMPFAIL,  /* SERVFAIL / timeout: lookup failed temporarily */
    PTR_NOT_LOOKED /* loopback / private range, or lookups disabled */
};

#define POLICY_MAX_DNSLISTS 16

struct policy_facts {
    char ip[46];
    int family;            /* AF_INET / AF_INET6 */
    struct in6_addr addr6; /* IPv4 mapped as ::ffff:a.b.c.d */
    enum ptr_status ptr;
    char ptr_name[256]; /* first PTR name, lower-case, "" if none */
    bool verified;      /* ptr_name's A/AAAA contains ip */
    bool rfc1918;       /* private/loopback: no DNS list lookups */
    bool sbrs_none;     /* no reputation list answered */
    double sbrs;        /* [-10, 10] when !sbrs_none */
    /* DNS lists queried for this host and whether each listed it */
    size_t ndnslists;
    struct {
        char zone[256];
        bool answered; /* got an answer (listed or not) */
        bool listed;   /* A record matched the list's code filter */
    } dnslists[POLICY_MAX_DNSLISTS];
    /* how long each lookup took (ms; -1 = not done) */
    double ms_ptr, ms_forward, ms_reputation, ms_total;
};

enum policy_access {
    ACCESS_ACCEPT,
    ACCESS_REJECT,
    ACCESS_TCPREFUSE,
    ACCESS_RELAY,
    ACCESS_CONTINUE
};
enum policy_tls { POLICY_TLS_OFF, POLICY_TLS_PREFERRED, POLICY_TLS_REQUIRED };

/* Effective parameters of a mail flow policy. */
struct policy_params {
    char name[64];
    enum policy_access access;
    bool reject_at_rcpt; /* REJECT delayed until RCPT (5.7.1) */
    uint64_t max_message_size;
    uint32_t max_concurrent_connections; /* from one IP */
    uint32_t max_messages_per_connection;
    uint32_t max_recipients_per_message;
    uint32_t max_recipients_per_hour; /* 0 = unlimited */
    uint16_t rate_limit_code;         /* 452 */
    char rate_limit_text[200];
    uint16_t banner_code;      /* 220 */
    char banner_text[200];     /* may hold $Hostname $Group $RemoteIP */
    char banner_hostname[256]; /* shown in banner/EHLO; "" = listener's */
    uint16_t reject_code;      /* 554 */
    char reject_text[200];
    enum policy_tls tls;
};

struct policy_decision {
    const char *group; /* matched sender group name, or NULL (None) */
    char member[300];  /* the member that matched ("10.0.0.0/8", "ALL", "SBRS[-10:-3]", "PTR
                          missing"...) */
    struct policy_params params;
};

struct policy_table; /* compiled HAT of one listener */

/* Compile the HAT of listener l from cfg. NULL with a message on error
 * (the configuration loader has validated names already, so errors here
 * are internal). */
struct policy_table *policy_table_compile(const struct config *cfg, const struct cfg_listener *l,
                                          char *err, size_t errlen);
void policy_table_free(struct policy_table *t);

/* The DNS list zones the table's groups and the reputation settings need
 * for a host (so the lookup knows what to ask). */
size_t policy_table_dnslists(const struct policy_table *t, const char **zones, size_t max);
/* True if any group uses hostname members or PTR checks (PTR lookups are
 * always made for logging; this says whether the decision needs them). */
bool policy_table_needs_ptr(const struct policy_table *t);

/* First matching group wins; CONTINUE rows are skipped. A table always
 * ends in an implicit ALL (the listener type's default policy). */
void policy_decide(const struct policy_table *t, const struct policy_facts *f,
                   struct policy_decision *out);

/* Expand $Hostname, $Group, $RemoteIP in a banner text. */
void policy_expand_banner(const char *text, const struct policy_facts *f, const char *group,
                          char *out, size_t outlen);

/* Access rule name as logged ("ACCEPT", "REJECT", ...). */
const char *policy_access_name(enum policy_access a);

#endif
