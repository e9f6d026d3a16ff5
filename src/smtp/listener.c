/*
 * listener: bound sockets following the configuration (see listener.h).
 *
 * Ordering rule in listener_set_apply: (1) build every new TLS context and
 * bind every new socket into a staging array; (2) only if all succeeded,
 * close the removed listeners and install the staged ones. This is what
 * makes a bad reload harmless.
 */
#include "smtp/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "policy/policy.h"

/* The kernel's accept queue per listener. Bounded so that under a flood the
 * kernel, not our memory, holds the excess (and SYN cookies take over). */
#define LISTEN_BACKLOG 1024

struct listener_set {
    struct event_base *base;
    listener_accept_fn fn;
    void *ctx;
    struct listener **items;
    size_t n, cap;
};

struct listener *listener_ref(struct listener *l)
{
    l->refs++;
    return l;
}

static void listener_close(struct listener *l)
{
    if (l->evl) {
        evconnlistener_free(l->evl);
        l->evl = NULL;
    }
    l->set = NULL;
}

void listener_unref(struct listener *l)
{
    if (l == NULL || --l->refs > 0)
        return;
    listener_close(l);
    tls_ctx_free(l->tls);
    policy_table_free(l->hat);
    free(l->name);
    free(l->address);
    free(l->hostname);
    free(l);
}

static void listener_on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                               int salen, void *arg)
{
    struct listener *l = arg;
    (void)evl;
    if (l->set == NULL) {
        close(fd);
        return;
    }
    l->set->fn(l->set->ctx, l, fd, sa, salen);
}

static void listener_on_error(struct evconnlistener *evl, void *arg)
{
    struct listener *l = arg;
    int e = EVUTIL_SOCKET_ERROR();
    (void)evl;
    /* EMFILE/ENFILE/ENOBUFS: libevent retries on the next readiness; the
     * log line tells the operator why connections are waiting. */
    maillog(LOG_WARNING, "Listener %s accept failed: %s", l->name, strerror(e));
}

/* Parse address/port into a sockaddr. */
static int listener_sockaddr(const char *address, uint16_t port, struct sockaddr_storage *ss,
                             socklen_t *len)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, address, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *len = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, address, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof(*sin6);
        return 0;
    }
    return -1;
}

static int listener_bind(const char *address, uint16_t port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    int one = 1;
    if (listener_sockaddr(address, port, &ss, &slen) < 0) {
        snprintf(err, errlen, "invalid listener address %s", address);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        snprintf(err, errlen, "bind %s port %u: %s", address, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

struct listener_set *listener_set_new(struct event_base *base, listener_accept_fn fn, void *ctx)
{
    struct listener_set *set = xcalloc(1, sizeof(*set));
    set->base = base;
    set->fn = fn;
    set->ctx = ctx;
    return set;
}

struct listener *listener_set_find(const struct listener_set *set, const char *name)
{
    for (size_t i = 0; i < set->n; i++)
        if (name == NULL || strcmp(set->items[i]->name, name) == 0)
            return set->items[i];
    return NULL;
}

void listener_set_handler(struct listener_set *set, listener_accept_fn fn, void *ctx)
{
    set->fn = fn;
    set->ctx = ctx;
}

static struct listener *listener_find(struct listener_set *set, const char *address, uint16_t port)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->items[i]->port == port && strcmp(set->items[i]->address, address) == 0)
            return set->items[i];
    return NULL;
}

/* Build the TLS context a listener configuration asks for (NULL = none). */
static int listener_tls(const struct cfg_listener *cl, SSL_CTX **out, char *err, size_t errlen)
{
    char e[300];
    *out = NULL;
    if (cl->tls_cert == NULL)
        return 0;
    *out = tls_server_ctx_new(cl->tls_cert, cl->tls_key, e, sizeof(e));
    if (*out == NULL) {
        snprintf(err, errlen, "listener %s: TLS: %s", cl->name, e);
        return -1;
    }
    return 0;
}

int listener_check_tls(const struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        SSL_CTX *ctx;
        if (listener_tls(&cfg->listeners[i], &ctx, err, errlen) < 0)
            return -1;
        tls_ctx_free(ctx);
    }
    return 0;
}

/* Staged state for one configured listener during apply. */
struct listener_stage {
    struct listener *existing; /* kept socket, or NULL */
    int fd;                    /* new socket, or -1 */
    SSL_CTX *tls;
    struct policy_table *hat;
};

static void listener_stage_abort(struct listener_stage *st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (st[i].fd >= 0)
            close(st[i].fd);
        tls_ctx_free(st[i].tls);
        policy_table_free(st[i].hat);
    }
    free(st);
}

/* Fill l's settings from cl (takes tls and hat). */
static void listener_settings(struct listener *l, const struct cfg_listener *cl,
                              struct listener_stage *st)
{
    free(l->name);
    free(l->hostname);
    tls_ctx_free(l->tls);
    policy_table_free(l->hat);
    l->name = xstrdup(cl->name);
    l->hostname = xstrdup(cl->hostname);
    l->type = cl->type;
    l->tls = st->tls;
    l->hat = st->hat;
}

int listener_set_apply(struct listener_set *set, const struct config *cfg, char *err, size_t errlen)
{
    size_t n = cfg->nlisteners;
    struct listener_stage *st = xcalloc(n ? n : 1, sizeof(*st));
    for (size_t i = 0; i < n; i++)
        st[i].fd = -1;
    /* (1) stage: TLS contexts and new sockets; nothing running is touched */
    for (size_t i = 0; i < n; i++) {
        const struct cfg_listener *cl = &cfg->listeners[i];
        if (listener_tls(cl, &st[i].tls, err, errlen) < 0) {
            listener_stage_abort(st, n);
            return -1;
        }
        char perr[256];
        st[i].hat = policy_table_compile(cfg, cl, perr, sizeof(perr));
        if (st[i].hat == NULL) {
            snprintf(err, errlen, "listener %s: host access table: %s", cl->name, perr);
            listener_stage_abort(st, n);
            return -1;
        }
        st[i].existing = listener_find(set, cl->address, cl->port);
        if (st[i].existing == NULL) {
            st[i].fd = listener_bind(cl->address, cl->port, err, errlen);
            if (st[i].fd < 0) {
                listener_stage_abort(st, n);
                return -1;
            }
        }
    }
    /* (2) commit: close listeners that are no longer configured */
    struct listener **items = xcalloc(n ? n : 1, sizeof(*items));
    for (size_t j = 0; j < set->n; j++) {
        bool kept = false;
        for (size_t i = 0; i < n; i++)
            kept = kept || st[i].existing == set->items[j];
        if (!kept) {
            maillog(LOG_INFO, "Listener %s closed (%s port %u)", set->items[j]->name,
                    set->items[j]->address, set->items[j]->port);
            listener_close(set->items[j]);
            listener_unref(set->items[j]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct cfg_listener *cl = &cfg->listeners[i];
        struct listener *l = st[i].existing;
        if (l == NULL) {
            l = xcalloc(1, sizeof(*l));
            l->refs = 1;
            l->address = xstrdup(cl->address);
            l->port = cl->port;
            l->set = set;
            /* backlog 0: the socket already listens with LISTEN_BACKLOG;
             * -1 would make libevent listen() again with its own 128 */
            l->evl = evconnlistener_new(set->base, listener_on_accept, l,
                                        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, st[i].fd);
            if (l->evl == NULL) /* only fails on OOM inside libevent */
                abort();
            evconnlistener_set_error_cb(l->evl, listener_on_error);
            maillog(LOG_INFO, "Listener %s listening on %s port %u", cl->name, cl->address,
                    cl->port);
        }
        listener_settings(l, cl, &st[i]);
        items[i] = l;
    }
    free(st);
    free(set->items);
    set->items = items;
    set->n = n;
    set->cap = n;
    return 0;
}

void listener_set_close_all(struct listener_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        listener_close(set->items[i]);
}

void listener_set_free(struct listener_set *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++) {
        listener_close(set->items[i]);
        listener_unref(set->items[i]);
    }
    free(set->items);
    free(set);
}
