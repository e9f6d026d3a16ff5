/*
 * listener: the set of listening sockets, kept in step with the
 * configuration.
 *
 * listener_set_apply() makes the bound sockets match a configuration: a
 * listener whose address and port are unchanged keeps its socket (so a
 * reload never refuses a connection that the kernel already queued) and
 * takes the new settings; new ones are bound; removed ones are closed. It
 * is all-or-nothing: every new socket is bound before any old one is
 * closed, and a failure to bind (or to load a TLS certificate) leaves the
 * running set untouched.
 *
 * A listener is reference-counted: each session holds a reference, so a
 * listener removed by a reload stays readable (name, hostname, TLS context)
 * until its last session ends.
 */
#ifndef POSTERN_SMTP_LISTENER_H
#define POSTERN_SMTP_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "smtp/tls.h"

struct policy_table;

struct event_base;
struct evconnlistener;
struct listener_set;

struct listener {
    int refs;
    char *name;
    char *address;
    uint16_t port;
    enum listener_type type;
    char *hostname;
    SSL_CTX *tls;               /* NULL: STARTTLS not offered */
    struct policy_table *hat;   /* compiled host access table */
    unsigned sessions;          /* current sessions (maintained by smtp_server) */
    struct evconnlistener *evl; /* NULL once closed */
    bool suspended;
    struct listener_set *set; /* owner, for the accept callback; NULL once removed */
};

typedef void (*listener_accept_fn)(void *ctx, struct listener *l, int fd, const struct sockaddr *sa,
                                   int salen);

struct listener_set *listener_set_new(struct event_base *base, listener_accept_fn fn, void *ctx);
/* Change who receives accepted connections. */
void listener_set_handler(struct listener_set *set, listener_accept_fn fn, void *ctx);
/* Bind/update/close to match cfg. 0 on success; -1 with err filled and the
 * running set unchanged. */
int listener_set_apply(struct listener_set *set, const struct config *cfg, char *err,
                       size_t errlen);
/* Check that cfg's TLS files load, without binding anything (posternd -n). */
int listener_check_tls(const struct config *cfg, char *err, size_t errlen);
/* Close every listening socket (shutdown); sessions keep their references. */
void listener_set_close_all(struct listener_set *set);
void listener_set_free(struct listener_set *set);
/* The listener called name, or the first one when name is NULL; NULL if
 * there is none (the control socket's trace). */
struct listener *listener_set_find(const struct listener_set *set, const char *name);

struct listener *listener_ref(struct listener *l);
void listener_unref(struct listener *l);

#endif
