/*
 * outbound: the connections that deliver a destination's mail.
 *
 * One outbound connection works for one destination (receiving domain):
 * it finds the hosts (SMTP route, else MX, else the domain's own address),
 * tries them in order with failover, and delivers batches borrowed from
 * the scheduler until the destination has nothing ready or the connection
 * reached max_messages_per_connection. See outbound.c for the rules.
 */
#ifndef POSTERN_DELIVERY_OUTBOUND_H
#define POSTERN_DELIVERY_OUTBOUND_H

struct scheduler;
struct dest;
struct outbound;

struct outbound *outbound_new(struct scheduler *s);
/* Start one connection for d (d->conns and d->connecting grow by one until
 * it is ready). Returns -1 if no connection was started. */
int outbound_start(struct outbound *ob, struct dest *d);
/* Call fn for every recipient lent to a connection (its current batch):
 * the QR_ACTIVE part of the queue, for showrecipients. */
struct q_rcpt;
void outbound_foreach_active(struct outbound *ob, void (*fn)(void *ctx, const struct q_rcpt *r),
                             void *ctx);
/* Drop every connection; borrowed recipients are returned as deferred. */
void outbound_abort_all(struct outbound *ob);
void outbound_free(struct outbound *ob);

#endif
