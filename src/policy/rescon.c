/*
 * rescon: resource conservation state machine and sampler (rescon.h).
 *
 * Invariants: level[k] is the level of pressure k after the last sample;
 * state is the highest of them; delay is 0 unless state is TARPIT, and
 * then 1..RESCON_MAX_DELAY_S. The alert children still running are in
 * pids[]; they are reaped (waitpid WNOHANG) on every tick, so the loop
 * never blocks on a slow alert script and none is left a zombie for long.
 */
#include "policy/rescon.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"
#include "queue/spool.h"

/* Why 8: an alert script that hangs must not make processes pile up once a
 * second; past this many unfinished ones, alerts are logged as skipped. */
#define RESCON_MAX_CHILDREN 8
/* Why cap at 999: the backlog can exceed its limit many times over; the
 * percentage stays a small number that fits every format and comparison. */
#define RESCON_PCT_CAP 999

struct rescon {
    struct rescon_params p;
    enum rescon_state level[RESCON_KINDS];
    unsigned pct[RESCON_KINDS];
    enum rescon_state state;
    unsigned delay;
    bool suspended;
    /* sampler */
    struct event *tick;
    struct spool *spool;
    struct config *cfg;
    rescon_handler_fn handler;
    void *handler_ctx;
    pid_t pids[RESCON_MAX_CHILDREN];
    size_t npids;
};

static const char *const kind_names[RESCON_KINDS] = {"memory", "disk", "backlog"};

const char *rescon_kind_name(enum rescon_kind k)
{
    return kind_names[k];
}

static void rescon_on_tick(evutil_socket_t fd, short what, void *arg);

/* ---- the state machine ------------------------------------------------------ */

struct rescon *rescon_new(struct event_base *base, const struct rescon_params *p)
{
    struct rescon *rc = xcalloc(1, sizeof(*rc));
    rc->p = *p;
    if (base != NULL)
        rc->tick = event_new(base, -1, EV_PERSIST, rescon_on_tick, rc);
    return rc;
}

void rescon_set_params(struct rescon *rc, const struct rescon_params *p)
{
    rc->p = *p;
}

void rescon_params_from_config(const struct config *cfg, struct rescon_params *p)
{
    const struct cfg_rescon *r = &cfg->rescon;
    *p = (struct rescon_params){
        .start = {r->memory_start, r->disk_start, r->backlog_start},
        .halt = {r->memory_halt, r->disk_halt, r->backlog_halt},
        .suspend = r->backlog_suspend,
        .resume = r->backlog_resume,
        .hysteresis = r->hysteresis,
    };
}

/* The next level of one pressure: enter a level at its threshold, leave it
 * only more than `hysteresis` points below (the anti-flap band). */
static enum rescon_state level_next(enum rescon_state cur, unsigned v, unsigned start,
                                    unsigned halt, unsigned margin)
{
    if (v >= halt)
        return RESCON_HALT;
    if (cur == RESCON_HALT && v + margin >= halt)
        return RESCON_HALT;
    if (v >= start)
        return RESCON_TARPIT;
    if (cur != RESCON_NORMAL && v + margin >= start)
        return RESCON_TARPIT;
    return RESCON_NORMAL;
}

/* Delay for one tarpitting pressure: 1 s at start, growing linearly to
 * RESCON_MAX_DELAY_S at halt (never reached: halt is another state). In
 * the band below start it stays at 1 s. */
static unsigned delay_for(unsigned v, unsigned start, unsigned halt)
{
    if (v <= start || halt <= start)
        return 1;
    if (v >= halt)
        return RESCON_MAX_DELAY_S;
    unsigned d = 1 + (RESCON_MAX_DELAY_S - 1) * (v - start) / (halt - start);
    return d > RESCON_MAX_DELAY_S ? RESCON_MAX_DELAY_S : d;
}

/* The pressure that explains the current state: among those at the
 * state's level, the one with the longest delay (tarpit) or the highest
 * percentage (halt). */
static enum rescon_kind rescon_cause(const struct rescon *rc)
{
    enum rescon_kind best = RESCON_MEMORY;
    unsigned best_v = 0;
    bool found = false;
    for (int k = 0; k < RESCON_KINDS; k++) {
        if (rc->level[k] != rc->state)
            continue;
        unsigned v = rc->state == RESCON_TARPIT
                         ? delay_for(rc->pct[k], rc->p.start[k], rc->p.halt[k])
                         : rc->pct[k];
        if (!found || v > best_v) {
            best = (enum rescon_kind)k;
            best_v = v;
            found = true;
        }
    }
    return best;
}

void rescon_update(struct rescon *rc, const unsigned pct[RESCON_KINDS], struct rescon_change *chg)
{
    enum rescon_state old_state = rc->state;
    bool old_suspended = rc->suspended;
    enum rescon_state top = RESCON_NORMAL;
    unsigned delay = 0;

    for (int k = 0; k < RESCON_KINDS; k++) {
        rc->pct[k] = pct[k] > RESCON_PCT_CAP ? RESCON_PCT_CAP : pct[k];
        if (rc->p.halt[k] == 0) {
            rc->level[k] = RESCON_NORMAL; /* this pressure is off */
            continue;
        }
        rc->level[k] =
            level_next(rc->level[k], rc->pct[k], rc->p.start[k], rc->p.halt[k], rc->p.hysteresis);
        if (rc->level[k] > top)
            top = rc->level[k];
        if (rc->level[k] == RESCON_TARPIT) {
            unsigned d = delay_for(rc->pct[k], rc->p.start[k], rc->p.halt[k]);
            if (d > delay)
                delay = d;
        }
    }
    rc->state = top;
    rc->delay = top == RESCON_TARPIT ? delay : 0;
    /* The suspend pair carries its own band: resume is below suspend. */
    unsigned b = rc->pct[RESCON_BACKLOG];
    if (!rc->suspended && b >= rc->p.suspend)
        rc->suspended = true;
    else if (rc->suspended && b < rc->p.resume)
        rc->suspended = false;

    *chg = (struct rescon_change){.state = rc->state != old_state,
                                  .suspend = rc->suspended != old_suspended};
    if (rc->state != RESCON_NORMAL)
        chg->cause = rescon_cause(rc);
    else
        chg->cause = RESCON_BACKLOG;
    chg->cause_pct = rc->pct[chg->cause];
}

enum rescon_state rescon_state(const struct rescon *rc)
{
    return rc->state;
}

unsigned rescon_delay(const struct rescon *rc)
{
    return rc->delay;
}

int rescon_gauge(const struct rescon *rc)
{
    if (rc->state == RESCON_HALT)
        return RESCON_GAUGE_HALTED;
    return (int)rc->delay;
}

bool rescon_suspended(const struct rescon *rc)
{
    return rc->suspended;
}

unsigned rescon_pressure(const struct rescon *rc, enum rescon_kind k)
{
    return rc->pct[k];
}

/* ---- measuring ---------------------------------------------------------------- */

/* Percent of limit that used is, capped. */
static unsigned pct_of(uint64_t used, uint64_t limit)
{
    if (limit == 0)
        return 0;
    uint64_t p = used / limit * 100 + used % limit * 100 / limit;
    return p > RESCON_PCT_CAP ? RESCON_PCT_CAP : (unsigned)p;
}

/* The daemon's resident set against memory_limit (0: physical memory). */
static unsigned measure_memory(const struct config *cfg)
{
    unsigned long size, resident;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t limit = cfg->rescon.memory_limit;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2)
        return 0;
    if (limit == 0) {
        long pages = sysconf(_SC_PHYS_PAGES);
        limit = pages > 0 ? (uint64_t)pages * page : 0;
    }
    return pct_of((uint64_t)resident * page, limit);
}

/* Used space of the spool's filesystem, as df counts it (blocks reserved
 * for root are not available to us, so they do not count as free). */
static unsigned measure_disk(const struct config *cfg)
{
    struct statvfs st;
    if (statvfs(cfg->spool_dir, &st) < 0)
        return 0;
    uint64_t used = (uint64_t)(st.f_blocks - st.f_bfree);
    return pct_of(used, used + (uint64_t)st.f_bavail);
}

static unsigned measure_backlog(const struct rescon *rc)
{
    uint64_t msgs = 0, rcpts = 0;
    if (rc->spool == NULL)
        return 0;
    spool_counts(rc->spool, &msgs, &rcpts);
    return pct_of(msgs, rc->cfg->rescon.backlog_limit);
}

/* Testing aid: "memory=N disk=N backlog=N" (any subset, any order)
 * replaces the measured percentages it names. */
static void read_pressure_file(const char *path, unsigned pct[RESCON_KINDS])
{
    char buf[256], *save = NULL;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (char *tok = strtok_r(buf, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
        for (int k = 0; k < RESCON_KINDS; k++) {
            size_t kl = strlen(kind_names[k]);
            if (strncmp(tok, kind_names[k], kl) == 0 && tok[kl] == '=') {
                unsigned long v = strtoul(tok + kl + 1, NULL, 10);
                pct[k] = v > RESCON_PCT_CAP ? RESCON_PCT_CAP : (unsigned)v;
            }
        }
    }
}

/* ---- alerts ------------------------------------------------------------------- */

/* Reap finished alert children without waiting. */
static void rescon_reap(struct rescon *rc)
{
    size_t i = 0;
    while (i < rc->npids) {
        int st;
        pid_t r = waitpid(rc->pids[i], &st, WNOHANG);
        if (r == 0) {
            i++;
            continue;
        }
        if (r > 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            maillog(LOG_WARNING, "Resource conservation alert command (pid %d) failed: status %d",
                    (int)rc->pids[i], st);
        rc->pids[i] = rc->pids[--rc->npids];
    }
}

/* Run the alert command as `cmd EVENT TEXT`: execve (through posix_spawn,
 * which is fork+execve without the fork's copy), never a shell, with stdin
 * on /dev/null, no descriptor of ours but stdout/stderr, and a minimal
 * environment. Never waits. */
static void rescon_alert(struct rescon *rc, const char *event, const char *text)
{
    const char *cmd = rc->cfg ? rc->cfg->rescon.alert_command : NULL;
    char *const argv[] = {(char *)cmd, (char *)event, (char *)text, NULL};
    char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;
    if (cmd == NULL)
        return;
    rescon_reap(rc);
    if (rc->npids >= RESCON_MAX_CHILDREN) {
        maillog(LOG_WARNING,
                "Resource conservation alert skipped: %zu alert commands still running", rc->npids);
        return;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    int err = posix_spawn(&pid, cmd, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) {
        maillog(LOG_WARNING, "Resource conservation alert command %s: %s", cmd, strerror(err));
        return;
    }
    rc->pids[rc->npids++] = pid;
}

/* ---- the sampler -------------------------------------------------------------- */

/* Log and alert one change of state or suspension. */
static void rescon_report(struct rescon *rc, const struct rescon_change *chg)
{
    char text[160];
    const char *kind = kind_names[chg->cause];
    if (chg->state) {
        const char *event = "normal";
        if (rc->state == RESCON_TARPIT) {
            event = "tarpit";
            snprintf(text, sizeof(text),
                     "Resource conservation mode entered: tarpit %u s (%s %u%%)", rc->delay, kind,
                     chg->cause_pct);
        } else if (rc->state == RESCON_HALT) {
            event = "halted";
            snprintf(text, sizeof(text), "Resource conservation mode entered: halted (%s %u%%)",
                     kind, chg->cause_pct);
        } else {
            snprintf(text, sizeof(text),
                     "Resource conservation mode left (all pressures normal: memory %u%%, disk "
                     "%u%%, backlog %u%%)",
                     rc->pct[RESCON_MEMORY], rc->pct[RESCON_DISK], rc->pct[RESCON_BACKLOG]);
        }
        maillog(rc->state == RESCON_NORMAL ? LOG_INFO : LOG_WARNING, "%s", text);
        rescon_alert(rc, event, text);
    }
    if (chg->suspend) {
        snprintf(text, sizeof(text), "Resource conservation: listeners %s (backlog %u%%)",
                 rc->suspended ? "suspended" : "resumed", rc->pct[RESCON_BACKLOG]);
        maillog(rc->suspended ? LOG_WARNING : LOG_INFO, "%s", text);
        rescon_alert(rc, rc->suspended ? "suspended" : "resumed", text);
    }
}

void rescon_sample(struct rescon *rc)
{
    unsigned pct[RESCON_KINDS];
    struct rescon_change chg;
    if (rc->cfg == NULL)
        return;
    pct[RESCON_MEMORY] = measure_memory(rc->cfg);
    pct[RESCON_DISK] = measure_disk(rc->cfg);
    pct[RESCON_BACKLOG] = measure_backlog(rc);
    if (rc->cfg->rescon.test_pressure_file != NULL)
        read_pressure_file(rc->cfg->rescon.test_pressure_file, pct);
    rescon_update(rc, pct, &chg);
    rescon_reap(rc);
    if (!chg.state && !chg.suspend)
        return;
    rescon_report(rc, &chg);
    if (rc->handler)
        rc->handler(rc->handler_ctx, rc);
}

static void rescon_on_tick(evutil_socket_t fd, short what, void *arg)
{
    rescon_sample(arg);
}

void rescon_set_handler(struct rescon *rc, rescon_handler_fn fn, void *ctx)
{
    rc->handler = fn;
    rc->handler_ctx = ctx;
}

void rescon_start(struct rescon *rc, struct spool *sp, struct config *cfg)
{
    /* Why 1 s: pressures change over seconds (a flood fills a queue in
     * minutes); sampling costs a statvfs and a small /proc read. */
    struct timeval tv = {1, 0};
    struct rescon_params p;
    rc->spool = sp;
    config_ref(cfg);
    config_unref(rc->cfg);
    rc->cfg = cfg;
    rescon_params_from_config(cfg, &p);
    rescon_set_params(rc, &p);
    if (rc->tick == NULL)
        return;
    if (!evtimer_pending(rc->tick, NULL)) {
        event_add(rc->tick, &tv);
        rescon_sample(rc);
    }
}

void rescon_free(struct rescon *rc)
{
    if (rc == NULL)
        return;
    if (rc->tick)
        event_free(rc->tick);
    /* Children still running are left to finish; init reaps them. */
    rescon_reap(rc);
    config_unref(rc->cfg);
    free(rc);
}
