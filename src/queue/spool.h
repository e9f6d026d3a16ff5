/*
 * spool: durable storage of accepted messages, with grouped commits.
 *
 * The contract (never weaken it): spool_msg_commit()'s callback reports
 * success only after the message -- envelope, recipients and body -- is on
 * stable storage, i.e. after the fdatasync/fsync that covers it returned.
 * The SMTP server sends "250" from that callback and from nowhere else.
 *
 * Layout under the spool directory:
 *   queue.db       SQLite, WAL, synchronous=FULL (schema below)
 *   bodies/<mid>   bodies larger than memory_threshold, streamed during DATA
 *   damaged/       records that failed verification on load, moved aside
 *
 * Schema (documented for operators and tests in docs/spool.md):
 *   meta(key TEXT PRIMARY KEY, value INTEGER)      -- id reservations
 *   msg(mid INTEGER PRIMARY KEY, icid, received (unix ms), sender TEXT,
 *       flags INTEGER, size INTEGER, crc32 INTEGER, body BLOB NULL,
 *       body_file TEXT NULL, client_ip TEXT, helo TEXT, listener TEXT,
 *       envid TEXT NULL, ret INTEGER, message_id TEXT NULL, subject TEXT NULL)
 *   rcpt(mid, rid, addr TEXT, orcpt TEXT NULL, notify INTEGER, state INTEGER,
 *        attempts INTEGER, next_attempt INTEGER (unix ms), last_error TEXT,
 *        PRIMARY KEY(mid, rid))
 *   A message's body is either the blob (size <= memory_threshold) or the
 *   file; size and crc32 (zlib) cover the exact bytes that will be delivered.
 *
 * Grouped commits: the loop thread queues finished messages; one worker
 * thread takes everything queued, fdatasyncs the body files, fsyncs the
 * bodies/ directory once, and commits one SQLite transaction; then it posts
 * all the completions back to the loop through an eventfd. While it syncs,
 * the next batch accumulates, so the sync rate, not the message rate, is
 * bounded by the disk.
 *
 * Recovery on open: every message is verified (size and crc32 of blob or
 * file); one that fails is moved to damaged/ (file) or the damaged table
 * (row), logged, and never delivered. Body files with no row were never
 * acknowledged and are removed.
 *
 * IDs (ICID, MID, DCID) are monotonic across restarts: blocks of IDs are
 * reserved in meta before use, so a crash skips at most the rest of a block.
 *
 * Threading: every function here is called on the loop thread only.
 */
#ifndef POSTERN_QUEUE_SPOOL_H
#define POSTERN_QUEUE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct spool;
struct spool_msg;

struct spool_params {
    const char *dir;
    uint64_t memory_threshold; /* bodies larger than this go to bodies/<mid> */
    uint64_t min_free_space;   /* bytes; spool_low_space() below this */
};

enum spool_id_kind { SPOOL_ID_ICID, SPOOL_ID_MID, SPOOL_ID_DCID, SPOOL_ID__COUNT };

enum spool_msg_flag {
    SPOOL_F_SMTPUTF8 = 1,
    SPOOL_F_8BITMIME = 2,
    SPOOL_F_BOUNCE = 4, /* a DSN generated here (issue: delivery) */
    SPOOL_F_TLS = 8     /* received over TLS */
};

struct spool_envelope {
    uint64_t mid;
    uint64_t icid;
    int64_t received_ms; /* unix time in milliseconds */
    const char *sender;  /* "" for the null sender */
    unsigned flags;      /* spool_msg_flag */
    const char *client_ip;
    const char *helo;
    const char *listener;
    const char *envid;      /* DSN ENVID (decoded), or NULL */
    int ret;                /* DSN RET: 0 unset, 1 FULL, 2 HDRS */
    const char *message_id; /* or NULL */
    const char *subject;    /* or NULL */
};

/* DSN NOTIFY bits (RFC 3461) */
enum spool_notify {
    SPOOL_NOTIFY_DEFAULT = 0,
    SPOOL_NOTIFY_NEVER = 1,
    SPOOL_NOTIFY_SUCCESS = 2,
    SPOOL_NOTIFY_FAILURE = 4,
    SPOOL_NOTIFY_DELAY = 8
};

/* Open (creating if needed) the spool, run recovery, reserve IDs. Returns
 * NULL with a message in err on failure. */
struct spool *spool_open(struct event_base *base, const struct spool_params *p, char *err,
                         size_t errlen);
/* Wait for queued commits to finish (their callbacks run), then close. */
void spool_close(struct spool *sp);

/* Next ID of a kind; monotonic across restarts. */
uint64_t spool_next_id(struct spool *sp, enum spool_id_kind kind);
/* The last ID handed out of a kind (0 if none yet in this run). */
uint64_t spool_current_id(const struct spool *sp, enum spool_id_kind kind);

/* True when free space on the spool filesystem is below min_free_space
 * (checked with statvfs at most once a second). */
bool spool_low_space(struct spool *sp);

/* Messages and recipients currently stored (after recovery and commits). */
void spool_counts(const struct spool *sp, uint64_t *msgs, uint64_t *rcpts);
/* Transactions the commit worker has committed since open (a batch of
 * messages and/or ID reservations each); for tests and statistics. */
uint64_t spool_stats_batches(const struct spool *sp);

/* Build a message. */
struct spool_msg *spool_msg_new(struct spool *sp, uint64_t mid);
/* Copies every string. */
void spool_msg_set_envelope(struct spool_msg *m, const struct spool_envelope *env);
void spool_msg_add_rcpt(struct spool_msg *m, const char *addr, const char *orcpt, unsigned notify);
/* Append body bytes (already unstuffed, CRLF line ends). Returns 0, or a
 * negative errno on write failure (ENOSPC...). The error is sticky: later
 * writes do nothing and return it again. */
int spool_msg_write(struct spool_msg *m, const void *data, size_t len);
uint64_t spool_msg_size(const struct spool_msg *m);

typedef void (*spool_commit_cb)(void *arg, int err);
/* Hand the message to the commit worker. cb(arg, 0) runs on the loop thread
 * once it is durable, cb(arg, -errno) if it could not be stored (nothing of
 * it remains). Takes ownership of m. */
void spool_msg_commit(struct spool_msg *m, spool_commit_cb cb, void *arg);
/* Drop a message under construction (and its body file). */
void spool_msg_discard(struct spool_msg *m);

/* ---- delivery side (loop thread) ---------------------------------------- */

struct spool_rcpt_rec {
    uint32_t rid;
    const char *addr;
    const char *orcpt; /* or NULL */
    unsigned notify;
    uint32_t attempts;
    int64_t next_attempt_ms;
    const char *last_error; /* or NULL */
};

struct spool_msg_rec {
    struct spool_envelope env; /* strings valid during the callback */
    uint64_t size;
    size_t nrcpts;
    const struct spool_rcpt_rec *rcpts; /* pending recipients */
};

typedef void (*spool_load_fn)(void *ctx, const struct spool_msg_rec *m);
/* Call fn for every stored message with its pending recipients, in MID
 * order (at start, to rebuild the delivery queue). Returns 0 or -1. */
int spool_load(struct spool *sp, spool_load_fn fn, void *ctx);
/* The same for one message (showmessage): fn is called once if mid is
 * stored. Returns 0, -ENOENT if it is not, or -EIO. Read-only. */
int spool_load_one(struct spool *sp, uint64_t mid, spool_load_fn fn, void *ctx);

/* A stored message's body for reading: either data/size (a blob, copied)
 * or fd/size (a file, read with pread). */
struct spool_body {
    const char *data;
    uint64_t size;
    int fd;
    void *priv;
};
int spool_body_open(struct spool *sp, uint64_t mid, struct spool_body *b);
void spool_body_close(struct spool_body *b);

/* Delivery results, grouped: every change of one transaction is committed
 * together, with any new message (a DSN) added to it, in one SQL
 * transaction. Body files of finished messages are removed after the
 * commit. */
struct spool_txn;
struct spool_txn *spool_txn_new(struct spool *sp);
/* A recipient is finished (delivered, bounced, dropped, deleted). */
void spool_txn_rcpt_done(struct spool_txn *t, uint64_t mid, uint32_t rid);
/* A recipient waits for its next attempt. */
void spool_txn_rcpt_defer(struct spool_txn *t, uint64_t mid, uint32_t rid, uint32_t attempts,
                          int64_t next_ms, const char *error);
/* A message is finished: its row, remaining recipients and body go. */
void spool_txn_msg_done(struct spool_txn *t, uint64_t mid);
/* Store a new message in the same transaction (takes ownership). */
void spool_txn_add_msg(struct spool_txn *t, struct spool_msg *m);
/* Hand to the worker (takes ownership); cb as for spool_msg_commit. */
void spool_txn_commit(struct spool_txn *t, spool_commit_cb cb, void *arg);

#endif
