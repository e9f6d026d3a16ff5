/*
 * tracking: tracking.db, fed from the mail_logs tap (see tracking.h and
 * docs/tracking.md).
 *
 * Thread ownership
 *   Loop thread: tracking_tap(), tracking_query(), the eventfd's event and
 *   the completion callbacks, the drop counters.
 *   Worker thread (one, started at the end of tracking_open, joined in
 *   tracking_close): both sqlite3 connections (db writes, rdb answers
 *   queries) and their statements, and every queued event or query from
 *   the moment it is taken off the shared lists.
 *   Shared, under t->mu: the event queue, the query queue, the done list,
 *   the worker's error message, the sync/purge requests.
 *   The worker never calls maillog(): it is not thread-safe, and a line
 *   logged from the worker would come back to it through the tap. Errors
 *   are handed to the loop, which logs them (at most one a minute).
 *
 * Invariants
 *   - The loop thread never waits for the worker outside tracking_sync()/
 *     tracking_purge_at() (tests) and tracking_close().
 *   - q_len counts the events on the shared queue; it never exceeds
 *     max_queue (the excess is dropped and counted in `dropped`).
 *   - A query is freed on the loop thread only, once done (or at close).
 */
#include "tracking/tracking.h"

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Why 100000: about ten seconds of a very busy gateway's log lines (some
 * 20 per message) and some 20 MB of memory at worst; if the worker is that
 * far behind, the disk is the problem and dropping tracking events is
 * better than growing without bound or slowing the loop. */
#define TRK_QUEUE_DEFAULT 100000
/* Why once a minute: often enough that an operator sees it, rarely enough
 * that a stuck disk does not flood mail_logs. */
#define TRK_WARN_INTERVAL_MS 60000
/* Retention runs this often; a purge is a few indexed DELETEs. */
#define TRK_PURGE_INTERVAL_MS 60000
/* Why 100 messages and 1000 events each: an answer an operator can read
 * and one JSON line of a few MB at most, whatever the search matched. */
#define TRK_QUERY_DEFAULT_LIMIT 100
#define TRK_QUERY_MAX_LIMIT     1000
#define TRK_EVENTS_PER_MSG      1000
/* A size purge removes about this fraction (1/N) of the events per round,
 * oldest first, and stops after TRK_PURGE_ROUNDS rounds per run. */
#define TRK_PURGE_FRACTION 8
#define TRK_PURGE_ROUNDS   32

struct trk_event {
    struct trk_event *next;
    int64_t ts_ms;
    size_t len;
    char text[];
};

struct trk_query {
    struct trk_query *next;
    struct trk_query_params p;
    char *value;
    trk_query_cb cb; /* NULL once cancelled (loop thread only) */
    void *arg;
    json_t *result;
    char err[256];
};

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_INS_EVENT,
    ST_UPSERT_MSG,
    ST_SET_SENDER,
    ST_SET_MSGID,
    ST_SET_SUBJECT,
    ST_SET_IP,
    ST_INS_CONN,
    ST_INS_RCPT,
    ST__COUNT
};

struct tracking {
    struct event_base *base;
    char *path;
    uint64_t max_age_ms, max_size;
    size_t max_queue;

    /* worker only */
    sqlite3 *db, *rdb;
    sqlite3_stmt *st[ST__COUNT];
    int64_t next_purge_ms;

    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_t worker;
    bool worker_running;
    /* shared, under mu */
    struct trk_event *q_head, **q_tail;
    size_t q_len;
    struct trk_query *qq_head, **qq_tail; /* waiting for the worker */
    struct trk_query *d_head, **d_tail;   /* answered, for the loop */
    char werr[256];                       /* worker error to log; "" = none */
    uint64_t sync_req, sync_done;
    uint64_t purge_req, purge_done;
    int64_t purge_now_ms;
    bool stop;

    /* loop only */
    uint64_t dropped, dropped_unlogged;
    int64_t last_drop_warn_ms, last_err_log_ms;
    int efd;
    struct event *ev;
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INS_EVENT] = "INSERT INTO events(ts_ms, mid, icid, dcid, text) VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_UPSERT_MSG] = ("INSERT INTO messages(mid, icid, first_ts, last_ts) VALUES(?1, ?2, ?3, ?3)"
                       " ON CONFLICT(mid) DO UPDATE SET last_ts = max(last_ts, excluded.last_ts),"
                       " icid = coalesce(icid, excluded.icid)"),
    [ST_SET_SENDER] = "UPDATE messages SET sender = ?2 WHERE mid = ?1",
    [ST_SET_MSGID] = "UPDATE messages SET message_id = ?2 WHERE mid = ?1",
    [ST_SET_SUBJECT] = "UPDATE messages SET subject = ?2 WHERE mid = ?1",
    [ST_SET_IP] = ("UPDATE messages SET client_ip = (SELECT ip FROM conns WHERE icid = ?2)"
                   " WHERE mid = ?1"),
    [ST_INS_CONN] = "INSERT OR REPLACE INTO conns(icid, ip, ts_ms) VALUES(?1, ?2, ?3)",
    [ST_INS_RCPT] = "INSERT INTO rcpts(mid, addr) VALUES(?1, ?2)",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
    " mid INTEGER, icid INTEGER, dcid INTEGER, text TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_mid ON events(mid);"
    "CREATE INDEX IF NOT EXISTS events_icid ON events(icid);"
    "CREATE INDEX IF NOT EXISTS events_dcid ON events(dcid);"
    "CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms);"
    "CREATE TABLE IF NOT EXISTS messages(mid INTEGER PRIMARY KEY, icid INTEGER,"
    " first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL, sender TEXT, message_id TEXT,"
    " subject TEXT, client_ip TEXT);"
    "CREATE INDEX IF NOT EXISTS messages_sender ON messages(sender);"
    "CREATE INDEX IF NOT EXISTS messages_message_id ON messages(message_id);"
    "CREATE INDEX IF NOT EXISTS messages_ip ON messages(client_ip);"
    "CREATE INDEX IF NOT EXISTS messages_first ON messages(first_ts);"
    "CREATE INDEX IF NOT EXISTS messages_last ON messages(last_ts);"
    "CREATE TABLE IF NOT EXISTS rcpts(mid INTEGER NOT NULL, addr TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS rcpts_addr ON rcpts(addr);"
    "CREATE INDEX IF NOT EXISTS rcpts_mid ON rcpts(mid);"
    "CREATE TABLE IF NOT EXISTS conns(icid INTEGER PRIMARY KEY, ip TEXT, ts_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS conns_ts ON conns(ts_ms);"
    "PRAGMA user_version = 1;";

static int64_t trk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- parsing ---------------------------------------------------------- */

/* The number after the first " KEY " (or KEY at the start), 0 if none. */
static uint64_t parse_id(const char *s, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = s; (p = strstr(p, key)) != NULL; p += kl) {
        if ((p != s && p[-1] != ' ') || p[kl] != ' ' || !isdigit((unsigned char)p[kl + 1]))
            continue;
        return strtoull(p + kl + 1, NULL, 10);
    }
    return 0;
}

/* Copy what follows `open` up to `close` into f->value (lower-cased if
 * asked); false when the delimiters are not there. */
static bool parse_delimited(const char *s, const char *open, char close, bool lower,
                            struct trk_fields *f)
{
    const char *p = strstr(s, open);
    if (p == NULL)
        return false;
    p += strlen(open);
    const char *e = close == '\'' ? strrchr(p, '\'') : strchr(p, close);
    if (e == NULL || e < p)
        return false;
    size_t n = (size_t)(e - p);
    if (n >= sizeof(f->value))
        n = sizeof(f->value) - 1;
    for (size_t i = 0; i < n; i++)
        f->value[i] = lower ? (char)tolower((unsigned char)p[i]) : p[i];
    f->value[n] = '\0';
    return true;
}

static enum trk_kind parse_kind(const char *s, struct trk_fields *f)
{
    if (strncmp(s, "New SMTP ICID ", 14) == 0 && parse_delimited(s, " address ", ' ', true, f))
        return TRK_NEW_ICID;
    if (strncmp(s, "Start MID ", 10) == 0)
        return TRK_START_MID;
    if (strncmp(s, "MID ", 4) != 0)
        return TRK_OTHER;
    if (strstr(s, " From: <") && parse_delimited(s, " From: <", '>', true, f))
        return TRK_FROM;
    /* only accepted recipients get a RID; "To: <x> Rejected ..." has none */
    if (strstr(s, " RID ") && parse_delimited(s, " To: <", '>', true, f))
        return TRK_RCPT;
    const char *sp = strchr(s + 4, ' ');
    if (sp && strncmp(sp, " Message-ID '", 13) == 0 &&
        parse_delimited(sp, " Message-ID '", '\'', false, f))
        return TRK_MESSAGE_ID;
    if (sp && strncmp(sp, " Subject '", 10) == 0 &&
        parse_delimited(sp, " Subject '", '\'', false, f))
        return TRK_SUBJECT;
    return TRK_OTHER;
}

enum trk_kind tracking_parse(const char *line, size_t len, struct trk_fields *f)
{
    char buf[8192];
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, line, len);
    buf[len] = '\0';
    memset(f, 0, sizeof(*f));
    const char *s = buf;
    /* skip "Info: " and the like */
    const char *colon = strstr(s, ": ");
    if (colon && colon - s <= 8 && strchr(s, ' ') > colon)
        s = colon + 2;
    f->mid = parse_id(s, "MID");
    f->icid = parse_id(s, "ICID");
    f->dcid = parse_id(s, "DCID");
    f->kind = parse_kind(s, f);
    if (f->kind == TRK_OTHER)
        f->value[0] = '\0';
    return f->kind;
}

/* ---- worker: database ------------------------------------------------- */

static void trk_set_err(char *err, size_t errlen, const char *what, sqlite3 *db)
{
    snprintf(err, errlen, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

static int trk_db_open(struct tracking *t, char *err, size_t errlen)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(t->path, &t->db, flags, NULL) != SQLITE_OK) {
        trk_set_err(err, errlen, t->path, t->db);
        return -1;
    }
    sqlite3_busy_timeout(t->db, 5000);
    /* WAL so queries (rdb) never block the writer. synchronous=NORMAL: a
     * COMMIT does not wait for an fsync; a power loss may lose the last
     * batches of events, which mail_logs still has. Tracking is not on the
     * 250 path, and the spool's fsyncs are the ones that matter. */
    if (sqlite3_exec(t->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                     NULL) != SQLITE_OK ||
        sqlite3_exec(t->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK) {
        trk_set_err(err, errlen, t->path, t->db);
        return -1;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        if (sqlite3_prepare_v2(t->db, stmt_sql[i], -1, &t->st[i], NULL) != SQLITE_OK) {
            trk_set_err(err, errlen, "prepare", t->db);
            return -1;
        }
    }
    if (sqlite3_open_v2(t->path, &t->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        trk_set_err(err, errlen, t->path, t->rdb);
        return -1;
    }
    sqlite3_busy_timeout(t->rdb, 5000);
    return 0;
}

static void bind_id(sqlite3_stmt *st, int i, uint64_t v)
{
    if (v == 0)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}

/* Run a statement with up to three bindings (ids, then a text). */
static int run2(struct tracking *t, int which, uint64_t a, uint64_t b, const char *text)
{
    sqlite3_stmt *st = t->st[which];
    bind_id(st, 1, a);
    if (text)
        sqlite3_bind_text(st, 2, text, -1, SQLITE_TRANSIENT);
    else
        bind_id(st, 2, b);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int store_index(struct tracking *t, const struct trk_event *e, const struct trk_fields *f)
{
    sqlite3_stmt *st;
    int rc = 0;
    if (f->kind == TRK_NEW_ICID && f->icid) {
        st = t->st[ST_INS_CONN];
        sqlite3_bind_int64(st, 1, (sqlite3_int64)f->icid);
        sqlite3_bind_text(st, 2, f->value, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, e->ts_ms);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
        sqlite3_reset(st);
    }
    if (f->mid == 0)
        return rc;
    st = t->st[ST_UPSERT_MSG];
    bind_id(st, 1, f->mid);
    bind_id(st, 2, f->icid);
    sqlite3_bind_int64(st, 3, e->ts_ms);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = -1;
    sqlite3_reset(st);
    switch (f->kind) {
    case TRK_START_MID:
        return rc | run2(t, ST_SET_IP, f->mid, f->icid, NULL);
    case TRK_FROM:
        return rc | run2(t, ST_SET_SENDER, f->mid, 0, f->value);
    case TRK_RCPT:
        return rc | run2(t, ST_INS_RCPT, f->mid, 0, f->value);
    case TRK_MESSAGE_ID:
        return rc | run2(t, ST_SET_MSGID, f->mid, 0, f->value);
    case TRK_SUBJECT:
        return rc | run2(t, ST_SET_SUBJECT, f->mid, 0, f->value);
    default:
        return rc;
    }
}

static int store_event(struct tracking *t, const struct trk_event *e)
{
    struct trk_fields f;
    tracking_parse(e->text, e->len, &f);
    sqlite3_stmt *st = t->st[ST_INS_EVENT];
    sqlite3_bind_int64(st, 1, e->ts_ms);
    bind_id(st, 2, f.mid);
    bind_id(st, 3, f.icid);
    bind_id(st, 4, f.dcid);
    sqlite3_bind_text(st, 5, e->text, (int)e->len, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc < 0 ? rc : store_index(t, e, &f);
}

static void worker_error(struct tracking *t, const char *what)
{
    pthread_mutex_lock(&t->mu);
    snprintf(t->werr, sizeof(t->werr), "%s: %s", what, sqlite3_errmsg(t->db));
    pthread_mutex_unlock(&t->mu);
    uint64_t one = 1;
    if (write(t->efd, &one, sizeof(one)) < 0) {
        /* the counter cannot overflow in practice; nothing else to do */
    }
}

static bool step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE;
}

/* One transaction for the whole batch; frees the events. */
static void store_batch(struct tracking *t, struct trk_event *batch)
{
    bool ok = step_done(t->st[ST_BEGIN]);
    for (struct trk_event *e = batch; e && ok; e = e->next)
        ok = store_event(t, e) == 0;
    if (ok && !step_done(t->st[ST_COMMIT]))
        ok = false;
    if (!ok) {
        worker_error(t, "storing events");
        if (!sqlite3_get_autocommit(t->db))
            step_done(t->st[ST_ROLLBACK]);
    }
    while (batch) {
        struct trk_event *e = batch;
        batch = e->next;
        free(e);
    }
}

/* ---- worker: retention ------------------------------------------------ */

static int64_t query_int(sqlite3 *db, const char *sql, int64_t arg)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, arg);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Delete everything last seen before cutoff, in one transaction. */
static int purge_before(struct tracking *t, int64_t cutoff)
{
    static const char *const sql[] = {
        "DELETE FROM rcpts WHERE mid IN (SELECT mid FROM messages WHERE last_ts < ?1)",
        "DELETE FROM messages WHERE last_ts < ?1",
        "DELETE FROM events WHERE ts_ms < ?1",
        "DELETE FROM conns WHERE ts_ms < ?1",
    };
    if (!step_done(t->st[ST_BEGIN]))
        return -1;
    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(t->db, sql[i], -1, &st, NULL) != SQLITE_OK) {
            step_done(t->st[ST_ROLLBACK]);
            return -1;
        }
        sqlite3_bind_int64(st, 1, cutoff);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            step_done(t->st[ST_ROLLBACK]);
            return -1;
        }
    }
    return step_done(t->st[ST_COMMIT]) ? 0 : -1;
}

/* Bytes in use: pages minus free pages (a DELETE frees pages for reuse,
 * it does not shrink the file; the limit is on what the data takes). */
static int64_t used_bytes(struct tracking *t)
{
    int64_t pages = query_int(t->db, "SELECT ?1 + page_count FROM pragma_page_count()", 0);
    int64_t freep = query_int(t->db, "SELECT ?1 + freelist_count FROM pragma_freelist_count()", 0);
    int64_t psize = query_int(t->db, "SELECT ?1 + page_size FROM pragma_page_size()", 0);
    if (pages < 0 || freep < 0 || psize < 0)
        return -1;
    return (pages - freep) * psize;
}

/* Oldest first until the data fits in max_size: each round removes about
 * 1/TRK_PURGE_FRACTION of the events (and the messages last seen then). */
static int purge_size(struct tracking *t)
{
    for (int round = 0; round < TRK_PURGE_ROUNDS; round++) {
        int64_t used = used_bytes(t);
        if (used < 0)
            return -1;
        if ((uint64_t)used <= t->max_size)
            return 0;
        int64_t n = query_int(t->db, "SELECT count(*) + ?1 FROM events", 0);
        if (n <= 0)
            return 0;
        int64_t skip = n / TRK_PURGE_FRACTION;
        int64_t cutoff = query_int(t->db,
                                   "SELECT ts_ms + 1 FROM events ORDER BY ts_ms LIMIT 1 "
                                   "OFFSET ?1",
                                   skip);
        if (cutoff < 0 || purge_before(t, cutoff) < 0)
            return -1;
    }
    return 0;
}

static void purge(struct tracking *t, int64_t now_ms)
{
    if (t->max_age_ms && now_ms > (int64_t)t->max_age_ms &&
        purge_before(t, now_ms - (int64_t)t->max_age_ms) < 0)
        worker_error(t, "purging by age");
    if (t->max_size && purge_size(t) < 0)
        worker_error(t, "purging by size");
    /* hand the freed WAL back: a checkpoint keeps the -wal file small */
    sqlite3_wal_checkpoint_v2(t->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

/* ---- worker: queries -------------------------------------------------- */

static const char *const key_where[] = {
    [TRK_BY_MID] = "mid = ?1",
    [TRK_BY_MESSAGE_ID] = "(message_id = ?1 OR message_id = '<' || ?1 || '>')",
    [TRK_BY_SENDER] = "sender = lower(?1)",
    [TRK_BY_RCPT] = "mid IN (SELECT mid FROM rcpts WHERE addr = lower(?1))",
    /* not indexed: a scan of messages, bounded by retention */
    [TRK_BY_SUBJECT] = "subject LIKE '%' || ?1 || '%' ESCAPE '\\'",
    [TRK_BY_IP] = "client_ip = ?1",
};

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? (const char *)s : "";
}

static json_t *json_time(int64_t ms)
{
    char buf[64];
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&sec, &tm);
    strftime(buf, sizeof(buf), "%a %b %e %H:%M:%S %Y", &tm);
    return json_string(buf);
}

static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    return j ? j : json_string("(not UTF-8)");
}

/* The events of one message: its own, its connection's (ICID lines with no
 * MID) and its deliveries' (DCID lines with no MID), in time order. */
static int load_events(struct tracking *t, uint64_t mid, uint64_t icid, json_t *out)
{
    static const char sql[] =
        "SELECT id, ts_ms, text FROM events WHERE mid = ?1"
        " UNION SELECT id, ts_ms, text FROM events WHERE mid IS NULL AND icid = ?2"
        " UNION SELECT id, ts_ms, text FROM events WHERE mid IS NULL AND dcid IN"
        "  (SELECT dcid FROM events WHERE mid = ?1 AND dcid IS NOT NULL)"
        " ORDER BY ts_ms, id LIMIT ?3";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(t->rdb, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)mid);
    bind_id(st, 2, icid);
    sqlite3_bind_int(st, 3, TRK_EVENTS_PER_MSG);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t ts = sqlite3_column_int64(st, 1);
        json_array_append_new(out, json_pack("{s:I, s:o, s:o}", "ts_ms", (json_int_t)ts, "time",
                                             json_time(ts), "text", json_text(col_text(st, 2))));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int load_rcpts(struct tracking *t, uint64_t mid, json_t *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(t->rdb, "SELECT addr FROM rcpts WHERE mid = ?1 ORDER BY rowid", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)mid);
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(out, json_text(col_text(st, 0)));
    sqlite3_finalize(st);
    return 0;
}

static json_t *opt_text(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null() : json_text(col_text(st, i));
}

/* One row of the message SELECT as its JSON object, with events. */
static json_t *message_json(struct tracking *t, sqlite3_stmt *st)
{
    uint64_t mid = (uint64_t)sqlite3_column_int64(st, 0);
    uint64_t icid = (uint64_t)sqlite3_column_int64(st, 1);
    json_t *rcpts = json_array(), *events = json_array();
    json_t *m = json_pack("{s:I, s:I, s:o, s:o, s:o, s:o, s:I, s:I}", "mid", (json_int_t)mid,
                          "icid", (json_int_t)icid, "client_ip", opt_text(st, 7), "sender",
                          opt_text(st, 4), "message_id", opt_text(st, 5), "subject",
                          opt_text(st, 6), "first_ms", (json_int_t)sqlite3_column_int64(st, 2),
                          "last_ms", (json_int_t)sqlite3_column_int64(st, 3));
    if (load_rcpts(t, mid, rcpts) < 0 || load_events(t, mid, icid, events) < 0) {
        json_decref(rcpts);
        json_decref(events);
        json_decref(m);
        return NULL;
    }
    json_object_set_new(m, "recipients", rcpts);
    json_object_set_new(m, "events", events);
    return m;
}

static void run_query(struct tracking *t, struct trk_query *q)
{
    char sql[512];
    sqlite3_stmt *st;
    size_t limit = q->p.limit ? q->p.limit : TRK_QUERY_DEFAULT_LIMIT;
    if (limit > TRK_QUERY_MAX_LIMIT)
        limit = TRK_QUERY_MAX_LIMIT;
    snprintf(sql, sizeof(sql),
             "SELECT mid, icid, first_ts, last_ts, sender, message_id, subject, client_ip"
             " FROM messages WHERE %s AND last_ts >= ?2 AND first_ts <= ?3"
             " ORDER BY first_ts DESC, mid DESC LIMIT ?4",
             key_where[q->p.key]);
    if (sqlite3_prepare_v2(t->rdb, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(q->err, sizeof(q->err), "tracking query: %s", sqlite3_errmsg(t->rdb));
        return;
    }
    sqlite3_bind_text(st, 1, q->value, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, q->p.since_ms);
    sqlite3_bind_int64(st, 3, q->p.until_ms ? q->p.until_ms : INT64_MAX);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)limit + 1);
    json_t *msgs = json_array();
    bool truncated = false;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (json_array_size(msgs) == limit) {
            truncated = true;
            break;
        }
        json_t *m = message_json(t, st);
        if (m == NULL) {
            rc = SQLITE_ERROR;
            break;
        }
        json_array_append_new(msgs, m);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        snprintf(q->err, sizeof(q->err), "tracking query: %s", sqlite3_errmsg(t->rdb));
        json_decref(msgs);
        return;
    }
    q->result = json_pack("{s:o, s:b}", "messages", msgs, "truncated", truncated);
}

/* ---- worker loop ------------------------------------------------------ */

static bool worker_has_work(const struct tracking *t)
{
    return t->q_head || t->qq_head || t->sync_req != t->sync_done || t->purge_req != t->purge_done;
}

static void worker_wait(struct tracking *t)
{
    struct timespec ts = {.tv_sec = (time_t)(t->next_purge_ms / 1000),
                          .tv_nsec = (long)(t->next_purge_ms % 1000) * 1000000};
    while (!worker_has_work(t) && !t->stop && trk_now_ms() < t->next_purge_ms)
        pthread_cond_timedwait(&t->work_cv, &t->mu, &ts);
}

/* Answer the queries and post them to the loop. */
static void worker_queries(struct tracking *t, struct trk_query *qs)
{
    if (qs == NULL)
        return;
    struct trk_query *q = qs, *last = NULL;
    for (; q; q = q->next) {
        run_query(t, q);
        last = q;
    }
    pthread_mutex_lock(&t->mu);
    *t->d_tail = qs;
    t->d_tail = &last->next;
    pthread_mutex_unlock(&t->mu);
    uint64_t one = 1;
    if (write(t->efd, &one, sizeof(one)) < 0) {
        /* cannot fail short of a closed fd */
    }
}

static void *tracking_worker(void *arg)
{
    struct tracking *t = arg;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        worker_wait(t);
        struct trk_event *batch = t->q_head;
        struct trk_query *qs = t->qq_head;
        uint64_t sync = t->sync_req, preq = t->purge_req;
        int64_t pnow = t->purge_now_ms;
        bool stop = t->stop;
        t->q_head = NULL;
        t->q_tail = &t->q_head;
        t->q_len = 0;
        t->qq_head = NULL;
        t->qq_tail = &t->qq_head;
        pthread_mutex_unlock(&t->mu);

        if (batch)
            store_batch(t, batch);
        worker_queries(t, qs);
        int64_t now = trk_now_ms();
        if (preq != t->purge_done || now >= t->next_purge_ms) {
            purge(t, preq != t->purge_done ? pnow : now);
            t->next_purge_ms = now + TRK_PURGE_INTERVAL_MS;
        }
        pthread_mutex_lock(&t->mu);
        t->sync_done = sync;
        t->purge_done = preq;
        pthread_cond_broadcast(&t->done_cv);
        bool more = worker_has_work(t);
        pthread_mutex_unlock(&t->mu);
        if (stop && !more)
            break;
    }
    return NULL;
}

/* ---- loop side -------------------------------------------------------- */

static void query_free(struct trk_query *q)
{
    json_decref(q->result);
    free(q->value);
    free(q);
}

static void log_worker_error(struct tracking *t, const char *msg)
{
    int64_t now = trk_now_ms();
    if (now - t->last_err_log_ms < TRK_WARN_INTERVAL_MS)
        return; /* each warning is itself an event: do not feed a loop */
    t->last_err_log_ms = now;
    maillog(LOG_WARNING, "Tracking: %s", msg);
}

static void tracking_drain(struct tracking *t)
{
    char werr[sizeof(t->werr)];
    pthread_mutex_lock(&t->mu);
    struct trk_query *done = t->d_head;
    t->d_head = NULL;
    t->d_tail = &t->d_head;
    memcpy(werr, t->werr, sizeof(werr));
    t->werr[0] = '\0';
    pthread_mutex_unlock(&t->mu);
    if (werr[0])
        log_worker_error(t, werr);
    while (done) {
        struct trk_query *q = done;
        done = q->next;
        if (q->cb) {
            q->cb(q->arg, q->result, q->result ? NULL : q->err);
            q->result = NULL;
        }
        query_free(q);
    }
}

static void tracking_on_done(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;
    ssize_t r;
    do
        r = read(fd, &v, sizeof(v));
    while (r < 0 && errno == EINTR);
    tracking_drain(arg);
}

static void warn_dropped(struct tracking *t)
{
    int64_t now = trk_now_ms();
    if (now - t->last_drop_warn_ms < TRK_WARN_INTERVAL_MS)
        return;
    t->last_drop_warn_ms = now;
    /* maillog() does not tap a line logged from inside the tap */
    maillog(LOG_WARNING,
            "Tracking: %" PRIu64 " events dropped: the tracking writer is more than %zu events "
            "behind",
            t->dropped_unlogged, t->max_queue);
    t->dropped_unlogged = 0;
}

void tracking_tap(void *ctx, const char *line, size_t len)
{
    struct tracking *t = ctx;
    pthread_mutex_lock(&t->mu);
    bool full = t->q_len >= t->max_queue;
    if (!full) {
        struct trk_event *e = xmalloc(sizeof(*e) + len + 1);
        e->next = NULL;
        e->ts_ms = trk_now_ms();
        e->len = len;
        memcpy(e->text, line, len);
        e->text[len] = '\0';
        *t->q_tail = e;
        t->q_tail = &e->next;
        t->q_len++;
        pthread_cond_signal(&t->work_cv);
    }
    pthread_mutex_unlock(&t->mu);
    if (full) {
        t->dropped++;
        t->dropped_unlogged++;
        warn_dropped(t);
    }
}

/* A LIKE pattern matching s literally (ESCAPE '\\'). */
static char *like_escape(const char *s)
{
    char *out = xmalloc(strlen(s) * 2 + 1), *o = out;
    for (; *s; s++) {
        if (*s == '%' || *s == '_' || *s == '\\')
            *o++ = '\\';
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

struct trk_query *tracking_query(struct tracking *t, const struct trk_query_params *p,
                                 trk_query_cb cb, void *arg)
{
    struct trk_query *q = xcalloc(1, sizeof(*q));
    q->p = *p;
    q->value = p->key == TRK_BY_SUBJECT ? like_escape(p->value ? p->value : "")
                                        : xstrdup(p->value ? p->value : "");
    q->p.value = q->value;
    q->cb = cb;
    q->arg = arg;
    pthread_mutex_lock(&t->mu);
    *t->qq_tail = q;
    t->qq_tail = &q->next;
    pthread_cond_signal(&t->work_cv);
    pthread_mutex_unlock(&t->mu);
    return q;
}

void tracking_query_cancel(struct trk_query *q)
{
    q->cb = NULL; /* loop thread only: the worker never reads cb */
}

void tracking_sync(struct tracking *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t gen = ++t->sync_req;
    pthread_cond_signal(&t->work_cv);
    while (t->sync_done < gen && t->worker_running)
        pthread_cond_wait(&t->done_cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

void tracking_purge_at(struct tracking *t, int64_t now_ms)
{
    pthread_mutex_lock(&t->mu);
    uint64_t gen = ++t->purge_req;
    t->purge_now_ms = now_ms;
    pthread_cond_signal(&t->work_cv);
    while (t->purge_done < gen && t->worker_running)
        pthread_cond_wait(&t->done_cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

uint64_t tracking_dropped(const struct tracking *t)
{
    return t->dropped;
}

static void tracking_free(struct tracking *t)
{
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(t->st[i]);
    if (t->db)
        sqlite3_close(t->db);
    if (t->rdb)
        sqlite3_close(t->rdb);
    while (t->q_head) {
        struct trk_event *e = t->q_head;
        t->q_head = e->next;
        free(e);
    }
    if (t->ev)
        event_free(t->ev);
    if (t->efd >= 0)
        close(t->efd);
    pthread_cond_destroy(&t->work_cv);
    pthread_cond_destroy(&t->done_cv);
    pthread_mutex_destroy(&t->mu);
    free(t->path);
    free(t);
}

/* Create the directory of path if needed. */
static int trk_mkdir_for(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    return fs_mkdirs(dir, 0700);
}

struct tracking *tracking_open(struct event_base *base, const struct tracking_params *p, char *err,
                               size_t errlen)
{
    struct tracking *t = xcalloc(1, sizeof(*t));
    t->base = base;
    t->path = xstrdup(p->path);
    t->max_age_ms = p->max_age_ms;
    t->max_size = p->max_size;
    t->max_queue = p->max_queue ? p->max_queue : TRK_QUEUE_DEFAULT;
    t->q_tail = &t->q_head;
    t->qq_tail = &t->qq_head;
    t->d_tail = &t->d_head;
    t->efd = -1;
    t->last_drop_warn_ms = t->last_err_log_ms = INT64_MIN / 2;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->work_cv, NULL);
    pthread_cond_init(&t->done_cv, NULL);
    int rc = trk_mkdir_for(t->path);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", t->path, strerror(-rc));
        goto fail;
    }
    if (trk_db_open(t, err, errlen) < 0)
        goto fail;
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    t->ev = t->efd < 0 ? NULL : event_new(base, t->efd, EV_READ | EV_PERSIST, tracking_on_done, t);
    if (t->ev == NULL || event_add(t->ev, NULL) < 0) {
        snprintf(err, errlen, "cannot register the tracking event");
        goto fail;
    }
    t->next_purge_ms = trk_now_ms(); /* a first purge at start */
    rc = pthread_create(&t->worker, NULL, tracking_worker, t);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the tracking worker: %s", strerror(rc));
        goto fail;
    }
    t->worker_running = true;
    pthread_setname_np(t->worker, "tracking");
    return t;
fail:
    tracking_free(t);
    return NULL;
}

void tracking_close(struct tracking *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->work_cv);
    pthread_mutex_unlock(&t->mu);
    if (t->worker_running)
        pthread_join(t->worker, NULL);
    t->worker_running = false;
    /* Answered queries still get their callback (control frees first, so
     * normally they were cancelled). */
    for (struct trk_query *q = t->d_head; q; q = q->next)
        if (q->cb && q->result == NULL && q->err[0] == '\0')
            snprintf(q->err, sizeof(q->err), "shutting down");
    tracking_drain(t);
    tracking_free(t);
}
