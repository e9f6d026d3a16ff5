/*
 * cmd_hosts: `tophosts`, `hoststatus` and `delivernow`: the per-destination
 * view of the delivery queue (struct dest, owned by the scheduler and only
 * read here, except for delivernow's scheduler_deliver_now()).
 *
 * Counters are "since the last resetcounters" (ctl_dest_counters); gauges are
 * live. "Conn. Out"/Current Outbound Connections count connections that are
 * up; Pending Outbound Connections those still connecting or greeting.
 * Times are Unix seconds in the JSON; posternctl formats them.
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/config.h"
#include "queue/scheduler.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Why 20: the appliance's tophosts shows the top 20. */
#define TOPHOSTS_MAX 20

static const char *const host_state_names[] = {
    [HOST_UNKNOWN] = "unknown",
    [HOST_UP] = "up",
    [HOST_DOWN] = "down",
};

/* One row of tophosts, with every sortable value. */
struct top_row {
    const struct dest *d;
    uint64_t v[5]; /* indexed like sort_keys */
};

static const char *const sort_keys[] = {"active_rcpts", "conn_out", "deliv_rcpts", "soft_bounces",
                                        "hard_bounces"};
#define NSORT_KEYS (sizeof(sort_keys) / sizeof(sort_keys[0]))

static size_t sort_key; /* qsort has no context argument; loop thread only */

static int top_cmp(const void *a, const void *b)
{
    const struct top_row *x = a, *y = b;
    if (x->v[sort_key] != y->v[sort_key])
        return x->v[sort_key] > y->v[sort_key] ? -1 : 1;
    return strcmp(x->d->domain, y->d->domain); /* stable, readable ties */
}

static void top_fill(const struct ctl_ctx *ctx, const struct dest *d, struct top_row *r)
{
    struct dest_counters c;
    ctl_dest_counters(ctx, d, &c);
    r->d = d;
    r->v[0] = ctl_dest_active(d);
    r->v[1] = d->conns - d->connecting;
    r->v[2] = c.delivered;
    r->v[3] = c.soft_bounced;
    r->v[4] = ctl_dest_hard(&c);
}

static json_t *top_json(const struct top_row *r, size_t rank)
{
    json_t *o = json_pack("{s:I, s:s, s:b, s:s}", "rank", (json_int_t)rank, "host", r->d->domain,
                          "down", r->d->state == HOST_DOWN, "state", host_state_names[r->d->state]);
    for (size_t k = 0; k < NSORT_KEYS; k++)
        json_object_set_new(o, sort_keys[k], json_integer((json_int_t)r->v[k]));
    return o;
}

enum ctl_status ctl_cmd_tophosts(struct ctl_ctx *ctx, struct ctl_call *call)
{
    const char *key;
    struct top_row *rows = NULL;
    size_t n = 0, cap = 0;
    struct dest *d;
    if (!ctl_arg_string(call, "sort", &key))
        return CTL_ERROR;
    sort_key = 0; /* default: active_rcpts */
    while (key != NULL && sort_key < NSORT_KEYS && strcmp(sort_keys[sort_key], key) != 0)
        sort_key++;
    if (sort_key == NSORT_KEYS)
        return ctl_error(call,
                         "unknown sort key '%.64s'; use active_rcpts, conn_out, deliv_rcpts, "
                         "hard_bounces or soft_bounces",
                         key);
    for (size_t i = 0; (d = scheduler_dest_next(ctx->sched, &i)) != NULL;) {
        xgrow((void **)&rows, &cap, n + 1, sizeof(*rows));
        top_fill(ctx, d, &rows[n++]);
    }
    if (n > 0)
        qsort(rows, n, sizeof(*rows), top_cmp);
    json_t *list = json_array();
    for (size_t i = 0; i < n && i < TOPHOSTS_MAX; i++)
        json_array_append_new(list, top_json(&rows[i], i + 1));
    free(rows);
    call->result = json_pack("{s:o, s:s, s:o}", "as_of", ctl_json_time(ctl_now_ms()), "sort",
                             sort_keys[sort_key], "hosts", list);
    return CTL_DONE;
}

/* ---- hoststatus ---------------------------------------------------------- */

/* The domain argument key, lower-cased, without a trailing dot, into buf. */
static bool arg_domain(struct ctl_call *call, const char *key, char *buf, size_t len)
{
    const char *v;
    return ctl_arg_string(call, key, &v) && ctl_domain_value(call, key, v, buf, len);
}

static json_t *host_counters(const struct dest_counters *c)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "soft_bounced",
                     (json_int_t)c->soft_bounced, "completed", (json_int_t)c->completed,
                     "hard_bounced", (json_int_t)ctl_dest_hard(c), "hard_dns",
                     (json_int_t)c->hard_dns, "hard_5xx", (json_int_t)c->hard_5xx, "hard_filter",
                     (json_int_t)c->hard_filter, "hard_expired", (json_int_t)c->hard_expired,
                     "hard_other", (json_int_t)c->hard_other, "delivered", (json_int_t)c->delivered,
                     "deleted", (json_int_t)c->deleted);
}

static json_t *host_gauges(const struct dest *d)
{
    uint32_t active = ctl_dest_active(d);
    uint32_t attempted = active > d->nunattempted ? active - d->nunattempted : 0;
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "active_rcpts", (json_int_t)active,
                     "unattempted_rcpts", (json_int_t)d->nunattempted, "attempted_rcpts",
                     (json_int_t)attempted, "conn_out", (json_int_t)(d->conns - d->connecting),
                     "conn_pending", (json_int_t)d->connecting);
}

static json_t *host_error(const char *text, int64_t at_ms)
{
    if (text[0] == '\0')
        return json_null();
    return json_pack("{s:s, s:o}", "text", text, "at", ctl_json_time(at_ms));
}

static json_t *host_mx(const struct dest *d)
{
    json_t *list = json_array();
    for (size_t i = 0; i < d->nmx; i++)
        json_array_append_new(
            list, json_pack("{s:i, s:s}", "pref", (int)d->mx[i].pref, "host", d->mx[i].host));
    return list;
}

static json_t *host_ips(const struct dest *d)
{
    json_t *list = json_array();
    for (size_t i = 0; i < d->nips; i++)
        json_array_append_new(list, json_string(d->ips[i]));
    return list;
}

/* The SMTP route that applies to domain, or null (delivery by MX). */
static json_t *host_route(const struct config *cfg, const char *domain)
{
    const struct cfg_route *r = config_route_for(cfg, domain);
    return r ? ctl_route_json(r) : json_null();
}

static json_t *host_json(const struct ctl_ctx *ctx, const struct dest *d)
{
    struct dest_counters c;
    ctl_dest_counters(ctx, d, &c);
    json_t *o = json_pack("{s:s, s:b, s:o, s:s, s:o, s:o}", "host", d->domain, "found", 1, "as_of",
                          ctl_json_time(ctl_now_ms()), "state", host_state_names[d->state],
                          "counters", host_counters(&c), "gauges", host_gauges(d));
    json_object_set_new(o, "oldest_message",
                        ctl_json_time(ctl_dest_active(d) > 0 ? d->oldest_ms : 0));
    json_object_set_new(o, "last_activity", ctl_json_time(d->last_activity_ms));
    json_object_set_new(o, "ips", host_ips(d));
    json_object_set_new(o, "mx", host_mx(d));
    json_object_set_new(o, "mx_expiry", ctl_json_time(d->nmx ? d->mx_expiry_ms : 0));
    json_object_set_new(o, "last_4xx", host_error(d->last_4xx, d->last_4xx_ms));
    json_object_set_new(o, "last_5xx", host_error(d->last_5xx, d->last_5xx_ms));
    json_object_set_new(o, "route", host_route(ctx->cfg, d->domain));
    return o;
}

enum ctl_status ctl_cmd_hoststatus(struct ctl_ctx *ctx, struct ctl_call *call)
{
    char domain[256];
    if (!arg_domain(call, "host", domain, sizeof(domain)))
        return CTL_ERROR;
    const struct dest *d = scheduler_dest(ctx->sched, domain);
    if (d == NULL) {
        /* Not an error: the appliance answers this as a status. */
        call->result = json_pack("{s:s, s:b, s:o, s:s, s:o}", "host", domain, "found", 0, "as_of",
                                 ctl_json_time(ctl_now_ms()), "message", "No record of host",
                                 "route", host_route(ctx->cfg, domain));
        return CTL_DONE;
    }
    call->result = host_json(ctx, d);
    return CTL_DONE;
}

/* ---- delivernow ---------------------------------------------------------- */

enum ctl_status ctl_cmd_delivernow(struct ctl_ctx *ctx, struct ctl_call *call)
{
    char domain[256] = "all";
    const char *v;
    uint64_t waiting = 0;
    struct dest *d;
    if (!ctl_arg_string(call, "host", &v))
        return CTL_ERROR;
    if (v != NULL && !arg_domain(call, "host", domain, sizeof(domain)))
        return CTL_ERROR;
    bool all = strcmp(domain, "all") == 0;
    if (!all && (d = scheduler_dest(ctx->sched, domain)) == NULL)
        return ctl_error(call, "No record of host '%s'", domain);
    for (size_t i = 0; (d = scheduler_dest_next(ctx->sched, &i)) != NULL;)
        if (all || strcmp(d->domain, domain) == 0)
            waiting += d->nwaiting;
    scheduler_deliver_now(ctx->sched, all ? NULL : domain);
    call->result = json_pack("{s:s, s:I}", "host", domain, "rescheduled", (json_int_t)waiting);
    return CTL_DONE;
}
