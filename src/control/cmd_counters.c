/*
 * cmd_counters: `status`, `resetcounters` and `workqueue`, and the "since
 * reset" arithmetic the host commands share.
 *
 * Counters come from two owners: the SMTP server (received, rejected) and
 * the destinations (soft/hard bounces, completions), summed over every
 * destination in memory (destinations are never freed while the daemon
 * runs, so the sum only grows). Three columns, as on the appliance:
 *   Reset     since the last resetcounters (= Uptime if never reset);
 *   Uptime    since the daemon started;
 *   Lifetime  across restarts: the totals of earlier runs, kept in
 *             counters.json in the spool directory (saved every minute and
 *             at shutdown, so a crash loses at most a minute of counts),
 *             plus Uptime.
 * resetcounters never touches a live counter: it stores a snapshot and the
 * Reset column is the difference.
 *
 * `workqueue` is in cmd_queue.c (its pause/resume suspend delivery).
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "smtp/smtp_server.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdio.h>

/* The rows of `status` Counters, in display order; keys are the JSON names. */
static const struct {
    const char *key;
    size_t off;
} totals_fields[] = {
    {"messages_received", offsetof(struct ctl_totals, messages_received)},
    {"recipients_received", offsetof(struct ctl_totals, recipients_received)},
    {"rejected_recipients", offsetof(struct ctl_totals, rejected_recipients)},
    {"soft_bounced", offsetof(struct ctl_totals, soft_bounced)},
    {"completed", offsetof(struct ctl_totals, completed)},
    {"hard_bounced", offsetof(struct ctl_totals, hard_bounced)},
    {"hard_dns", offsetof(struct ctl_totals, hard_dns)},
    {"hard_5xx", offsetof(struct ctl_totals, hard_5xx)},
    {"hard_filter", offsetof(struct ctl_totals, hard_filter)},
    {"hard_expired", offsetof(struct ctl_totals, hard_expired)},
    {"hard_other", offsetof(struct ctl_totals, hard_other)},
    {"delivered", offsetof(struct ctl_totals, delivered)},
    {"deleted", offsetof(struct ctl_totals, deleted)},
};
#define NTOTALS (sizeof(totals_fields) / sizeof(totals_fields[0]))

static uint64_t field(const struct ctl_totals *t, size_t i)
{
    uint64_t v;
    memcpy(&v, (const char *)t + totals_fields[i].off, sizeof(v));
    return v;
}

uint64_t ctl_dest_hard(const struct dest_counters *c)
{
    return c->hard_dns + c->hard_5xx + c->hard_expired + c->hard_filter + c->hard_other;
}

uint32_t ctl_dest_active(const struct dest *d)
{
    return d->nready + d->nwaiting + d->nactive;
}

/* a - b, never below zero (a snapshot is never newer than the counter). */
static uint64_t since(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

void ctl_dest_counters(const struct ctl_ctx *ctx, const struct dest *d, struct dest_counters *out)
{
    const struct dest_counters *s = hmap_get(&ctx->snap.dests, d->domain, strlen(d->domain));
    *out = d->c;
    if (s == NULL)
        return;
    out->soft_bounced = since(d->c.soft_bounced, s->soft_bounced);
    out->completed = since(d->c.completed, s->completed);
    out->hard_dns = since(d->c.hard_dns, s->hard_dns);
    out->hard_5xx = since(d->c.hard_5xx, s->hard_5xx);
    out->hard_expired = since(d->c.hard_expired, s->hard_expired);
    out->hard_filter = since(d->c.hard_filter, s->hard_filter);
    out->hard_other = since(d->c.hard_other, s->hard_other);
    out->delivered = since(d->c.delivered, s->delivered);
    out->deleted = since(d->c.deleted, s->deleted);
}

void ctl_snapshot_free(struct ctl_snapshot *snap)
{
    void *v;
    for (size_t i = 0; hmap_next(&snap->dests, &i, NULL, &v);)
        free(v);
    hmap_free(&snap->dests);
}

void ctl_totals_now(const struct ctl_ctx *ctx, struct ctl_totals *t)
{
    const struct smtp_server_stats *st = smtp_server_stats(ctx->smtp);
    struct dest *d;
    memset(t, 0, sizeof(*t));
    t->messages_received = st->messages;
    t->recipients_received = st->recipients;
    t->rejected_recipients = st->rejected_recipients;
    for (size_t i = 0; (d = scheduler_dest_next(ctx->sched, &i)) != NULL;) {
        t->soft_bounced += d->c.soft_bounced;
        t->completed += d->c.completed;
        t->hard_dns += d->c.hard_dns;
        t->hard_5xx += d->c.hard_5xx;
        t->hard_filter += d->c.hard_filter;
        t->hard_expired += d->c.hard_expired;
        t->hard_other += d->c.hard_other;
        t->delivered += d->c.delivered;
        t->deleted += d->c.deleted;
    }
    t->hard_bounced = t->hard_dns + t->hard_5xx + t->hard_filter + t->hard_expired + t->hard_other;
}

static json_t *status_counters(const struct ctl_ctx *ctx)
{
    struct ctl_totals now;
    json_t *out = json_object();
    ctl_totals_now(ctx, &now);
    for (size_t i = 0; i < NTOTALS; i++) {
        uint64_t up = field(&now, i);
        uint64_t reset = ctx->snap.at_ms ? since(up, field(&ctx->snap.totals, i)) : up;
        uint64_t life = up + field(&ctx->lifetime_base, i);
        json_object_set_new(out, totals_fields[i].key,
                            json_pack("{s:I, s:I, s:I}", "reset", (json_int_t)reset, "uptime",
                                      (json_int_t)up, "lifetime", (json_int_t)life));
    }
    return out;
}

void ctl_queue_gauges(const struct ctl_ctx *ctx, struct ctl_queue_gauges *g)
{
    struct dest *d;
    memset(g, 0, sizeof(*g));
    for (size_t i = 0; (d = scheduler_dest_next(ctx->sched, &i)) != NULL;) {
        uint32_t active = ctl_dest_active(d);
        g->dests++;
        g->conn_out += d->conns - d->connecting;
        g->conn_pending += d->connecting;
        g->active += active;
        g->unattempted += d->nunattempted;
        if (active > 0 && d->oldest_ms > 0 && (g->oldest_ms == 0 || d->oldest_ms < g->oldest_ms))
            g->oldest_ms = d->oldest_ms;
    }
}

static json_t *status_gauges(const struct ctl_ctx *ctx, const struct ctl_queue_gauges *g)
{
    const struct smtp_server_stats *st = smtp_server_stats(ctx->smtp);
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:I}", "conn_in", (json_int_t)st->current,
                     "conn_out", (json_int_t)g->conn_out, "conn_pending",
                     (json_int_t)g->conn_pending, "active_rcpts", (json_int_t)g->active,
                     "unattempted_rcpts", (json_int_t)g->unattempted, "attempted_rcpts",
                     (json_int_t)(g->active > g->unattempted ? g->active - g->unattempted : 0),
                     "work_queue", 0, "destinations", (json_int_t)g->dests);
}

enum ctl_status ctl_cmd_status(struct ctl_ctx *ctx, struct ctl_call *call)
{
    struct ctl_queue_gauges g;
    bool detail = json_is_true(json_object_get(call->args, "detail"));
    ctl_queue_gauges(ctx, &g);
    json_t *ids =
        json_pack("{s:I, s:I, s:I}", "mid", (json_int_t)spool_current_id(ctx->spool, SPOOL_ID_MID),
                  "icid", (json_int_t)spool_current_id(ctx->spool, SPOOL_ID_ICID), "dcid",
                  (json_int_t)spool_current_id(ctx->spool, SPOOL_ID_DCID));
    call->result = json_pack("{s:o, s:o, s:o, s:s, s:o, s:b, s:o, s:o, s:o}", "as_of",
                             ctl_json_time(ctl_now_ms()), "up_since", ctl_json_time(ctx->start_ms),
                             "last_reset", ctl_json_time(ctx->snap.at_ms), "system_status",
                             ctl_system_status(ctx), "oldest_message", ctl_json_time(g.oldest_ms),
                             "lifetime_persisted", 1, "counters", status_counters(ctx),
                             "current_ids", ids, "gauges", status_gauges(ctx, &g));
    if (detail)
        ctl_status_detail(ctx, call->result);
    return CTL_DONE;
}

enum ctl_status ctl_cmd_resetcounters(struct ctl_ctx *ctx, struct ctl_call *call)
{
    struct dest *d;
    ctl_snapshot_free(&ctx->snap);
    hmap_init(&ctx->snap.dests);
    ctl_totals_now(ctx, &ctx->snap.totals);
    ctx->snap.at_ms = ctl_now_ms();
    for (size_t i = 0; (d = scheduler_dest_next(ctx->sched, &i)) != NULL;) {
        struct dest_counters *c = xmalloc(sizeof(*c));
        *c = d->c;
        hmap_put(&ctx->snap.dests, d->domain, strlen(d->domain), c);
    }
    call->result = json_pack("{s:s, s:o}", "message", "Counters reset.", "reset_at",
                             ctl_json_time(ctx->snap.at_ms));
    return CTL_DONE;
}

/* ---- Lifetime counters ---------------------------------------------------- */

static void lifetime_path(const struct ctl_ctx *ctx, char *out, size_t len)
{
    /* the scheduler's configuration, not ctx->cfg: that one is refreshed
     * only per command and tick, and a reload may have freed it since */
    snprintf(out, len, "%s/counters.json", scheduler_config(ctx->sched)->spool_dir);
}

void ctl_lifetime_load(struct ctl_ctx *ctx)
{
    char path[4096];
    json_error_t jerr;
    memset(&ctx->lifetime_base, 0, sizeof(ctx->lifetime_base));
    lifetime_path(ctx, path, sizeof(path));
    json_t *j = json_load_file(path, 0, &jerr);
    if (j == NULL)
        return; /* first start, or unreadable: Lifetime starts from here */
    for (size_t i = 0; i < NTOTALS; i++) {
        json_t *v = json_object_get(j, totals_fields[i].key);
        uint64_t n =
            json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
        memcpy((char *)&ctx->lifetime_base + totals_fields[i].off, &n, sizeof(n));
    }
    json_decref(j);
}

void ctl_lifetime_save(const struct ctl_ctx *ctx)
{
    char path[4096], tmp[4120];
    struct ctl_totals now;
    json_t *j = json_object();
    ctl_totals_now(ctx, &now);
    for (size_t i = 0; i < NTOTALS; i++)
        json_object_set_new(
            j, totals_fields[i].key,
            json_integer((json_int_t)(field(&now, i) + field(&ctx->lifetime_base, i))));
    lifetime_path(ctx, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* write then rename: a crash leaves the old file or the new, never half */
    if (json_dump_file(j, tmp, JSON_COMPACT) == 0 && rename(tmp, path) == 0) {
        json_decref(j);
        return;
    }
    unlink(tmp);
    json_decref(j);
    maillog(LOG_WARNING, "Cannot save lifetime counters to %s", path);
}
