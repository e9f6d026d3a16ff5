/*
 * test_rescon: the resource conservation state machine (src/policy/rescon.c)
 * and its configuration keys.
 *
 * Table-driven: a sequence of samples (memory, disk, backlog percent) with
 * the state, delay, gauge and suspension each must leave, and which
 * samples must report a change. No sampler, no timers, no files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/config.h"
#include "policy/clients.h"
#include "policy/rescon.h"

#include <stdio.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The documented defaults (memory 75/90, backlog 50/90, suspend 95 /
 * resume 80, hysteresis 5) with disk switched on at 75/90. */
static const struct rescon_params defaults = {
    .start = {75, 75, 50},
    .halt = {90, 90, 90},
    .suspend = 95,
    .resume = 80,
    .hysteresis = 5,
};

struct step {
    unsigned mem, disk, backlog;
    enum rescon_state state;
    unsigned delay;
    int gauge;
    bool suspended;
    bool changed; /* state or suspension changed */
};

static void run_steps(const struct step *steps, size_t n)
{
    struct rescon *rc = rescon_new(NULL, &defaults);
    for (size_t i = 0; i < n; i++) {
        const struct step *t = &steps[i];
        unsigned pct[RESCON_KINDS] = {t->mem, t->disk, t->backlog};
        struct rescon_change chg;
        rescon_update(rc, pct, &chg);
        if (rescon_state(rc) != t->state || rescon_delay(rc) != t->delay ||
            rescon_gauge(rc) != t->gauge || rescon_suspended(rc) != t->suspended ||
            (chg.state || chg.suspend) != t->changed)
            fail_msg("step %zu (%u/%u/%u): state %d delay %u gauge %d suspended %d changed %d; "
                     "want %d %u %d %d %d",
                     i, t->mem, t->disk, t->backlog, rescon_state(rc), rescon_delay(rc),
                     rescon_gauge(rc), rescon_suspended(rc), chg.state || chg.suspend, t->state,
                     t->delay, t->gauge, t->suspended, t->changed);
    }
    rescon_free(rc);
}

static void test_thresholds(void **state)
{
    static const struct step steps[] = {
        {10, 10, 0, RESCON_NORMAL, 0, 0, false, false},
        {74, 10, 0, RESCON_NORMAL, 0, 0, false, false},
        {75, 10, 0, RESCON_TARPIT, 1, 1, false, true}, /* start: 1 s */
        {89, 10, 0, RESCON_TARPIT, 56, 56, false, false},
        {90, 10, 0, RESCON_HALT, 0, RESCON_GAUGE_HALTED, false, true},
        {100, 10, 0, RESCON_HALT, 0, RESCON_GAUGE_HALTED, false, false},
        {10, 10, 0, RESCON_NORMAL, 0, 0, false, true},                 /* far below: straight out */
        {10, 95, 0, RESCON_HALT, 0, RESCON_GAUGE_HALTED, false, true}, /* straight in */
    };
    run_steps(steps, ARRAY_LEN(steps));
}

/* Leaving a state needs the pressure more than 5 points below the
 * threshold that entered it; a pressure hovering at it does not flap. */
static void test_hysteresis(void **state)
{
    static const struct step steps[] = {
        {75, 0, 0, RESCON_TARPIT, 1, 1, false, true},
        {74, 0, 0, RESCON_TARPIT, 1, 1, false, false},
        {75, 0, 0, RESCON_TARPIT, 1, 1, false, false},
        {70, 0, 0, RESCON_TARPIT, 1, 1, false, false}, /* exactly 5 below: stays */
        {69, 0, 0, RESCON_NORMAL, 0, 0, false, true},
        {74, 0, 0, RESCON_NORMAL, 0, 0, false, false},
        {90, 0, 0, RESCON_HALT, 0, RESCON_GAUGE_HALTED, false, true},
        {86, 0, 0, RESCON_HALT, 0, RESCON_GAUGE_HALTED, false, false},
        {85, 0, 0, RESCON_HALT, 0, RESCON_GAUGE_HALTED, false, false},
        {84, 0, 0, RESCON_TARPIT, 36, 36, false, true}, /* 1 + 59*9/15 */
        {89, 0, 0, RESCON_TARPIT, 56, 56, false, false},
    };
    run_steps(steps, ARRAY_LEN(steps));
}

/* 1 s at start, linear, below 60 s before halt, the worst pressure wins. */
static void test_delay_growth(void **state)
{
    struct rescon *rc = rescon_new(NULL, &defaults);
    struct rescon_change chg;
    unsigned prev = 0;
    for (unsigned m = 75; m < 90; m++) {
        unsigned pct[RESCON_KINDS] = {m, 0, 0};
        rescon_update(rc, pct, &chg);
        unsigned d = rescon_delay(rc);
        assert_true(d >= 1 && d < RESCON_MAX_DELAY_S);
        assert_true(d >= prev);
        assert_int_equal(d, 1 + 59 * (m - 75) / 15);
        prev = d;
    }
    /* disk at 80 (delay 20) and backlog at 70 (delay 30): backlog explains it */
    unsigned pct[RESCON_KINDS] = {0, 80, 70};
    rescon_update(rc, pct, &chg);
    assert_int_equal(rescon_delay(rc), 30);
    assert_int_equal(chg.cause, RESCON_BACKLOG);
    assert_int_equal(chg.cause_pct, 70);
    /* one pressure halted: halt wins whatever the others say */
    unsigned halt[RESCON_KINDS] = {0, 91, 70};
    rescon_update(rc, halt, &chg);
    assert_true(chg.state);
    assert_int_equal(rescon_state(rc), RESCON_HALT);
    assert_int_equal(chg.cause, RESCON_DISK);
    assert_int_equal(chg.cause_pct, 91);
    assert_int_equal(rescon_delay(rc), 0);
    rescon_free(rc);
}

/* Backlog: suspend at 95, resume below 80; halt (90) comes first. */
static void test_suspend_resume(void **state)
{
    static const struct step steps[] = {
        {0, 0, 60, RESCON_TARPIT, 15, 15, false, true}, /* 1 + 59*10/40 */
        {0, 0, 94, RESCON_HALT, 0, RESCON_GAUGE_HALTED, false, true},
        {0, 0, 95, RESCON_HALT, 0, RESCON_GAUGE_HALTED, true, true},
        {0, 0, 500, RESCON_HALT, 0, RESCON_GAUGE_HALTED, true, false}, /* over the limit */
        {0, 0, 85, RESCON_HALT, 0, RESCON_GAUGE_HALTED, true, false},
        {0, 0, 80, RESCON_TARPIT, 45, 45, true, true}, /* left halt; still suspended */
        {0, 0, 79, RESCON_TARPIT, 43, 43, false, true},
        {0, 0, 44, RESCON_NORMAL, 0, 0, false, true},
    };
    run_steps(steps, ARRAY_LEN(steps));
}

static struct config *load(const char *yaml, struct config_error *err)
{
    return config_load_buffer("test.yaml", yaml, strlen(yaml), err);
}

static void test_config_keys(void **state)
{
    struct config_error err;
    struct rescon_params p;
    struct config *cfg = load("resource_conservation:\n"
                              "  memory_limit: 2G\n"
                              "  memory_start: 60\n"
                              "  memory_halt: 70\n"
                              "  backlog_suspend: 99\n"
                              "  alert_command: /usr/local/bin/alert\n",
                              &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->rescon.memory_limit, 2ULL << 30);
    assert_string_equal(cfg->rescon.alert_command, "/usr/local/bin/alert");
    assert_null(cfg->rescon.test_pressure_file);
    rescon_params_from_config(cfg, &p);
    assert_int_equal(p.start[RESCON_MEMORY], 60);
    assert_int_equal(p.halt[RESCON_MEMORY], 70);
    assert_int_equal(p.start[RESCON_DISK], 0); /* off unless configured */
    assert_int_equal(p.halt[RESCON_DISK], 0);
    assert_int_equal(p.start[RESCON_BACKLOG], 50);
    assert_int_equal(p.suspend, 99);
    assert_int_equal(p.resume, 80);
    assert_int_equal(p.hysteresis, 5);
    /* the slow-client keys and their defaults */
    assert_int_equal(cfg->limits.min_data_rate, 1000);
    assert_int_equal(cfg->limits.min_data_rate_window, 10000);
    assert_int_equal(cfg->limits.min_data_rate_grace, 30000);
    assert_int_equal(cfg->limits.max_connection_rate, 0);
    assert_int_equal(cfg->timeouts.session, 30 * 60 * 1000);
    config_unref(cfg);
}

static void test_config_refused(void **state)
{
    static const struct {
        const char *yaml, *msg;
    } cases[] = {
        {"resource_conservation:\n  memory_start: 90\n  memory_halt: 80\n",
         "test.yaml:3:16: 'memory_halt' (80) must be above 'memory_start' (90)"},
        {"resource_conservation:\n  disk_start: 95\n",
         "test.yaml:2:15: 'disk_halt' (0) must be above 'disk_start' (95)"},
        {"resource_conservation:\n  memory_start: 0\n",
         "test.yaml:2:17: 'memory_start' may be 0 only with 'memory_halt' 0 (off)"},
        {"resource_conservation:\n  backlog_resume: 96\n",
         "test.yaml:2:19: 'backlog_suspend' (95) must be above 'backlog_resume' (96)"},
        {"resource_conservation:\n  alert_command: alert.sh\n",
         "test.yaml:2:18: 'alert_command': invalid value 'alert.sh': must be an absolute path"},
        {"resource_conservation:\n  memory_halt: 0\n", NULL},
        {"limits:\n  min_data_rate_window: 0s\n", NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct config_error err;
        char msg[400];
        struct config *cfg = load(cases[i].yaml, &err);
        if (cfg != NULL)
            fail_msg("case %zu loaded", i);
        config_error_format(&err, "test.yaml", msg, sizeof(msg));
        if (cases[i].msg != NULL && strcmp(msg, cases[i].msg) != 0)
            fail_msg("case %zu: got '%s', want '%s'", i, msg, cases[i].msg);
    }
}

/* A start/halt pair of 0/0 switches a pressure off (disk by default). */
static void test_pressure_off(void **state)
{
    struct rescon_params p = defaults;
    struct rescon_change chg;
    p.start[RESCON_DISK] = p.halt[RESCON_DISK] = 0;
    struct rescon *rc = rescon_new(NULL, &p);
    unsigned full[RESCON_KINDS] = {0, 100, 0};
    rescon_update(rc, full, &chg);
    assert_false(chg.state);
    assert_int_equal(rescon_gauge(rc), 0);
    assert_int_equal(rescon_pressure(rc, RESCON_DISK), 100);
    rescon_free(rc);
}

/* The per-IP, per-minute connection counter behind max_connection_rate. */
static void test_connection_rate(void **state)
{
    struct clients *c = clients_new();
    assert_int_equal(clients_conn_add(c, "192.0.2.1", 600), 1);
    assert_int_equal(clients_conn_add(c, "192.0.2.1", 630), 2);
    assert_int_equal(clients_conn_add(c, "192.0.2.2", 630), 1);
    assert_int_equal(clients_conn_add(c, "192.0.2.1", 659), 3);
    /* a new minute starts a new count */
    assert_int_equal(clients_conn_add(c, "192.0.2.1", 660), 1);
    /* kept while its minute runs, dropped once idle */
    assert_int_equal(clients_expire(c, 670), 2);
    assert_int_equal(clients_expire(c, 660 + 3600 * 2), 0);
    clients_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thresholds),      cmocka_unit_test(test_hysteresis),
        cmocka_unit_test(test_delay_growth),    cmocka_unit_test(test_suspend_resume),
        cmocka_unit_test(test_config_keys),     cmocka_unit_test(test_config_refused),
        cmocka_unit_test(test_connection_rate), cmocka_unit_test(test_pressure_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
