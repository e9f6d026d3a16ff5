/*
 * tracking: the message tracking store (tracking.db) behind `findevent`.
 *
 * Every mail_logs line is an event. The log tap (tracking_tap(), installed
 * with maillog_set_tap()) copies each line with its time into a bounded
 * in-memory queue; one worker thread takes the whole queue at a time and
 * inserts it in one SQLite transaction, filling the per-message index
 * (sender, recipients, Message-ID, subject, client IP) from the lines it
 * recognises. Nothing here is on the `250` path: the loop thread only
 * copies a line and signals a condition variable, never waits for SQLite.
 *
 * Durability: WAL with synchronous=NORMAL. Tracking is a convenience index
 * of mail_logs (which stays the record); losing the last seconds of events
 * on a power loss is acceptable, an fsync per batch competing with the
 * spool's fsyncs is not.
 *
 * Queries (tracking_query) run on the worker, on a read-only connection of
 * their own, and complete on the loop thread through an eventfd, like the
 * spool's commits. Schema and retention: docs/tracking.md.
 */
#ifndef POSTERN_TRACKING_TRACKING_H
#define POSTERN_TRACKING_TRACKING_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct tracking;

struct tracking_params {
    const char *path;    /* the tracking.db file */
    uint64_t max_age_ms; /* events older than this are purged; 0 = no limit */
    uint64_t max_size;   /* bytes in use above which the oldest go; 0 = no limit */
    size_t max_queue;    /* events waiting for the worker; 0 = default */
};

/* Open (creating) the database and start the worker. NULL with err set on
 * failure. The caller installs the tap: maillog_set_tap(tracking_tap, t). */
struct tracking *tracking_open(struct event_base *base, const struct tracking_params *p, char *err,
                               size_t errlen);
/* Stop the worker after it has written what is queued; answer pending
 * queries with an error; free everything. Uninstall the tap first. NULL ok. */
void tracking_close(struct tracking *t);

/* The maillog tap: line is "Level: text" (no timestamp, no newline). Loop
 * thread. Never blocks on the worker: when the queue is full the event is
 * dropped and counted. */
void tracking_tap(void *ctx, const char *line, size_t len);

/* ---- what a log line says (exposed for tests) ---- */

enum trk_kind {
    TRK_OTHER,
    TRK_NEW_ICID,   /* New SMTP ICID i ... address <ip> */
    TRK_START_MID,  /* Start MID m ICID i */
    TRK_FROM,       /* MID m ICID i From: <addr> */
    TRK_RCPT,       /* MID m ICID i RID r To: <addr> */
    TRK_MESSAGE_ID, /* MID m Message-ID '<id>' */
    TRK_SUBJECT,    /* MID m Subject '<subject>' */
};

struct trk_fields {
    uint64_t mid, icid, dcid; /* 0: not named */
    enum trk_kind kind;
    char value[1024]; /* the address, IP, Message-ID or subject of kind */
};

/* Parse one line ("Level: text" or just text); returns f->kind. */
enum trk_kind tracking_parse(const char *line, size_t len, struct trk_fields *f);

/* ---- queries ---- */

enum trk_key {
    TRK_BY_MID,
    TRK_BY_MESSAGE_ID,
    TRK_BY_SENDER,
    TRK_BY_RCPT,
    TRK_BY_SUBJECT,
    TRK_BY_IP
};

struct trk_query_params {
    enum trk_key key;
    const char *value;
    int64_t since_ms, until_ms; /* 0: unbounded */
    size_t limit;               /* messages; 0 = default */
};

/* result: {"messages": [{"mid", "icid", "client_ip", "sender", "message_id",
 * "subject", "first", "last", "recipients": [...], "events": [{"time",
 * "text"}]}], "truncated": bool}, newest message first; NULL and err on
 * failure. Ownership of result passes to the callback. */
typedef void (*trk_query_cb)(void *arg, json_t *result, const char *err);
struct trk_query;

/* Queue a query for the worker; cb runs later on the loop thread, unless
 * tracking_query_cancel() ran first. */
struct trk_query *tracking_query(struct tracking *t, const struct trk_query_params *p,
                                 trk_query_cb cb, void *arg);
void tracking_query_cancel(struct trk_query *q);

/* ---- for tests and diagnostics ---- */

/* Block until every event queued so far is committed. */
void tracking_sync(struct tracking *t);
/* Run the retention purge now as if the time were now_ms, and wait for it. */
void tracking_purge_at(struct tracking *t, int64_t now_ms);
uint64_t tracking_dropped(const struct tracking *t);

#endif
