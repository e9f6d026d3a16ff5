/*
 * scheduler: decides what is delivered when. Owns the in-memory queue
 * (queue.h), rebuilt from the spool at start, the retry timer, the bounce
 * profiles' backoff, the grouped commit of delivery results, and the DSNs.
 *
 * Outbound connections (delivery/outbound) borrow recipients through
 * scheduler_take() and give each one back exactly once through
 * scheduler_result().
 */
#ifndef POSTERN_QUEUE_SCHEDULER_H
#define POSTERN_QUEUE_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/queue.h"

struct event_base;
struct config;
struct spool;
struct spool_envelope;
struct resolver;
struct scheduler;

struct scheduler *scheduler_new(struct event_base *base, struct spool *spool,
                                struct resolver *resolver, struct config *cfg);
/* Load every pending recipient from the spool; retries keep their times. */
int scheduler_load(struct scheduler *s);
void scheduler_set_config(struct scheduler *s, struct config *cfg);
/* A message the spool just made durable (from the SMTP server). */
void scheduler_add(struct scheduler *s, const struct spool_envelope *env, uint64_t size,
                   char *const *rcpts, size_t nrcpts);
/* Stop starting deliveries; close idle connections; flush results. */
void scheduler_shutdown(struct scheduler *s);
void scheduler_free(struct scheduler *s);

/* ---- for outbound connections ---- */

/* Why a recipient came back. */
enum q_outcome {
    Q_DELIVERED,
    Q_DEFERRED,
    Q_BOUNCED,
    Q_DROPPED /* /dev/null route */
};

enum q_hard_kind { Q_HARD_DNS, Q_HARD_5XX, Q_HARD_EXPIRED, Q_HARD_FILTER, Q_HARD_OTHER };

struct q_result {
    enum q_outcome outcome;
    enum q_hard_kind kind;  /* for Q_BOUNCED */
    const char *enhanced;   /* "4.3.1" */
    const char *diagnostic; /* remote reply as text ("452 4.3.1 ..."), for DSN/last error */
    const char *remote;     /* host that answered, or NULL */
};

struct config *scheduler_config(struct scheduler *s);
struct resolver *scheduler_resolver(struct scheduler *s);
struct event_base *scheduler_base(struct scheduler *s);
struct spool *scheduler_spool(struct scheduler *s);
/* Borrow the next batch for dest: the oldest ready recipient and every
 * other ready recipient of the same message at dest, at most max. Returns
 * the count (0 when nothing is ready). */
size_t scheduler_take(struct scheduler *s, struct dest *d, struct q_rcpt **out, size_t max);
/* Give a borrowed recipient back with its outcome. */
void scheduler_result(struct scheduler *s, struct q_rcpt *r, const struct q_result *res);
/* A connection of dest ended (the outbound code tracks d->conns itself);
 * the scheduler may start new ones. */
void scheduler_kick(struct scheduler *s, struct dest *d);

/* ---- for operators and tests ---- */
struct dest *scheduler_dest(struct scheduler *s, const char *domain);
/* Iterate destinations: for (size_t i = 0; (d = scheduler_dest_next(s, &i));) */
struct dest *scheduler_dest_next(struct scheduler *s, size_t *iter);
/* Retry now every waiting recipient (of one domain, or all if NULL). */
void scheduler_deliver_now(struct scheduler *s, const char *domain);

/* ---- operator queue commands (control/cmd_queue.c) ---- */

/* Visit every queued recipient: ready, waiting, and lent to a connection
 * (QR_ACTIVE). fn must not change the queue. */
typedef void (*scheduler_rcpt_fn)(void *ctx, const struct q_rcpt *r);
void scheduler_foreach_rcpt(struct scheduler *s, scheduler_rcpt_fn fn, void *ctx);

/* Which recipients deleterecipients/bouncerecipients act on: domain (the
 * recipient's destination, lower case) or sender (envelope sender, "" for
 * <>, compared without case), or every one when both are NULL. */
struct sched_select {
    const char *domain;
    const char *sender;
};
enum sched_remove_how {
    SCHED_DELETE, /* Deleted Recipients; no DSN */
    SCHED_BOUNCE  /* Other Hard Bounces; DSN 5.0.0 "bounced by operator" */
};
struct sched_remove_counts {
    uint64_t rcpts;   /* removed */
    uint64_t msgs;    /* messages they belonged to */
    uint64_t skipped; /* QR_ACTIVE: lent to a connection, left alone */
};
/* Remove the selected ready and waiting recipients now; they finish in the
 * end-of-turn spool transaction like any result (rcpt_done/msg_done, and
 * for SCHED_BOUNCE a DSN to the sender). Recipients in flight (QR_ACTIVE)
 * are skipped and counted: their connection decides them. One log line
 * per message. */
void scheduler_remove(struct scheduler *s, const struct sched_select *sel,
                      enum sched_remove_how how, struct sched_remove_counts *out);

/* suspenddel/resumedel: while a destination is suspended (domain) or all
 * delivery is (domain NULL), no connection is started for it and running
 * connections take no new batch; its mail stays queued and its retry
 * clock keeps running. Resuming with NULL lifts every suspension.
 * Returns how many destinations in memory the change applies to. */
size_t scheduler_suspend(struct scheduler *s, const char *domain, bool on);
bool scheduler_suspended_all(const struct scheduler *s);
/* Whether deliveries to domain are suspended (globally or for it). */
bool scheduler_suspended(const struct scheduler *s, const char *domain);
/* The domains suspended one by one: for (i = 0; (d = ...next(s, &i));) */
const char *scheduler_suspended_next(const struct scheduler *s, size_t *iter);

/* redirectrecipients: every delivery goes to host:port (an override route
 * for all destinations, /dev/null routes included) until cleared with
 * host NULL or a restart. The host is copied. */
void scheduler_set_redirect(struct scheduler *s, const char *host, uint16_t port);
/* The redirect host (and *port), or NULL when none is set. */
const char *scheduler_redirect(const struct scheduler *s, uint16_t *port);

#endif
