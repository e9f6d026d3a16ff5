/*
 * control_int: what control.c (socket, framing, dispatch) shares with the
 * command modules (cmd_counters.c, cmd_hosts.c, cmd_dns.c, cmd_log.c,
 * cmd_queue.c).
 *
 * A handler gets the context and one call: its arguments (a JSON object,
 * possibly empty) and where to put the outcome. It returns
 *   CTL_DONE     call->result holds the result object (ownership passes);
 *   CTL_ERROR    call->err holds the message;
 *   CTL_PENDING  the answer comes later: the handler set call->async and
 *                call->cancel, and will call control_complete(ctx->ctl,
 *                call->id, ...) exactly once from the loop, unless cancel()
 *                ran first (the client went away, or the daemon stops).
 * Async completions are keyed by the request id, never by a connection
 * pointer: a request whose connection is gone is simply not found.
 */
#ifndef POSTERN_CONTROL_CONTROL_INT_H
#define POSTERN_CONTROL_CONTROL_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/hmap.h"
#include "queue/queue.h"

struct control;
struct config;

/* Cumulative counters of `status`, one field per row (see ctl_totals_fields). */
struct ctl_totals {
    uint64_t messages_received;
    uint64_t recipients_received;
    uint64_t rejected_recipients;
    uint64_t soft_bounced;
    uint64_t completed;
    uint64_t hard_bounced;
    uint64_t hard_dns;
    uint64_t hard_5xx;
    uint64_t hard_filter;
    uint64_t hard_expired;
    uint64_t hard_other;
    uint64_t delivered;
    uint64_t deleted;
};

/* What resetcounters remembers: the totals then and every destination's
 * counters then (domain -> struct dest_counters *), so that "since reset"
 * is a subtraction and the live counters are never touched. */
struct ctl_snapshot {
    int64_t at_ms; /* 0: never reset */
    struct ctl_totals totals;
    struct hmap dests;
};

struct ctl_ctx {
    struct control *ctl;
    struct scheduler *sched;
    struct smtp_server *smtp;
    struct resolver *resolver;
    struct spool *spool;
    const struct config *cfg; /* the scheduler's, refreshed before each command */
    int64_t start_ms;         /* daemon start (control_new) */
    struct ctl_snapshot snap;
    /* Lifetime column: the totals of earlier runs (counters.json in the
     * spool directory), to which this run's Uptime totals are added */
    struct ctl_totals lifetime_base;
    struct event_base *base;
    struct listener_set *listeners; /* trace: the listeners' host access tables */
    struct rescon *rescon;          /* status detail: Resource Conservation gauge */
    struct ctl_stat *stat;          /* cmd_status.c: rates ring, sysstat, status line */
    struct tracking *tracking;      /* cmd_tracking.c: findevent */
    /* cmd_routes.c: apply a new configuration like SIGHUP (posternd's
     * daemon_apply_config); takes cfg's reference on success only */
    int (*apply_config)(struct config *cfg, char *err, size_t errlen);
};

struct ctl_call {
    uint64_t id;                 /* request id, for control_complete */
    const json_t *args;          /* an object, never NULL */
    json_t *result;              /* CTL_DONE */
    char err[512];               /* CTL_ERROR */
    void *async;                 /* CTL_PENDING: the handler's state ... */
    void (*cancel)(void *async); /* ... and how to drop it without answering */
    bool confirm;                /* the request said "confirm": true */
    unsigned uid;                /* the peer's uid, for log lines */
};

enum ctl_status { CTL_DONE, CTL_ERROR, CTL_PENDING };

typedef enum ctl_status (*ctl_handler_fn)(struct ctl_ctx *ctx, struct ctl_call *call);

/* Answer a CTL_PENDING request: result (ownership passes) or err. */
void control_complete(struct control *ctl, uint64_t id, json_t *result, const char *err);

/* ---- helpers shared by the command modules ---- */

int64_t ctl_now_ms(void);
/* A domain argument's value, lower-cased, without a trailing dot (cmd_queue.c). */
bool ctl_domain_value(struct ctl_call *call, const char *key, const char *v, char *buf, size_t len);
/* One SMTP route as JSON: domain, kind, hosts (cmd_routes.c). */
struct cfg_route;
json_t *ctl_route_json(const struct cfg_route *r);
/* Lifetime counters (cmd_counters.c): load at start, save every minute
 * and at shutdown. */
void ctl_lifetime_load(struct ctl_ctx *ctx);
void ctl_lifetime_save(const struct ctl_ctx *ctx);
/* Unix seconds of a millisecond time, or JSON null for 0 (never). */
json_t *ctl_json_time(int64_t ms);
/* A string argument, or NULL when absent; false (err set) if not a string. */
bool ctl_arg_string(struct ctl_call *call, const char *key, const char **out);
/* An integer argument in [min, max], def when absent; false (err set) otherwise. */
bool ctl_arg_int(struct ctl_call *call, const char *key, json_int_t min, json_int_t max,
                 json_int_t def, json_int_t *out);
enum ctl_status ctl_error(struct ctl_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A destination's counters since the last resetcounters. */
void ctl_dest_counters(const struct ctl_ctx *ctx, const struct dest *d, struct dest_counters *out);
uint64_t ctl_dest_hard(const struct dest_counters *c);
uint32_t ctl_dest_active(const struct dest *d);
void ctl_snapshot_free(struct ctl_snapshot *snap);
/* Totals since the daemon started (cmd_counters.c). */
void ctl_totals_now(const struct ctl_ctx *ctx, struct ctl_totals *t);
/* Queue gauges summed over destinations; oldest_ms of those with mail. */
struct ctl_queue_gauges {
    uint64_t conn_out, conn_pending, active, unattempted, dests;
    int64_t oldest_ms;
};
void ctl_queue_gauges(const struct ctl_ctx *ctx, struct ctl_queue_gauges *g);

/* cmd_status.c: `status detail` (Rates and system Gauges added to the
 * status result) and the periodic status line; start once the modules are
 * set, stop before control_free frees the context. */
void ctl_status_detail(struct ctl_ctx *ctx, json_t *result);
void ctl_stat_start(struct ctl_ctx *ctx);
void ctl_stat_stop(struct ctl_ctx *ctx);

/* ---- handlers (one per command; see control.c's table) ---- */

enum ctl_status ctl_cmd_status(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_resetcounters(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_workqueue(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_tophosts(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_hoststatus(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_delivernow(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_nslookup(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_dig(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_tail(struct ctl_ctx *ctx, struct ctl_call *call);
/* cmd_queue.c */
enum ctl_status ctl_cmd_showrecipients(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_deleterecipients(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_bouncerecipients(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_redirectrecipients(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_showmessage(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_suspenddel(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_resumedel(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_suspendlistener(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_resumelistener(struct ctl_ctx *ctx, struct ctl_call *call);
/* "Online", or which of receiving and delivery the operator suspended
 * (status's System status; cmd_queue.c). */
const char *ctl_system_status(const struct ctl_ctx *ctx);
enum ctl_status ctl_cmd_trace(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_findevent(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_smtproutes(struct ctl_ctx *ctx, struct ctl_call *call);
enum ctl_status ctl_cmd_smtpping(struct ctl_ctx *ctx, struct ctl_call *call);

#endif
