/*
 * smtp_server: inbound SMTP sessions (RFC 5321 server side) on the loop.
 *
 * Owns every inbound session: accepts a connection from a listener, speaks
 * ESMTP (PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS,
 * CHUNKING, SMTPUTF8), streams the message into a spool message and answers
 * "250" only from the spool's commit callback. See smtp_server.c for the
 * session state machine.
 */
#ifndef POSTERN_SMTP_SERVER_H
#define POSTERN_SMTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "smtp/smtp_addr.h"

struct event_base;
struct config;
struct spool;
struct listener;
struct smtp_server;

/* Counters since start (status commands read them). */
struct smtp_server_stats {
    uint64_t connections;         /* accepted */
    uint64_t connections_refused; /* over a connection limit */
    uint64_t messages;            /* queued */
    uint64_t recipients;          /* in queued messages */
    uint64_t rejected_recipients;
    uint64_t aborted_messages;
    uint32_t current; /* sessions now */
};

struct resolver;
struct smtp_server *smtp_server_new(struct event_base *base, struct spool *spool,
                                    struct resolver *resolver, struct config *cfg);
/* New sessions use cfg from now on (takes a reference); running sessions
 * keep the configuration they started with. */
void smtp_server_set_config(struct smtp_server *srv, struct config *cfg);
/* Called after each message became durable, with its envelope (strings
 * valid during the call) and size: the delivery queue's entry point. */
struct spool_envelope;
typedef void (*smtp_server_queue_fn)(void *ctx, const struct spool_envelope *env, uint64_t size,
                                     char *const *rcpts, size_t nrcpts);
void smtp_server_set_queue(struct smtp_server *srv, smtp_server_queue_fn fn, void *ctx);
/* Resource conservation (policy/rescon.h, not owned; must outlive srv):
 * tarpit replies, refuse when halted, suspend listeners on the backlog. */
struct rescon;
void smtp_server_set_rescon(struct smtp_server *srv, struct rescon *rc);
/* listener_accept_fn: ctx is the server. */
void smtp_server_accept(void *srv, struct listener *l, int fd, const struct sockaddr *sa,
                        int salen);
/* Begin a graceful stop: idle sessions get 421 and close, a session whose
 * message is being committed gets its 250 first. done() is called once no
 * session remains (at once if there are none). */
void smtp_server_shutdown(struct smtp_server *srv, void (*done)(void *arg), void *arg);
/* Drop every remaining session now (after the shutdown grace period). */
void smtp_server_abort_all(struct smtp_server *srv);
/* suspendlistener/resumelistener: stop (on) or start accepting on the
 * configured listener called name, or on every one (NULL). Sessions in
 * progress continue; a connection the kernel queued meanwhile waits,
 * unanswered, until resume. An operator suspension outlasts a resource
 * conservation (backlog) resume, and the reverse. Logged. Returns the
 * number of listeners named, -1 if none is called name. */
int smtp_server_suspend_listener(struct smtp_server *srv, const char *name, bool on);
bool smtp_server_listener_suspended(const struct smtp_server *srv, const char *name);
const struct smtp_server_stats *smtp_server_stats(const struct smtp_server *srv);
/* The relay decision of RCPT for a parsed recipient under a policy's access
 * rule (policy.h enum policy_access): RELAY policies may send anywhere, the
 * others only to cfg's relay domains (smtp_relay_check). Shared by the
 * session and the control socket's trace, so both decide the same way. */
enum smtp_relay_verdict smtp_server_rcpt_relay(const struct config *cfg, int access,
                                               const struct smtp_path *rcpt);
void smtp_server_free(struct smtp_server *srv);

#endif
