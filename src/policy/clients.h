/*
 * clients: what the gateway remembers per client IP across sessions: how
 * many sessions it has open now (mail flow policy "max concurrent
 * connections from one IP") and how many recipients it sent in the last
 * hour (policy "max recipients per hour", the appliance's rate limit),
 * and how many connections it made in the current minute
 * (limits.max_connection_rate).
 *
 * The hour is 60 one-minute buckets per IP: a sliding window accurate to a
 * minute in 60 x 8 bytes, with no per-recipient records. An entry with no
 * session and no recipient in the last hour is dropped by
 * clients_expire(), so the table is bounded by the clients of one hour.
 * Loop thread only.
 */
#ifndef POSTERN_POLICY_CLIENTS_H
#define POSTERN_POLICY_CLIENTS_H

#include <stddef.h>
#include <stdint.h>

struct clients;

struct clients *clients_new(void);
void clients_free(struct clients *c);
/* A session from ip starts / ends; returns the sessions now open. */
uint32_t clients_session_add(struct clients *c, const char *ip);
void clients_session_del(struct clients *c, const char *ip);
/* Recipients accepted from ip in the 60 minutes up to now_s. */
uint32_t clients_rcpts_hour(struct clients *c, const char *ip, int64_t now_s);
void clients_rcpt_add(struct clients *c, const char *ip, int64_t now_s);
/* A connection from ip at now_s; returns the connections from ip in the
 * current minute, this one included (the per-IP connection rate). */
uint32_t clients_conn_add(struct clients *c, const char *ip, int64_t now_s);
/* Drop entries idle for an hour; returns how many remain. */
size_t clients_expire(struct clients *c, int64_t now_s);

#endif
