/*
 * queue: the in-memory delivery queue shared by the scheduler (which owns
 * it) and the outbound connections (which borrow recipients from it).
 *
 * Objects:
 *   q_msg   one stored message with the recipients still to finish
 *   q_rcpt  one recipient of a message, in exactly one place at a time:
 *             QR_READY    on its destination's ready list
 *             QR_WAITING  in the retry heap until next_ms
 *             QR_ACTIVE   lent to an outbound connection
 *   (suspenddel leaves recipients where they are: a suspended destination
 *   simply lends nothing, see scheduler_take)
 *   dest    a receiving domain: its ready list, its connections, its host
 *           status and counters (what hoststatus/tophosts print)
 *
 * Invariants: dest->nready/nwaiting/nactive count the recipients in each
 * state; a q_msg lives while msg->pending > 0; a recipient is freed only by
 * the scheduler after its final outcome. All on the loop thread.
 */
#ifndef POSTERN_QUEUE_QUEUE_H
#define POSTERN_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

struct q_msg {
    uint64_t mid;
    char *sender;   /* "" for <> */
    unsigned flags; /* spool_msg_flag */
    uint64_t size;
    int64_t received_ms;
    char *envid; /* or NULL */
    int ret;
    uint32_t pending; /* recipients not yet finished */
};

enum q_rcpt_state { QR_READY, QR_WAITING, QR_ACTIVE };

struct dest;

struct q_rcpt {
    struct q_msg *msg;
    struct dest *dest;
    uint32_t rid;
    char *addr;
    char *orcpt; /* or NULL */
    unsigned notify;
    uint32_t attempts;
    int64_t next_ms;
    enum q_rcpt_state state;
    size_t heap_idx;          /* position in the retry heap while QR_WAITING */
    TAILQ_ENTRY(q_rcpt) link; /* ready list */
};

TAILQ_HEAD(q_rcpt_list, q_rcpt);

enum host_state { HOST_UNKNOWN, HOST_UP, HOST_DOWN };

/* Counters of hoststatus/tophosts; "Hard Bounced" split by kind as on the
 * appliance. */
struct dest_counters {
    uint64_t soft_bounced; /* Soft Bounced Events: each deferral */
    uint64_t completed;    /* Completed Recipients: delivered + bounced + deleted */
    uint64_t hard_dns;     /* DNS Hard Bounces */
    uint64_t hard_5xx;     /* 5XX Hard Bounces */
    uint64_t hard_expired; /* Expired Hard Bounces */
    uint64_t hard_filter;  /* Filter Hard Bounces */
    uint64_t hard_other;   /* Other Hard Bounces */
    uint64_t delivered;    /* Delivered Recipients */
    uint64_t deleted;      /* Deleted Recipients */
};

#define DEST_MAX_IPS 16
#define DEST_MAX_MX  16

struct dest_mx {
    char host[256];
    uint16_t pref;
};

struct dest {
    char *domain;
    struct q_rcpt_list ready;
    uint32_t nready, nwaiting, nactive;
    uint32_t nunattempted; /* recipients with attempts == 0 */
    uint32_t conns;        /* outbound connections (any state) */
    uint32_t connecting;   /* of which not yet ready for a message */
    unsigned rr;           /* round-robin position among equal priorities */
    enum host_state state;
    int64_t last_activity_ms;
    int64_t oldest_ms; /* arrival of the oldest message seen queued here */
    char last_4xx[720];
    int64_t last_4xx_ms;
    char last_5xx[720];
    int64_t last_5xx_ms;
    char ips[DEST_MAX_IPS][48]; /* ordered as last tried */
    size_t nips;
    struct dest_mx mx[DEST_MAX_MX];
    size_t nmx;
    int64_t mx_expiry_ms;
    struct dest_counters c;
};

#endif
