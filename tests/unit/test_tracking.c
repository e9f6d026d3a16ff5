/*
 * Unit tests for tracking: parsing of mail_logs lines into indexed fields,
 * batched writes (every tapped event stored or counted as dropped), the
 * log tap, a query through the worker, and the retention purge by age and
 * by size with small limits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "tracking/tracking.h"

struct fixture {
    char dir[64];
    char path[128];
    struct event_base *base;
    struct tracking *t;
};

static struct fixture *fx_open(uint64_t max_age_ms, uint64_t max_size, size_t max_queue)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    snprintf(f->dir, sizeof(f->dir), "/tmp/trk-unit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/tracking.db", f->dir);
    f->base = event_base_new();
    struct tracking_params p = {
        .path = f->path, .max_age_ms = max_age_ms, .max_size = max_size, .max_queue = max_queue};
    f->t = tracking_open(f->base, &p, err, sizeof(err));
    if (f->t == NULL)
        fail_msg("tracking_open: %s", err);
    return f;
}

static void fx_close(struct fixture *f)
{
    char cmd[128];
    tracking_close(f->t);
    event_base_free(f->base);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
}

static int64_t count(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t n = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void tap(struct fixture *f, const char *line)
{
    tracking_tap(f->t, line, strlen(line));
}

static void test_parse(void **state)
{
    struct trk_fields f;
    static const char *const l1 = "Info: New SMTP ICID 7 interface In (10.0.0.1) address "
                                  "192.0.2.5 reverse dns host unknown verified no";
    assert_int_equal(tracking_parse(l1, strlen(l1), &f), TRK_NEW_ICID);
    assert_true(f.icid == 7 && f.mid == 0);
    assert_string_equal(f.value, "192.0.2.5");

    const char *l2 = "Info: Start MID 12 ICID 7";
    assert_int_equal(tracking_parse(l2, strlen(l2), &f), TRK_START_MID);
    assert_true(f.mid == 12 && f.icid == 7);

    const char *l3 = "Info: MID 12 ICID 7 From: <Ann@Example.ORG>";
    assert_int_equal(tracking_parse(l3, strlen(l3), &f), TRK_FROM);
    assert_string_equal(f.value, "ann@example.org");

    const char *l4 = "Info: MID 12 ICID 7 RID 0 To: <bob@example.com>";
    assert_int_equal(tracking_parse(l4, strlen(l4), &f), TRK_RCPT);
    assert_string_equal(f.value, "bob@example.com");

    const char *l5 = "Info: MID 12 ICID 7 To: <x@example.com> Rejected by RAT (no relay)";
    assert_int_equal(tracking_parse(l5, strlen(l5), &f), TRK_OTHER);
    assert_true(f.mid == 12);

    const char *l6 = "Info: MID 12 Message-ID '<a.b@c>'";
    assert_int_equal(tracking_parse(l6, strlen(l6), &f), TRK_MESSAGE_ID);
    assert_string_equal(f.value, "<a.b@c>");

    const char *l7 = "Info: MID 12 Subject 'It\\'s here'";
    assert_int_equal(tracking_parse(l7, strlen(l7), &f), TRK_SUBJECT);
    assert_string_equal(f.value, "It\\'s here");

    const char *l8 = "Info: Delivery start DCID 3 MID 12 to RID [0]";
    assert_int_equal(tracking_parse(l8, strlen(l8), &f), TRK_OTHER);
    assert_true(f.mid == 12 && f.dcid == 3 && f.icid == 0);

    /* IDs are whole words: "CrtMID 5" in a status line names no message */
    const char *l9 = "Info: Status: CrtMID 5 CrtICID 9";
    tracking_parse(l9, strlen(l9), &f);
    assert_true(f.mid == 0 && f.icid == 0);
}

static void feed_message(struct fixture *f, int mid, int icid)
{
    char line[256];
    snprintf(line, sizeof(line),
             "Info: New SMTP ICID %d interface In (10.0.0.1) address 192.0.2.%d reverse dns "
             "host unknown verified no",
             icid, icid % 250);
    tap(f, line);
    snprintf(line, sizeof(line), "Info: Start MID %d ICID %d", mid, icid);
    tap(f, line);
    snprintf(line, sizeof(line), "Info: MID %d ICID %d From: <s%d@example.org>", mid, icid, mid);
    tap(f, line);
    snprintf(line, sizeof(line), "Info: MID %d ICID %d RID 0 To: <r%d@example.com>", mid, icid,
             mid);
    tap(f, line);
    snprintf(line, sizeof(line), "Info: MID %d queued for delivery", mid);
    tap(f, line);
}

static void test_batch_and_index(void **state)
{
    struct fixture *f = fx_open(0, 0, 0);
    for (int i = 1; i <= 200; i++)
        feed_message(f, i, 1000 + i);
    tracking_sync(f->t);
    assert_int_equal(tracking_dropped(f->t), 0);
    assert_int_equal(count(f->path, "SELECT count(*) FROM events"), 1000);
    assert_int_equal(count(f->path, "SELECT count(*) FROM messages"), 200);
    assert_int_equal(count(f->path, "SELECT count(*) FROM rcpts WHERE addr = 'r7@example.com'"), 1);
    assert_int_equal(count(f->path, "SELECT count(*) FROM messages WHERE mid = 7 AND "
                                    "sender = 's7@example.org' AND client_ip = '192.0.2.7'"),
                     1);
    fx_close(f);
}

static void test_bounded_queue(void **state)
{
    /* a queue of 4: whatever the worker's pace, every event is either
     * stored or counted as dropped, and the loop never waits */
    struct fixture *f = fx_open(0, 0, 4);
    for (int i = 0; i < 2000; i++)
        tap(f, "Info: MID 1 queued for delivery");
    tracking_sync(f->t);
    int64_t stored = count(f->path, "SELECT count(*) FROM events");
    assert_int_equal((uint64_t)stored + tracking_dropped(f->t), 2000);
    fx_close(f);
}

static void test_log_tap(void **state)
{
    struct fixture *f = fx_open(0, 0, 0);
    maillog_set_tap(tracking_tap, f->t);
    maillog(LOG_INFO, "MID %d Subject '%s'", 42, "hello tap");
    maillog_set_tap(NULL, NULL);
    maillog(LOG_INFO, "MID 43 not tapped");
    tracking_sync(f->t);
    assert_int_equal(count(f->path, "SELECT count(*) FROM events WHERE mid = 42 AND "
                                    "text = 'Info: MID 42 Subject ''hello tap'''"),
                     1);
    assert_int_equal(count(f->path, "SELECT count(*) FROM messages WHERE subject = 'hello tap'"),
                     1);
    assert_int_equal(count(f->path, "SELECT count(*) FROM events WHERE mid = 43"), 0);
    fx_close(f);
}

struct answer {
    int calls;
    json_t *result;
};

static void on_answer(void *arg, json_t *result, const char *err)
{
    struct answer *a = arg;
    a->calls++;
    a->result = result;
    if (err)
        fail_msg("query: %s", err);
}

static void test_query(void **state)
{
    struct fixture *f = fx_open(0, 0, 0);
    feed_message(f, 5, 50);
    feed_message(f, 6, 50);
    tap(f, "Info: ICID 50 close");
    struct answer a = {0};
    struct trk_query_params p = {.key = TRK_BY_IP, .value = "192.0.2.50"};
    tracking_query(f->t, &p, on_answer, &a);
    while (a.calls == 0)
        event_base_loop(f->base, EVLOOP_ONCE);
    json_t *msgs = json_object_get(a.result, "messages");
    assert_int_equal(json_array_size(msgs), 2);
    json_t *m = json_array_get(msgs, 0);
    assert_int_equal(json_integer_value(json_object_get(m, "mid")), 6);
    /* its own 4 lines, plus the connection's 3 (feed_message logged New
     * SMTP ICID 50 twice, and the close) */
    assert_int_equal(json_array_size(json_object_get(m, "events")), 7);
    json_decref(a.result);

    /* a cancelled query never calls back */
    struct answer b = {0};
    p.key = TRK_BY_SENDER;
    p.value = "S5@example.org";
    tracking_query_cancel(tracking_query(f->t, &p, on_answer, &b));
    tracking_sync(f->t);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(b.calls, 0);
    fx_close(f);
}

static void test_purge_by_age(void **state)
{
    struct fixture *f = fx_open(60 * 1000, 0, 0);
    feed_message(f, 1, 10);
    tracking_sync(f->t);
    tracking_purge_at(f->t, (int64_t)time(NULL) * 1000 + 30 * 1000);
    assert_int_equal(count(f->path, "SELECT count(*) FROM messages"), 1);
    tracking_purge_at(f->t, (int64_t)time(NULL) * 1000 + 120 * 1000);
    assert_int_equal(count(f->path, "SELECT count(*) FROM messages"), 0);
    assert_int_equal(count(f->path, "SELECT count(*) FROM events"), 0);
    assert_int_equal(count(f->path, "SELECT count(*) FROM rcpts"), 0);
    assert_int_equal(count(f->path, "SELECT count(*) FROM conns"), 0);
    fx_close(f);
}

static void test_purge_by_size(void **state)
{
    const uint64_t limit = 256 * 1024;
    struct fixture *f = fx_open(0, limit, 0);
    char line[512];
    /* each batch is older than the next: sync between them */
    for (int b = 0; b < 20; b++) {
        for (int i = 0; i < 100; i++) {
            int mid = b * 100 + i + 1;
            snprintf(line, sizeof(line), "Info: MID %d Subject '%0300d'", mid, mid);
            tap(f, line);
        }
        tracking_sync(f->t);
        usleep(2000);
    }
    int64_t pages = count(f->path, "SELECT page_count FROM pragma_page_count()");
    assert_true(pages * 4096 > (int64_t)limit);
    tracking_purge_at(f->t, (int64_t)time(NULL) * 1000);
    int64_t used = count(f->path, "SELECT (SELECT page_count FROM pragma_page_count()) - "
                                  "(SELECT freelist_count FROM pragma_freelist_count())");
    int64_t psize = count(f->path, "SELECT page_size FROM pragma_page_size()");
    assert_true((uint64_t)(used * psize) <= limit);
    /* oldest first: the newest message is kept, the first one is gone */
    assert_int_equal(count(f->path, "SELECT count(*) FROM messages WHERE mid = 2000"), 1);
    assert_int_equal(count(f->path, "SELECT count(*) FROM messages WHERE mid = 1"), 0);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),         cmocka_unit_test(test_batch_and_index),
        cmocka_unit_test(test_bounded_queue), cmocka_unit_test(test_log_tap),
        cmocka_unit_test(test_query),         cmocka_unit_test(test_purge_by_age),
        cmocka_unit_test(test_purge_by_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
