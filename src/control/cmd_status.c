/*
 * cmd_status: what `status detail` adds to `status` (Rates and the system
 * Gauges) and the periodic "Status:" line of mail_logs
 * (gateway-behaviour.md sections 4 and 5).
 *
 * Rates. Once a minute the cumulative totals (ctl_totals_now: messages and
 * recipients received, delivered recipients, soft bounce events, hard
 * bounced recipients) are pushed on a ring of RATE_SLOTS samples. The rate
 * over N minutes is (totals now - the newest sample at least N minutes old)
 * x 60 / N events per hour; while the daemon is younger than N minutes the
 * sample at start (all zero) is used, so the figure is "per hour over the
 * last N minutes" with one minute of granularity.
 *
 * Gauges. core/sysstat samples the process every tick (TICK_MS, or the
 * status interval if shorter): CPU % of the process and per thread (the
 * main loop and the spool worker) over the last tick, RSS against
 * MemTotal, storage I/O bytes per second; the spool filesystem's KiB used
 * and free (statvfs), the Resource Conservation gauge (rescon_gauge) and
 * the queue gauges of `status`.
 *
 * The status line is written every logging.status_interval (re-read at
 * each tick, so a reload applies); its fields are listed in
 * docs/operator.md.
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"
#include "core/sysstat.h"
#include "policy/rescon.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "smtp/smtp_server.h"

#include <event2/event.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Why 16: the longest rate window is 15 minutes; one more sample is the
 * one at least 15 minutes old. */
#define RATE_SLOTS 16
#define MINUTE_MS  60000
/* Why 5 s: short enough that "CPU over the last interval" means now, long
 * enough that reading a few /proc files costs nothing. */
#define TICK_MS 5000

struct rate_sample {
    int64_t mono_ms;
    struct ctl_totals t;
};

struct ctl_stat {
    struct event *tick;
    struct sysstat sys;
    struct rate_sample ring[RATE_SLOTS];
    size_t nring, head; /* head: the next slot to write */
    int64_t last_line_ms;
};

static int64_t mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ring_push(struct ctl_stat *st, const struct ctl_ctx *ctx, int64_t now)
{
    struct rate_sample *r = &st->ring[st->head];
    r->mono_ms = now;
    ctl_totals_now(ctx, &r->t);
    st->head = (st->head + 1) % RATE_SLOTS;
    if (st->nring < RATE_SLOTS)
        st->nring++;
}

/* The newest sample at least min minutes old, else the oldest. */
static const struct rate_sample *ring_base(const struct ctl_stat *st, int64_t now, int min)
{
    const struct rate_sample *best = NULL;
    for (size_t k = 1; k <= st->nring; k++) {
        const struct rate_sample *r = &st->ring[(st->head + RATE_SLOTS - k) % RATE_SLOTS];
        best = r;
        if (now - r->mono_ms >= (int64_t)min * MINUTE_MS)
            break;
    }
    return best;
}

static uint64_t tick_ms(const struct ctl_ctx *ctx)
{
    uint64_t iv = ctx->cfg->status_interval;
    return iv > 0 && iv < TICK_MS ? iv : TICK_MS;
}

struct sys_gauges {
    uint64_t q_used_kb, q_free_kb;
    int rescon;
};

static void sys_gauges(const struct ctl_ctx *ctx, struct sys_gauges *g)
{
    memset(g, 0, sizeof(*g));
    sysstat_fs_kb(ctx->cfg->spool_dir, &g->q_used_kb, &g->q_free_kb);
    g->rescon = ctx->rescon ? rescon_gauge(ctx->rescon) : 0;
}

static long long pct(double v)
{
    return v < 0 ? 0 : (long long)(v + 0.5);
}

static void status_line(struct ctl_ctx *ctx)
{
    const struct sysstat *s = &ctx->stat->sys;
    const struct smtp_server_stats *ss = smtp_server_stats(ctx->smtp);
    struct ctl_totals t;
    struct ctl_queue_gauges q;
    struct sys_gauges g;
    ctl_totals_now(ctx, &t);
    ctl_queue_gauges(ctx, &q);
    sys_gauges(ctx, &g);
    double io =
        (s->io_read_bps > 0 ? s->io_read_bps : 0) + (s->io_write_bps > 0 ? s->io_write_bps : 0);
    maillog(LOG_INFO,
            "Status: CPULd %lld DskIO %lld RAMUtil %lld RAMUsd %lld QKUsd %llu QKFre %llu "
            "CrtMID %llu CrtICID %llu CrtDCID %llu InjMsg %llu InjRcp %llu RejRcp %llu "
            "SftBncEvnt %llu CmpRcp %llu HrdBncRcp %llu DnsHrdBnc %llu 5XXHrdBnc %llu "
            "FltrHrdBnc %llu ExpHrdBnc %llu OtrHrdBnc %llu DlvRcp %llu DelRcp %llu "
            "ActvRcp %llu UnatmptRcp %llu AtmptRcp %llu CrtCncIn %llu CrtCncOut %llu "
            "DstInMem %llu ResCon %d WorkQ %d",
            pct(s->cpu_pct), (long long)(io / 1024 + 0.5), pct(s->ram_pct),
            (long long)(s->rss_kb > 0 ? s->rss_kb * 1024 : 0), (unsigned long long)g.q_used_kb,
            (unsigned long long)g.q_free_kb,
            (unsigned long long)spool_current_id(ctx->spool, SPOOL_ID_MID),
            (unsigned long long)spool_current_id(ctx->spool, SPOOL_ID_ICID),
            (unsigned long long)spool_current_id(ctx->spool, SPOOL_ID_DCID),
            (unsigned long long)t.messages_received, (unsigned long long)t.recipients_received,
            (unsigned long long)t.rejected_recipients, (unsigned long long)t.soft_bounced,
            (unsigned long long)t.completed, (unsigned long long)t.hard_bounced,
            (unsigned long long)t.hard_dns, (unsigned long long)t.hard_5xx,
            (unsigned long long)t.hard_filter, (unsigned long long)t.hard_expired,
            (unsigned long long)t.hard_other, (unsigned long long)t.delivered,
            (unsigned long long)t.deleted, (unsigned long long)q.active,
            (unsigned long long)q.unattempted,
            (unsigned long long)(q.active > q.unattempted ? q.active - q.unattempted : 0),
            (unsigned long long)ss->current, (unsigned long long)q.conn_out,
            (unsigned long long)q.dests, g.rescon, 0);
}

static void stat_arm(struct ctl_ctx *ctx)
{
    uint64_t ms = tick_ms(ctx);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ctx->stat->tick, &tv);
}

static void stat_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct ctl_ctx *ctx = arg;
    struct ctl_stat *st = ctx->stat;
    int64_t now = mono_now();
    const struct rate_sample *last = &st->ring[(st->head + RATE_SLOTS - 1) % RATE_SLOTS];
    ctx->cfg = scheduler_config(ctx->sched); /* follow reloads */
    sysstat_sample(&st->sys);
    if (now - last->mono_ms >= MINUTE_MS) {
        ring_push(st, ctx, now);
        ctl_lifetime_save(ctx); /* once a minute: a crash loses at most that */
    }
    if (now - st->last_line_ms >= (int64_t)ctx->cfg->status_interval - 50) {
        st->last_line_ms = now;
        status_line(ctx);
    }
    stat_arm(ctx);
}

void ctl_stat_start(struct ctl_ctx *ctx)
{
    struct ctl_stat *st = xcalloc(1, sizeof(*st));
    int64_t now = mono_now();
    ctx->stat = st;
    sysstat_init(&st->sys);
    sysstat_sample(&st->sys);
    /* the sample at start: every counter of this process starts at zero */
    st->ring[0].mono_ms = now;
    st->head = st->nring = 1;
    st->last_line_ms = now;
    st->tick = evtimer_new(ctx->base, stat_on_tick, ctx);
    stat_arm(ctx);
}

void ctl_stat_stop(struct ctl_ctx *ctx)
{
    if (ctx->stat == NULL)
        return;
    if (ctx->stat->tick)
        event_free(ctx->stat->tick);
    free(ctx->stat);
    ctx->stat = NULL;
}

/* ---- status detail ---------------------------------------------------- */

static json_t *rates_json(const struct ctl_ctx *ctx)
{
    static const int windows[] = {1, 5, 15};
    static const struct {
        const char *key;
        size_t off;
    } rows[] = {
        {"messages_received", offsetof(struct ctl_totals, messages_received)},
        {"recipients_received", offsetof(struct ctl_totals, recipients_received)},
        {"soft_bounced", offsetof(struct ctl_totals, soft_bounced)},
        {"completed", offsetof(struct ctl_totals, completed)},
        {"hard_bounced", offsetof(struct ctl_totals, hard_bounced)},
        {"delivered", offsetof(struct ctl_totals, delivered)},
    };
    struct ctl_totals now_t;
    int64_t now = mono_now();
    json_t *out = json_object();
    ctl_totals_now(ctx, &now_t);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *r = json_object();
        for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
            const struct rate_sample *b = ring_base(ctx->stat, now, windows[w]);
            uint64_t a, z;
            char key[8];
            memcpy(&a, (const char *)&now_t + rows[i].off, sizeof(a));
            memcpy(&z, (const char *)&b->t + rows[i].off, sizeof(z));
            snprintf(key, sizeof(key), "%dm", windows[w]);
            json_object_set_new(
                r, key,
                json_integer((json_int_t)((a > z ? a - z : 0) * 60 / (uint64_t)windows[w])));
        }
        json_object_set_new(out, rows[i].key, r);
    }
    return out;
}

static json_t *num_or_null(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

static json_t *system_json(const struct ctl_ctx *ctx)
{
    const struct sysstat *s = &ctx->stat->sys;
    struct sys_gauges g;
    json_t *threads = json_array();
    sys_gauges(ctx, &g);
    for (size_t i = 0; i < s->nthreads; i++)
        json_array_append_new(threads, json_pack("{s:s, s:f}", "name", s->threads[i].name,
                                                 "cpu_pct", s->threads[i].cpu_pct));
    return json_pack(
        "{s:f, s:o, s:I, s:o, s:I, s:o, s:o, s:o, s:I, s:I, s:i, s:i}", "cpu_pct", s->cpu_pct,
        "cpu_threads", threads, "sample_interval_ms", (json_int_t)s->interval_ms, "ram_pct",
        num_or_null(s->ram_pct), "rss_kb", (json_int_t)s->rss_kb, "mem_total_kb",
        s->mem_total_kb < 0 ? json_null() : json_integer((json_int_t)s->mem_total_kb),
        "disk_read_bps", num_or_null(s->io_read_bps), "disk_write_bps",
        num_or_null(s->io_write_bps), "queue_kb_used", (json_int_t)g.q_used_kb, "queue_kb_free",
        (json_int_t)g.q_free_kb, "resource_conservation", g.rescon, "resource_conservation_state",
        ctx->rescon ? (int)rescon_state(ctx->rescon) : 0);
}

void ctl_status_detail(struct ctl_ctx *ctx, json_t *result)
{
    json_object_set_new(result, "rates", rates_json(ctx));
    json_object_set_new(result, "system", system_json(ctx));
}
