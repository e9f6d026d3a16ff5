/*
 * cmd_queue: the operator's hands on the delivery queue and the listeners:
 * `showrecipients`, `deleterecipients`, `bouncerecipients`,
 * `redirectrecipients`, `showmessage`, `suspenddel`/`resumedel`,
 * `suspendlistener`/`resumelistener` and `workqueue`.
 *
 * Selection (show/delete/bounce): by recipient domain ("host"), by
 * envelope sender ("sender", "" or "<>" for the null sender), or every
 * recipient ("all": true; show defaults to all). The queue belongs to the
 * scheduler: removals go through scheduler_remove(), so they finish in its
 * end-of-turn spool transaction like any delivery result.
 *
 * Recipients lent to a connection (state "active") cannot be taken back
 * mid-transaction: delete and bounce skip them and say how many were
 * skipped; the connection decides them (delivered, bounced or deferred,
 * and a deferred one can be removed by running the command again).
 *
 * Suspensions and the redirect live in memory only: a restart resumes
 * delivery and every listener and clears the redirect.
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "smtp/smtp_server.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Why 10000: an answer is one JSON line held in memory on both sides; a
 * queue larger than that is looked at by host or sender. */
#define SHOWRCPT_MAX 10000

static const char *const rcpt_state_names[] = {
    [QR_READY] = "ready",
    [QR_WAITING] = "waiting",
    [QR_ACTIVE] = "active",
};

/* A domain argument's value v, lower-cased, without a trailing dot, into
 * buf; an error on call for an empty or too long one. */
bool ctl_domain_value(struct ctl_call *call, const char *key, const char *v, char *buf, size_t len)
{
    size_t n = v ? strlen(v) : 0;
    if (n == 0 || n >= len) {
        ctl_error(call, "argument '%s' must be a domain name", key);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)tolower((unsigned char)v[i]);
    buf[n] = '\0';
    if (n > 1 && buf[n - 1] == '.')
        buf[n - 1] = '\0';
    return true;
}

/* The selection of show/delete/bounce: {"host": D} | {"sender": A} |
 * {"all": true}; nothing means all only when all_default. The domain goes
 * into domain_buf; desc says what was selected, for messages. */
static bool arg_select(struct ctl_call *call, bool all_default, struct sched_select *sel,
                       char *domain_buf, size_t domain_len, char *desc, size_t desclen)
{
    const char *host, *sender;
    const json_t *all = json_object_get(call->args, "all");
    memset(sel, 0, sizeof(*sel));
    if (!ctl_arg_string(call, "host", &host) || !ctl_arg_string(call, "sender", &sender))
        return false;
    if (all != NULL && !json_is_boolean(all)) {
        ctl_error(call, "argument 'all' must be true or false");
        return false;
    }
    int nsel = (host != NULL) + (sender != NULL) + json_is_true(all);
    if (nsel > 1 || (nsel == 0 && !all_default)) {
        ctl_error(call, "select the recipients with exactly one of: host DOMAIN, sender ADDRESS, "
                        "all");
        return false;
    }
    if (host != NULL) {
        if (!ctl_domain_value(call, "host", host, domain_buf, domain_len))
            return false;
        sel->domain = domain_buf;
        snprintf(desc, desclen, "host %s", domain_buf);
    } else if (sender != NULL) {
        sel->sender = strcmp(sender, "<>") == 0 ? "" : sender;
        snprintf(desc, desclen, "sender <%.200s>", sel->sender);
    } else {
        snprintf(desc, desclen, "all");
    }
    return true;
}

/* ---- showrecipients ------------------------------------------------------- */

struct show_ctx {
    const struct sched_select *sel;
    const struct q_rcpt **rs;
    size_t n, cap;
    uint64_t mid; /* showmessage: only this message (0: any) */
};

static void show_pick(void *arg, const struct q_rcpt *r)
{
    struct show_ctx *sc = arg;
    if (sc->mid != 0 && r->msg->mid != sc->mid)
        return;
    if (sc->sel != NULL) {
        if (sc->sel->domain != NULL && strcmp(r->dest->domain, sc->sel->domain) != 0)
            return;
        if (sc->sel->sender != NULL && strcasecmp(r->msg->sender, sc->sel->sender) != 0)
            return;
    }
    xgrow((void **)&sc->rs, &sc->cap, sc->n + 1, sizeof(*sc->rs));
    sc->rs[sc->n++] = r;
}

static int show_cmp(const void *a, const void *b)
{
    const struct q_rcpt *x = *(const struct q_rcpt *const *)a;
    const struct q_rcpt *y = *(const struct q_rcpt *const *)b;
    if (x->msg->mid != y->msg->mid)
        return x->msg->mid < y->msg->mid ? -1 : 1;
    return x->rid < y->rid ? -1 : x->rid > y->rid;
}

static void show_collect(struct ctl_ctx *ctx, struct show_ctx *sc)
{
    scheduler_foreach_rcpt(ctx->sched, show_pick, sc);
    if (sc->n > 0)
        qsort(sc->rs, sc->n, sizeof(*sc->rs), show_cmp);
}

static json_t *next_attempt(const struct q_rcpt *r)
{
    /* ready and active recipients are due now */
    return r->state == QR_WAITING ? ctl_json_time(r->next_ms) : json_null();
}

static json_t *rcpt_json(const struct q_rcpt *r)
{
    return json_pack("{s:I, s:I, s:I, s:i, s:s, s:s, s:s, s:s, s:o}", "mid",
                     (json_int_t)r->msg->mid, "rid", (json_int_t)r->rid, "size",
                     (json_int_t)r->msg->size, "attempts", (int)r->attempts, "sender",
                     r->msg->sender, "recipient", r->addr, "destination", r->dest->domain, "state",
                     rcpt_state_names[r->state], "next_attempt", next_attempt(r));
}

enum ctl_status ctl_cmd_showrecipients(struct ctl_ctx *ctx, struct ctl_call *call)
{
    struct sched_select sel;
    char domain[256], desc[300];
    if (!arg_select(call, true, &sel, domain, sizeof(domain), desc, sizeof(desc)))
        return CTL_ERROR;
    struct show_ctx sc = {.sel = &sel};
    show_collect(ctx, &sc);
    json_t *list = json_array();
    for (size_t i = 0; i < sc.n && i < SHOWRCPT_MAX; i++)
        json_array_append_new(list, rcpt_json(sc.rs[i]));
    call->result = json_pack("{s:o, s:s, s:I, s:b, s:o}", "as_of", ctl_json_time(ctl_now_ms()),
                             "selection", desc, "count", (json_int_t)sc.n, "truncated",
                             sc.n > SHOWRCPT_MAX, "recipients", list);
    free(sc.rs);
    return CTL_DONE;
}

/* ---- deleterecipients / bouncerecipients ----------------------------------- */

static enum ctl_status remove_cmd(struct ctl_ctx *ctx, struct ctl_call *call,
                                  enum sched_remove_how how)
{
    struct sched_select sel;
    struct sched_remove_counts cnt;
    char domain[256], desc[300], msg[512];
    const char *verb = how == SCHED_BOUNCE ? "bounced" : "deleted";
    if (!arg_select(call, false, &sel, domain, sizeof(domain), desc, sizeof(desc)))
        return CTL_ERROR;
    scheduler_remove(ctx->sched, &sel, how, &cnt);
    snprintf(msg, sizeof(msg), "%llu recipient(s) of %llu message(s) %s.",
             (unsigned long long)cnt.rcpts, (unsigned long long)cnt.msgs, verb);
    if (cnt.skipped > 0)
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
                 " %llu recipient(s) being delivered right now were skipped.",
                 (unsigned long long)cnt.skipped);
    call->result = json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "selection", desc, "action", verb,
                             "recipients", (json_int_t)cnt.rcpts, "messages", (json_int_t)cnt.msgs,
                             "skipped_active", (json_int_t)cnt.skipped, "message", msg);
    return CTL_DONE;
}

enum ctl_status ctl_cmd_deleterecipients(struct ctl_ctx *ctx, struct ctl_call *call)
{
    return remove_cmd(ctx, call, SCHED_DELETE);
}

enum ctl_status ctl_cmd_bouncerecipients(struct ctl_ctx *ctx, struct ctl_call *call)
{
    return remove_cmd(ctx, call, SCHED_BOUNCE);
}

/* ---- redirectrecipients ---------------------------------------------------- */

/* "host", "host:port", "[v6]:port" or "v6" into host/port (default 25). */
static bool parse_hostport(const char *v, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = NULL, *end;
    size_t n;
    *port = 25;
    if (v[0] == '[') {
        end = strchr(v, ']');
        if (end == NULL || (end[1] != '\0' && end[1] != ':'))
            return false;
        n = (size_t)(end - v - 1);
        v++;
        colon = end[1] == ':' ? end + 1 : NULL;
    } else {
        colon = strchr(v, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            colon = NULL; /* a bare IPv6 literal */
        n = colon ? (size_t)(colon - v) : strlen(v);
    }
    if (n == 0 || n >= hostlen)
        return false;
    memcpy(host, v, n);
    host[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (isspace((unsigned char)host[i]) || !isprint((unsigned char)host[i]))
            return false;
    if (colon != NULL) {
        char *e;
        long p = strtol(colon + 1, &e, 10);
        if (colon[1] == '\0' || *e != '\0' || p < 1 || p > 65535)
            return false;
        *port = (uint16_t)p;
    }
    return true;
}

enum ctl_status ctl_cmd_redirectrecipients(struct ctl_ctx *ctx, struct ctl_call *call)
{
    const char *v;
    char host[256];
    uint16_t port;
    struct dest *d;
    uint64_t waiting = 0;
    if (!ctl_arg_string(call, "host", &v))
        return CTL_ERROR;
    if (v == NULL)
        return ctl_error(call, "redirectrecipients needs HOST[:PORT] or 'clear'");
    if (strcmp(v, "clear") == 0) {
        scheduler_set_redirect(ctx->sched, NULL, 0);
        maillog(LOG_INFO, "Redirect of all deliveries cleared by operator");
        call->result = json_pack("{s:b, s:n, s:s}", "redirect", 0, "host", "message",
                                 "Redirect cleared: deliveries follow routes and MX again.");
        return CTL_DONE;
    }
    if (!parse_hostport(v, host, sizeof(host), &port))
        return ctl_error(call, "'%.64s' is not HOST[:PORT]", v);
    scheduler_set_redirect(ctx->sched, host, port);
    for (size_t i = 0; (d = scheduler_dest_next(ctx->sched, &i)) != NULL;)
        waiting += d->nwaiting;
    maillog(LOG_INFO, "All deliveries redirected by operator to %s port %u", host, (unsigned)port);
    scheduler_deliver_now(ctx->sched, NULL);
    call->result =
        json_pack("{s:b, s:s, s:i, s:I, s:s}", "redirect", 1, "host", host, "port", (int)port,
                  "rescheduled", (json_int_t)waiting, "message",
                  "All queued mail now goes to that host (until 'redirectrecipients clear' or "
                  "a restart).");
    return CTL_DONE;
}

/* ---- showmessage ----------------------------------------------------------- */

struct showmsg {
    json_t *result;
    const struct show_ctx *queued; /* the message's recipients in memory */
};

static json_t *opt_string(const char *s)
{
    return s ? json_string(s) : json_null();
}

static const struct q_rcpt *queued_rcpt(const struct show_ctx *sc, uint32_t rid)
{
    for (size_t i = 0; i < sc->n; i++)
        if (sc->rs[i]->rid == rid)
            return sc->rs[i];
    return NULL;
}

static void showmsg_one(void *arg, const struct spool_msg_rec *m)
{
    struct showmsg *sm = arg;
    json_t *rcpts = json_array();
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct spool_rcpt_rec *rr = &m->rcpts[i];
        const struct q_rcpt *q = queued_rcpt(sm->queued, rr->rid);
        json_array_append_new(
            rcpts, json_pack("{s:I, s:s, s:s, s:s, s:i, s:o, s:o}", "rid", (json_int_t)rr->rid,
                             "recipient", rr->addr, "destination", q ? q->dest->domain : "",
                             "state", q ? rcpt_state_names[q->state] : "stored", "attempts",
                             (int)(q ? q->attempts : rr->attempts), "next_attempt",
                             q ? next_attempt(q) : ctl_json_time(rr->next_attempt_ms), "last_error",
                             opt_string(rr->last_error)));
    }
    sm->result =
        json_pack("{s:I, s:I, s:s, s:o, s:o, s:o, s:o, s:I, s:o, s:o, s:b, s:o}", "mid",
                  (json_int_t)m->env.mid, "icid", (json_int_t)m->env.icid, "sender", m->env.sender,
                  "received", ctl_json_time(m->env.received_ms), "client_ip",
                  opt_string(m->env.client_ip), "helo", opt_string(m->env.helo), "listener",
                  opt_string(m->env.listener), "size", (json_int_t)m->size, "message_id",
                  opt_string(m->env.message_id), "subject", opt_string(m->env.subject), "dsn",
                  (m->env.flags & SPOOL_F_BOUNCE) != 0, "recipients", rcpts);
}

enum ctl_status ctl_cmd_showmessage(struct ctl_ctx *ctx, struct ctl_call *call)
{
    json_int_t mid;
    if (!ctl_arg_int(call, "mid", 1, INT64_MAX, 0, &mid))
        return CTL_ERROR;
    if (mid == 0)
        return ctl_error(call, "showmessage needs a MID");
    struct show_ctx sc = {.mid = (uint64_t)mid};
    struct showmsg sm = {.queued = &sc};
    show_collect(ctx, &sc);
    int rc = spool_load_one(ctx->spool, (uint64_t)mid, showmsg_one, &sm);
    free(sc.rs);
    if (rc == -ENOENT)
        return ctl_error(call, "No such message: MID %lld", (long long)mid);
    if (rc < 0)
        return ctl_error(call, "MID %lld could not be read from the spool", (long long)mid);
    call->result = sm.result;
    return CTL_DONE;
}

/* ---- suspenddel / resumedel / workqueue ------------------------------------ */

static json_t *suspended_domains(const struct ctl_ctx *ctx)
{
    json_t *list = json_array();
    const char *d;
    for (size_t i = 0; (d = scheduler_suspended_next(ctx->sched, &i)) != NULL;)
        json_array_append_new(list, json_string(d));
    return list;
}

static enum ctl_status delivery_cmd(struct ctl_ctx *ctx, struct ctl_call *call, bool on)
{
    const char *v;
    char domain[256];
    const char *what = on ? "suspended" : "resumed";
    if (!ctl_arg_string(call, "host", &v))
        return CTL_ERROR;
    bool all = v == NULL || strcmp(v, "all") == 0;
    if (!all && !ctl_domain_value(call, "host", v, domain, sizeof(domain)))
        return CTL_ERROR;
    size_t n = scheduler_suspend(ctx->sched, all ? NULL : domain, on);
    maillog(LOG_INFO, "Delivery %s by operator for %s", what, all ? "all destinations" : domain);
    call->result =
        json_pack("{s:s, s:b, s:I, s:b, s:o}", "host", all ? "all" : domain, "suspended", on,
                  "destinations", (json_int_t)n, "all_suspended",
                  scheduler_suspended_all(ctx->sched), "suspended_domains", suspended_domains(ctx));
    if (!on && !all && scheduler_suspended_all(ctx->sched))
        json_object_set_new(call->result, "message",
                            json_string("Delivery stays suspended for all destinations: "
                                        "resumedel without a domain resumes it."));
    return CTL_DONE;
}

enum ctl_status ctl_cmd_suspenddel(struct ctl_ctx *ctx, struct ctl_call *call)
{
    return delivery_cmd(ctx, call, true);
}

enum ctl_status ctl_cmd_resumedel(struct ctl_ctx *ctx, struct ctl_call *call)
{
    return delivery_cmd(ctx, call, false);
}

/* Every configured listener suspended by the operator. */
static bool receiving_suspended(const struct ctl_ctx *ctx)
{
    for (size_t i = 0; i < ctx->cfg->nlisteners; i++)
        if (!smtp_server_listener_suspended(ctx->smtp, ctx->cfg->listeners[i].name))
            return false;
    return ctx->cfg->nlisteners > 0;
}

const char *ctl_system_status(const struct ctl_ctx *ctx)
{
    bool del = scheduler_suspended_all(ctx->sched), rcv = receiving_suspended(ctx);
    if (del && rcv)
        return "Receiving and delivery suspended";
    if (del)
        return "Delivery suspended";
    if (rcv)
        return "Receiving suspended";
    return "Online";
}

/* Postern has no separate work queue (no content filters between
 * reception and delivery): it is always empty; pause and resume act on
 * delivery as suspenddel and resumedel without a domain do. */
enum ctl_status ctl_cmd_workqueue(struct ctl_ctx *ctx, struct ctl_call *call)
{
    const char *action;
    if (!ctl_arg_string(call, "action", &action))
        return CTL_ERROR;
    if (action != NULL && strcmp(action, "pause") == 0) {
        scheduler_suspend(ctx->sched, NULL, true);
        maillog(LOG_INFO, "Delivery suspended by operator for all destinations (workqueue pause)");
    } else if (action != NULL && strcmp(action, "resume") == 0) {
        scheduler_suspend(ctx->sched, NULL, false);
        maillog(LOG_INFO, "Delivery resumed by operator for all destinations (workqueue resume)");
    } else if (action != NULL && strcmp(action, "status") != 0) {
        return ctl_error(call, "unknown workqueue action '%.32s'; use status, pause or resume",
                         action);
    }
    call->result = json_pack(
        "{s:s, s:i}", "status",
        scheduler_suspended_all(ctx->sched) ? "Delivery suspended" : "Operational", "messages", 0);
    return CTL_DONE;
}

/* ---- suspendlistener / resumelistener -------------------------------------- */

static enum ctl_status listener_cmd(struct ctl_ctx *ctx, struct ctl_call *call, bool on)
{
    const char *name;
    if (!ctl_arg_string(call, "name", &name))
        return CTL_ERROR;
    if (name != NULL && strcmp(name, "all") == 0)
        name = NULL;
    if (smtp_server_suspend_listener(ctx->smtp, name, on) < 0)
        return ctl_error(call, "No listener named '%.64s'", name);
    json_t *list = json_array();
    for (size_t i = 0; i < ctx->cfg->nlisteners; i++) {
        const struct cfg_listener *l = &ctx->cfg->listeners[i];
        json_array_append_new(list, json_pack("{s:s, s:s, s:i, s:b}", "name", l->name, "address",
                                              l->address, "port", (int)l->port, "suspended",
                                              smtp_server_listener_suspended(ctx->smtp, l->name)));
    }
    call->result = json_pack("{s:s, s:b, s:o}", "name", name ? name : "all", "suspended", on,
                             "listeners", list);
    return CTL_DONE;
}

enum ctl_status ctl_cmd_suspendlistener(struct ctl_ctx *ctx, struct ctl_call *call)
{
    return listener_cmd(ctx, call, true);
}

enum ctl_status ctl_cmd_resumelistener(struct ctl_ctx *ctx, struct ctl_call *call)
{
    return listener_cmd(ctx, call, false);
}
