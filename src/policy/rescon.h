/*
 * rescon: resource conservation, the gateway's graded self-protection
 * (gateway-behaviour.md section 2, docs/protection.md).
 *
 * Three pressures, each a percentage: memory (the daemon's resident set
 * against memory_limit), disk (the spool filesystem's used space) and
 * backlog (spooled messages against backlog_limit). Each pressure has a
 * level of its own:
 *
 *   NORMAL --(p >= start)--> TARPIT --(p >= halt)--> HALT
 *
 * and leaves a level only once it is more than `hysteresis` points below
 * the threshold that entered it, so a pressure hovering at a threshold does
 * not make the gateway flap. The gateway's state is the highest level of
 * the three. While tarpitting, every SMTP reply is held back by the delay,
 * which grows linearly from 1 s at the start threshold to 60 s just below
 * halt; halted, new connections and MAIL get 4xx. The backlog also has a
 * suspend/resume pair (resume < suspend: the band is the hysteresis) that
 * stops and restarts accepting connections.
 *
 * The gauge ("Resource Conservation", seed 004) reads 0 when normal, the
 * delay in seconds while tarpitting and 999 when halted.
 *
 * Two halves: rescon_update() is the pure state machine (pressures in,
 * changes out; the unit tests drive it directly); the sampler measures the
 * pressures once a second on the loop, logs every change to mail_logs,
 * runs the alert command and calls the handler (the SMTP server, which
 * suspends its listeners). Loop thread only.
 */
#ifndef POSTERN_POLICY_RESCON_H
#define POSTERN_POLICY_RESCON_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct event_base;
struct spool;
struct rescon;

enum rescon_kind { RESCON_MEMORY, RESCON_DISK, RESCON_BACKLOG, RESCON_KINDS };
enum rescon_state { RESCON_NORMAL, RESCON_TARPIT, RESCON_HALT };

/* The gauge while halted. */
#define RESCON_GAUGE_HALTED 999
/* The longest per-reply delay. Why 60 s: RFC 5321 4.5.3.2 gives clients at
 * least 5 minutes per command, so a minute slows a sender without making it
 * give up (and retry elsewhere or later is what halt is for). */
#define RESCON_MAX_DELAY_S 60

struct rescon_params {
    unsigned start[RESCON_KINDS]; /* percent; 0 < start < halt */
    unsigned halt[RESCON_KINDS];  /* 0: this pressure is off */
    unsigned suspend, resume;     /* backlog percent */
    unsigned hysteresis;          /* points */
};

/* What one sample changed, and the pressure that caused it. */
struct rescon_change {
    bool state;   /* rescon_state() changed */
    bool suspend; /* rescon_suspended() changed */
    enum rescon_kind cause;
    unsigned cause_pct;
};

/* A machine in NORMAL with p's thresholds. base may be NULL (no sampler:
 * unit tests feed rescon_update() themselves). */
struct rescon *rescon_new(struct event_base *base, const struct rescon_params *p);
void rescon_free(struct rescon *rc);
void rescon_set_params(struct rescon *rc, const struct rescon_params *p);
void rescon_params_from_config(const struct config *cfg, struct rescon_params *p);

/* Feed one sample of the three pressures (percent); fills *chg. */
void rescon_update(struct rescon *rc, const unsigned pct[RESCON_KINDS], struct rescon_change *chg);

enum rescon_state rescon_state(const struct rescon *rc);
/* Seconds each reply is held back now (0 unless tarpitting). */
unsigned rescon_delay(const struct rescon *rc);
/* 0, the delay, or RESCON_GAUGE_HALTED. */
int rescon_gauge(const struct rescon *rc);
bool rescon_suspended(const struct rescon *rc);
/* The last sampled pressure of a kind (percent). */
unsigned rescon_pressure(const struct rescon *rc, enum rescon_kind k);
const char *rescon_kind_name(enum rescon_kind k);

/* ---- the sampler ---------------------------------------------------------- */

/* Called after every sample that changed the state or the suspension. */
typedef void (*rescon_handler_fn)(void *ctx, const struct rescon *rc);
void rescon_set_handler(struct rescon *rc, rescon_handler_fn fn, void *ctx);
/* Sample once a second from now on: sp gives the backlog, cfg the limits,
 * the spool directory, the alert command and the test pressure file (the
 * sampler keeps a reference; call again after a reload). */
void rescon_start(struct rescon *rc, struct spool *sp, struct config *cfg);
/* Take one sample now (the timer's work; also for tests). */
void rescon_sample(struct rescon *rc);

#endif
