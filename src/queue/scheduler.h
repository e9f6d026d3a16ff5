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

#endif
