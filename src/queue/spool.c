/*
 * spool: durable storage of accepted messages with grouped commits (see
 * spool.h for the contract and docs/spool.md for the on-disk format).
 *
 * Thread ownership
 *   Loop thread: every public function; struct spool_msg while it is being
 *   built (envelope, in-memory body, the body file's fd and its writes); the
 *   ID counters; the message/recipient counts; the low-space cache; the
 *   eventfd's libevent event and the completion callbacks.
 *   Worker thread (one, started at the end of spool_open, joined in
 *   spool_close): the sqlite3 connection and its prepared statements, and
 *   each spool_msg from the moment spool_msg_commit() queues it until the
 *   worker posts it to the completion list.
 *   Shared, under sp->mu: the commit queue, the pending ID reservations,
 *   the durable ID reservations, the completion list and the log notes.
 *   spool_open() and the recovery run on the calling thread before the
 *   worker exists; pthread_create() is the hand-over of the connection.
 *   The worker never calls maillog() (it is not thread-safe); it queues
 *   notes that the loop thread logs when it drains completions.
 *
 * Invariants
 *   - A completion with err == 0 is posted only after the fdatasync of the
 *     message's body file, the fsync of bodies/ and the SQLite COMMIT (WAL,
 *     synchronous=FULL, so COMMIT returns after the WAL fsync) all returned.
 *   - Callbacks run only on the loop thread, from the eventfd handler or
 *     spool_close(), never from inside spool_msg_commit().
 *   - Every body file under bodies/ is either referenced by a committed msg
 *     row, or belongs to a message not yet acknowledged (so recovery may
 *     remove any file without a row).
 *   - For each ID kind, every ID handed out is below the reservation
 *     durable in meta (next < durable), except when the worker cannot
 *     write a reservation at all, which is logged as Critical.
 *   - A msg row's size and crc32 cover exactly the bytes of its blob or
 *     file; recovery refuses (moves aside) anything that does not match.
 */
#include "queue/spool.h"

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* IDs reserved per meta write: large enough that reservations are rare
 * (one extra row per 5000 IDs), small enough that a crash wastes little. */
#define SPOOL_ID_BLOCK       10000
#define SPOOL_SCHEMA_VERSION 1
/* Recovery reads body files in chunks of this size. */
#define SPOOL_READ_CHUNK (64 * 1024)

static const char *const id_keys[SPOOL_ID__COUNT] = {
    [SPOOL_ID_ICID] = "next_icid",
    [SPOOL_ID_MID] = "next_mid",
    [SPOOL_ID_DCID] = "next_dcid",
};

struct spool_rcpt {
    char *addr;
    char *orcpt;
    unsigned notify;
};

/* One row change of a delivery transaction (spool_txn). */
enum spool_op_kind { SPOOL_OP_RCPT_DONE, SPOOL_OP_RCPT_DEFER, SPOOL_OP_MSG_DONE };

struct spool_op {
    enum spool_op_kind kind;
    uint64_t mid;
    uint32_t rid;
    uint32_t attempts;
    int64_t next_ms;
    char *error;
};

struct spool_txn {
    struct spool *sp;
    struct spool_op *ops;
    size_t nops, cap;
    uint64_t ndone_msgs, ndone_rcpts;
    struct spool_msg *msgs, **msgs_tail; /* new messages (DSNs) stored with it */
};

struct spool_msg {
    struct spool *sp;
    struct spool_txn *txn;  /* non-NULL: this queue item carries a transaction */
    struct spool_msg *next; /* commit queue / completion list */
    uint64_t mid;
    /* envelope (owned copies) */
    uint64_t icid;
    int64_t received_ms;
    char *sender;
    unsigned flags;
    char *client_ip;
    char *helo;
    char *listener;
    char *envid;
    int ret;
    char *message_id;
    char *subject;
    struct spool_rcpt *rcpts;
    size_t nrcpts, rcpt_cap;
    /* body: in buf while size <= threshold, then in bodies/<mid> via fd */
    unsigned char *buf;
    size_t buf_cap;
    int fd;
    bool has_file;
    uint64_t size;
    uint32_t crc;
    int err; /* sticky write error, -errno */
    /* completion */
    spool_commit_cb cb;
    void *arg;
    int result;
};

/* A log line produced on the worker, logged by the loop thread. */
struct spool_note {
    struct spool_note *next;
    enum log_level level;
    char text[256];
};

struct spool {
    struct event_base *base;
    char *dir;
    int bodies_fd;
    int damaged_fd;
    uint64_t threshold;
    uint64_t min_free;

    /* worker-owned after spool_open */
    sqlite3 *db;
    sqlite3_stmt *st_begin, *st_commit, *st_rollback;
    sqlite3_stmt *st_ins_msg, *st_ins_rcpt, *st_meta;
    sqlite3_stmt *st_del_rcpt, *st_upd_rcpt, *st_del_msg, *st_del_msg_rcpts;

    /* loop thread: a second, read-only connection (WAL lets it read while
     * the worker writes) for loading the queue and reading bodies */
    sqlite3 *rdb;
    sqlite3_stmt *st_load_msg, *st_load_rcpt, *st_body;

    /* loop thread */
    uint64_t next[SPOOL_ID__COUNT];     /* next ID to hand out */
    uint64_t last[SPOOL_ID__COUNT];     /* last handed out, 0 if none */
    uint64_t reserved[SPOOL_ID__COUNT]; /* newest reservation queued */
    uint64_t safe[SPOOL_ID__COUNT];     /* loop's copy of durable[] */
    uint64_t nmsgs, nrcpts;
    bool space_valid, space_low;
    struct timespec space_at;
    int efd;
    struct event *ev;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* loop -> worker: something queued / stop */
    pthread_cond_t done_cv; /* worker -> loop: a batch finished */
    struct spool_msg *q_head, **q_tail;
    uint64_t meta_pending[SPOOL_ID__COUNT]; /* 0: nothing to write */
    uint64_t durable[SPOOL_ID__COUNT];      /* reservation committed */
    uint64_t meta_failures;
    struct spool_msg *d_head, **d_tail;
    struct spool_note *n_head, **n_tail;
    bool stop;
    bool worker_running;
    pthread_t worker;

    _Atomic uint64_t batches; /* transactions committed by the worker */
};

/* ---- small helpers ---------------------------------------------------- */

static void spool_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void spool_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Map a SQLite failure to a negative errno for the commit callback. */
static int spool_sqlite_errno(sqlite3 *db)
{
    int code = sqlite3_extended_errcode(db) & 0xff;
    int sys = sqlite3_system_errno(db);
    switch (code) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_IOERR:
        return sys > 0 ? -sys : -EIO;
    default:
        return -EIO;
    }
}

/* write(2) all of p[0..n), retrying on EINTR and short writes. */
static int spool_write_all(int fd, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Open (creating) a subdirectory of the spool as an O_DIRECTORY fd. */
static int spool_open_subdir(const char *dir, const char *name)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
        return -ENAMETOOLONG;
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static void spool_body_name(char *name, size_t len, uint64_t mid)
{
    snprintf(name, len, "%" PRIu64, mid);
}

static int spool_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        spool_err(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Step a statement expected to finish without rows; resets it. */
static int spool_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void spool_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* ---- schema ----------------------------------------------------------- */

#define SPOOL_MSG_COLUMNS                                                                          \
    "icid INTEGER NOT NULL, received INTEGER NOT NULL, sender TEXT NOT NULL,"                      \
    " flags INTEGER NOT NULL, size INTEGER NOT NULL, crc32 INTEGER NOT NULL, body BLOB,"           \
    " body_file TEXT, client_ip TEXT, helo TEXT, listener TEXT, envid TEXT,"                       \
    " ret INTEGER NOT NULL DEFAULT 0, message_id TEXT, subject TEXT"
#define SPOOL_RCPT_COLUMNS                                                                         \
    "rid INTEGER NOT NULL, addr TEXT NOT NULL, orcpt TEXT, notify INTEGER NOT NULL,"               \
    " state INTEGER NOT NULL, attempts INTEGER NOT NULL, next_attempt INTEGER NOT NULL,"           \
    " last_error TEXT"

/* damaged_* have the same columns but no keys: whatever failed
 * verification is kept verbatim for an operator to look at. */
static const char spool_schema_v1[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS msg(mid INTEGER PRIMARY KEY, " SPOOL_MSG_COLUMNS ");"
    "CREATE TABLE IF NOT EXISTS rcpt(mid INTEGER NOT NULL, " SPOOL_RCPT_COLUMNS
    ", PRIMARY KEY(mid, rid));"
    "CREATE TABLE IF NOT EXISTS damaged_msg(mid INTEGER, " SPOOL_MSG_COLUMNS ");"
    "CREATE TABLE IF NOT EXISTS damaged_rcpt(mid INTEGER, " SPOOL_RCPT_COLUMNS ");"
    "INSERT OR IGNORE INTO meta VALUES('next_icid', 1), ('next_mid', 1), ('next_dcid', 1);"
    "PRAGMA user_version = 1;";

static int spool_schema(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int version = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) {
        spool_err(err, errlen, "queue.db: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version == SPOOL_SCHEMA_VERSION)
        return 0;
    if (version != 0) {
        spool_err(err, errlen, "queue.db: unknown schema version %d (this build knows %d)", version,
                  SPOOL_SCHEMA_VERSION);
        return -1;
    }
    if (spool_exec(db, "BEGIN IMMEDIATE", err, errlen) < 0)
        return -1;
    if (spool_exec(db, spool_schema_v1, err, errlen) < 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return spool_exec(db, "COMMIT", err, errlen);
}

static int spool_journal_cb(void *arg, int ncol, char **vals, char **names)
{
    bool *wal = arg;
    *wal = ncol > 0 && vals[0] && strcmp(vals[0], "wal") == 0;
    return 0;
}

static int spool_db_open(struct spool *sp, char *err, size_t errlen)
{
    char path[PATH_MAX];
    bool wal = false;
    if ((size_t)snprintf(path, sizeof(path), "%s/queue.db", sp->dir) >= sizeof(path)) {
        spool_err(err, errlen, "spool dir name too long");
        return -1;
    }
    /* NOMUTEX: the connection is used by one thread at a time (the opener,
     * then the worker after pthread_create). */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &sp->db, flags, NULL) != SQLITE_OK) {
        spool_err(err, errlen, "%s: %s", path, sp->db ? sqlite3_errmsg(sp->db) : "cannot open");
        return -1;
    }
    sqlite3_extended_result_codes(sp->db, 1);
    /* Durability: WAL + synchronous=FULL makes COMMIT return only after the
     * WAL is fsync'd, which is what "250" waits for. */
    if (sqlite3_exec(sp->db, "PRAGMA journal_mode=WAL", spool_journal_cb, &wal, NULL) !=
            SQLITE_OK ||
        !wal) {
        spool_err(err, errlen, "%s: cannot enable WAL: %s", path, sqlite3_errmsg(sp->db));
        return -1;
    }
    if (spool_exec(sp->db, "PRAGMA synchronous=FULL", err, errlen) < 0)
        return -1;
    if (spool_schema(sp->db, err, errlen) < 0)
        return -1;
    return 0;
}

/* A statement to prepare into the struct spool field at off. */
struct spool_stmt_def {
    size_t off;
    const char *sql;
};

/* Prepare every statement of defs on db into sp's fields. */
static int spool_prepare_stmts(struct spool *sp, sqlite3 *db, const struct spool_stmt_def *defs,
                               size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt **st = (sqlite3_stmt **)((char *)sp + defs[i].off);
        if (sqlite3_prepare_v3(db, defs[i].sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) !=
            SQLITE_OK) {
            spool_err(err, errlen, "queue.db: %s", sqlite3_errmsg(db));
            return -1;
        }
    }
    return 0;
}

static int spool_prepare(struct spool *sp, char *err, size_t errlen)
{
    static const struct spool_stmt_def stmts[] = {
        {offsetof(struct spool, st_begin), "BEGIN IMMEDIATE"},
        {offsetof(struct spool, st_commit), "COMMIT"},
        {offsetof(struct spool, st_rollback), "ROLLBACK"},
        {offsetof(struct spool, st_ins_msg),
         "INSERT INTO msg(mid, icid, received, sender, flags, size, crc32, body, body_file,"
         " client_ip, helo, listener, envid, ret, message_id, subject)"
         " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"},
        {offsetof(struct spool, st_ins_rcpt),
         "INSERT INTO rcpt(mid, rid, addr, orcpt, notify, state, attempts, next_attempt,"
         " last_error) VALUES(?1, ?2, ?3, ?4, ?5, 0, 0, ?6, NULL)"},
        {offsetof(struct spool, st_meta), "UPDATE meta SET value = ?2 WHERE key = ?1"},
        {offsetof(struct spool, st_del_rcpt), "DELETE FROM rcpt WHERE mid = ?1 AND rid = ?2"},
        {offsetof(struct spool, st_upd_rcpt),
         "UPDATE rcpt SET attempts = ?3, next_attempt = ?4, last_error = ?5"
         " WHERE mid = ?1 AND rid = ?2"},
        {offsetof(struct spool, st_del_msg), "DELETE FROM msg WHERE mid = ?1"},
        {offsetof(struct spool, st_del_msg_rcpts), "DELETE FROM rcpt WHERE mid = ?1"},
    };
    return spool_prepare_stmts(sp, sp->db, stmts, sizeof(stmts) / sizeof(stmts[0]), err, errlen);
}

/* ---- recovery (calling thread, before the worker starts) ---------------- */

struct spool_damage {
    uint64_t mid;
    bool has_file;
    const char *reason;
};

struct spool_recovery {
    struct spool_damage *damaged;
    size_t ndamaged, damaged_cap;
    uint64_t *file_mids; /* sorted: mids whose good body is a file */
    size_t nfile_mids, file_cap;
    uint64_t max_mid;
};

/* Size and crc32 of bodies/<mid>; -errno if it cannot be read. */
static int spool_file_sum(struct spool *sp, uint64_t mid, uint64_t *size, uint32_t *crc)
{
    char name[32];
    spool_body_name(name, sizeof(name), mid);
    int fd = openat(sp->bodies_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    unsigned char *chunk = xmalloc(SPOOL_READ_CHUNK);
    uLong c = crc32(0L, Z_NULL, 0);
    uint64_t n = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = read(fd, chunk, SPOOL_READ_CHUNK);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (r == 0)
            break;
        c = crc32_z(c, chunk, (z_size_t)r);
        n += (uint64_t)r;
    }
    free(chunk);
    close(fd);
    *size = n;
    *crc = (uint32_t)c;
    return rc;
}

/* Check one msg row; returns NULL if good, else the reason. */
static const char *spool_verify_row(struct spool *sp, sqlite3_stmt *st, uint64_t mid,
                                    bool *has_file)
{
    uint64_t want_size = (uint64_t)sqlite3_column_int64(st, 1);
    uint32_t want_crc = (uint32_t)sqlite3_column_int64(st, 2);
    const char *file = (const char *)sqlite3_column_text(st, 4);
    uint64_t size = 0;
    uint32_t crc = 0;
    *has_file = file != NULL;
    if (file) {
        char expect[48];
        snprintf(expect, sizeof(expect), "bodies/%" PRIu64, mid);
        /* Only ever our own name: a row can never make us read elsewhere. */
        if (strcmp(file, expect) != 0) {
            *has_file = false;
            return "bad body_file";
        }
        int rc = spool_file_sum(sp, mid, &size, &crc);
        if (rc == -ENOENT) {
            *has_file = false;
            return "body file missing";
        }
        if (rc < 0)
            return "body file unreadable";
    } else {
        const void *blob = sqlite3_column_blob(st, 3);
        size = (uint64_t)sqlite3_column_bytes(st, 3);
        crc = (uint32_t)crc32_z(crc32(0L, Z_NULL, 0), blob, (z_size_t)size);
    }
    if (size != want_size)
        return "size mismatch";
    if (crc != want_crc)
        return "crc mismatch";
    return NULL;
}

static int spool_scan(struct spool *sp, struct spool_recovery *r, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(sp->db, "SELECT mid, size, crc32, body, body_file FROM msg ORDER BY mid",
                           -1, &st, NULL) != SQLITE_OK) {
        spool_err(err, errlen, "queue.db: %s", sqlite3_errmsg(sp->db));
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t mid = (uint64_t)sqlite3_column_int64(st, 0);
        bool has_file;
        const char *why = spool_verify_row(sp, st, mid, &has_file);
        if (mid > r->max_mid)
            r->max_mid = mid;
        if (why) {
            xgrow((void **)&r->damaged, &r->damaged_cap, r->ndamaged + 1, sizeof(*r->damaged));
            r->damaged[r->ndamaged++] = (struct spool_damage){mid, has_file, why};
        } else if (has_file) {
            xgrow((void **)&r->file_mids, &r->file_cap, r->nfile_mids + 1, sizeof(uint64_t));
            r->file_mids[r->nfile_mids++] = mid;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        spool_err(err, errlen, "queue.db: %s", sqlite3_errmsg(sp->db));
        return -1;
    }
    return 0;
}

/* Move damaged messages aside. The file is renamed (and both directories
 * synced) before the rows move: if we crash in between, the next start
 * sees a row whose file is missing and moves the row; the other order
 * would leave a file with no row, which orphan cleanup would delete. */
static int spool_move_damaged(struct spool *sp, struct spool_recovery *r, char *err, size_t errlen)
{
    bool renamed = false;
    for (size_t i = 0; i < r->ndamaged; i++) {
        char name[32];
        if (!r->damaged[i].has_file)
            continue;
        spool_body_name(name, sizeof(name), r->damaged[i].mid);
        if (renameat(sp->bodies_fd, name, sp->damaged_fd, name) < 0 && errno != ENOENT) {
            spool_err(err, errlen, "cannot move bodies/%s to damaged/: %s", name, strerror(errno));
            return -1;
        }
        renamed = true;
    }
    if (renamed && (fsync(sp->damaged_fd) < 0 || fsync(sp->bodies_fd) < 0)) {
        spool_err(err, errlen, "fsync of spool directories: %s", strerror(errno));
        return -1;
    }
    if (r->ndamaged == 0)
        return 0;
    sqlite3_stmt *st[4] = {NULL, NULL, NULL, NULL};
    static const char *const sql[4] = {
        "INSERT INTO damaged_msg SELECT * FROM msg WHERE mid = ?1",
        "INSERT INTO damaged_rcpt SELECT * FROM rcpt WHERE mid = ?1",
        "DELETE FROM rcpt WHERE mid = ?1",
        "DELETE FROM msg WHERE mid = ?1",
    };
    int rc = spool_exec(sp->db, "BEGIN IMMEDIATE", err, errlen);
    for (int j = 0; rc == 0 && j < 4; j++)
        if (sqlite3_prepare_v2(sp->db, sql[j], -1, &st[j], NULL) != SQLITE_OK)
            rc = -1;
    for (size_t i = 0; rc == 0 && i < r->ndamaged; i++) {
        for (int j = 0; rc == 0 && j < 4; j++) {
            sqlite3_bind_int64(st[j], 1, (sqlite3_int64)r->damaged[i].mid);
            rc = spool_step_done(st[j]);
        }
    }
    if (rc < 0)
        spool_err(err, errlen, "moving damaged rows: %s", sqlite3_errmsg(sp->db));
    for (int j = 0; j < 4; j++)
        sqlite3_finalize(st[j]);
    if (rc == 0)
        rc = spool_exec(sp->db, "COMMIT", err, errlen);
    if (rc < 0) {
        sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    for (size_t i = 0; i < r->ndamaged; i++)
        maillog(LOG_WARNING, "MID %" PRIu64 " damaged in spool (%s), moved aside",
                r->damaged[i].mid, r->damaged[i].reason);
    return 0;
}

static int spool_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Remove body files that no msg row references: their message was never
 * acknowledged (the row commits only after the file is synced). */
static int spool_remove_orphans(struct spool *sp, struct spool_recovery *r, size_t *removed)
{
    int fd = dup(sp->bodies_fd);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(de->d_name, &end, 10);
        uint64_t mid = v;
        bool known =
            errno == 0 && *end == '\0' && end != de->d_name && r->nfile_mids > 0 &&
            bsearch(&mid, r->file_mids, r->nfile_mids, sizeof(uint64_t), spool_cmp_u64) != NULL;
        if (known)
            continue;
        if (unlinkat(sp->bodies_fd, de->d_name, 0) == 0)
            (*removed)++;
        else
            maillog(LOG_WARNING, "spool: cannot remove orphan bodies/%s: %s", de->d_name,
                    strerror(errno));
    }
    closedir(d);
    return 0;
}

static int spool_count(sqlite3 *db, const char *sql, uint64_t *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : -1;
    *out = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc;
}

static int spool_recover(struct spool *sp, char *err, size_t errlen)
{
    struct spool_recovery r = {0};
    size_t orphans = 0;
    int rc = spool_scan(sp, &r, err, errlen);
    if (rc == 0)
        rc = spool_move_damaged(sp, &r, err, errlen);
    if (rc == 0 && spool_exec(sp->db, "DELETE FROM rcpt WHERE mid NOT IN (SELECT mid FROM msg)",
                              err, errlen) < 0)
        rc = -1;
    if (rc == 0) {
        int e = spool_remove_orphans(sp, &r, &orphans);
        if (e < 0) {
            spool_err(err, errlen, "reading bodies/: %s", strerror(-e));
            rc = -1;
        }
    }
    if (rc == 0 && (spool_count(sp->db, "SELECT count(*) FROM msg", &sp->nmsgs) < 0 ||
                    spool_count(sp->db, "SELECT count(*) FROM rcpt", &sp->nrcpts) < 0)) {
        spool_err(err, errlen, "queue.db: %s", sqlite3_errmsg(sp->db));
        rc = -1;
    }
    if (rc == 0) {
        /* A MID row above next_mid means meta was lost or edited: never
         * hand out a MID that is already stored. */
        if (r.max_mid + 1 > sp->next[SPOOL_ID_MID])
            sp->next[SPOOL_ID_MID] = r.max_mid + 1;
        maillog(LOG_INFO,
                "Spool %s loaded: %" PRIu64 " messages, %" PRIu64
                " recipients, %zu damaged, %zu orphan files removed",
                sp->dir, sp->nmsgs, sp->nrcpts, r.ndamaged, orphans);
    }
    free(r.damaged);
    free(r.file_mids);
    return rc;
}

/* Read the stored counters, then raise them by a block synchronously so
 * every ID this run hands out before the worker's first reservation is
 * already covered on disk. */
static int spool_reserve_initial(struct spool *sp, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(sp->db, "SELECT value FROM meta WHERE key = ?1", -1, &st, NULL) !=
        SQLITE_OK) {
        spool_err(err, errlen, "queue.db: %s", sqlite3_errmsg(sp->db));
        return -1;
    }
    for (int k = 0; k < SPOOL_ID__COUNT; k++) {
        sqlite3_bind_text(st, 1, id_keys[k], -1, SQLITE_STATIC);
        int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 1;
        sqlite3_reset(st);
        uint64_t stored = v < 1 ? 1 : (uint64_t)v;
        if (stored > sp->next[k])
            sp->next[k] = stored;
    }
    sqlite3_finalize(st);
    if (spool_exec(sp->db, "BEGIN IMMEDIATE", err, errlen) < 0)
        return -1;
    int rc = 0;
    for (int k = 0; rc == 0 && k < SPOOL_ID__COUNT; k++) {
        sp->reserved[k] = sp->next[k] + SPOOL_ID_BLOCK;
        sp->durable[k] = sp->safe[k] = sp->reserved[k];
        sqlite3_bind_text(sp->st_meta, 1, id_keys[k], -1, SQLITE_STATIC);
        sqlite3_bind_int64(sp->st_meta, 2, (sqlite3_int64)sp->reserved[k]);
        rc = spool_step_done(sp->st_meta);
    }
    if (rc == 0 && spool_exec(sp->db, "COMMIT", err, errlen) < 0)
        rc = -1;
    else if (rc < 0)
        spool_err(err, errlen, "queue.db: reserving IDs: %s", sqlite3_errmsg(sp->db));
    if (rc < 0)
        sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ---- worker ----------------------------------------------------------- */

static void spool_note_add(struct spool_note ***tail, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append a note to a list whose tail pointer is *tail. */
static void spool_note_add(struct spool_note ***tail, enum log_level level, const char *fmt, ...)
{
    struct spool_note *n = xcalloc(1, sizeof(*n));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->text, sizeof(n->text), fmt, ap);
    va_end(ap);
    n->level = level;
    **tail = n;
    *tail = &n->next;
}

/* Apply a delivery transaction's row changes (inside the batch's SQL
 * transaction). */
static int spool_db_ops(struct spool *sp, const struct spool_txn *t)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < t->nops; i++) {
        const struct spool_op *op = &t->ops[i];
        sqlite3_stmt *st;
        switch (op->kind) {
        case SPOOL_OP_RCPT_DONE:
            st = sp->st_del_rcpt;
            sqlite3_bind_int64(st, 1, (sqlite3_int64)op->mid);
            sqlite3_bind_int64(st, 2, op->rid);
            rc = spool_step_done(st);
            break;
        case SPOOL_OP_RCPT_DEFER:
            st = sp->st_upd_rcpt;
            sqlite3_bind_int64(st, 1, (sqlite3_int64)op->mid);
            sqlite3_bind_int64(st, 2, op->rid);
            sqlite3_bind_int64(st, 3, op->attempts);
            sqlite3_bind_int64(st, 4, op->next_ms);
            spool_bind_text(st, 5, op->error);
            rc = spool_step_done(st);
            break;
        case SPOOL_OP_MSG_DONE:
            sqlite3_bind_int64(sp->st_del_msg_rcpts, 1, (sqlite3_int64)op->mid);
            rc = spool_step_done(sp->st_del_msg_rcpts);
            sqlite3_bind_int64(sp->st_del_msg, 1, (sqlite3_int64)op->mid);
            if (rc == 0)
                rc = spool_step_done(sp->st_del_msg);
            break;
        }
    }
    return rc;
}

/* Insert the batch's rows and pending reservations in one transaction.
 * Returns 0 or -errno; on failure everything is rolled back. */
static int spool_db_store(struct spool *sp, struct spool_msg *batch, const uint64_t *meta,
                          char *why, size_t whylen)
{
    sqlite3 *db = sp->db;
    int rc = spool_step_done(sp->st_begin);
    for (struct spool_msg *m = batch; rc == 0 && m; m = m->next) {
        if (m->result != 0)
            continue;
        if (m->txn) {
            rc = spool_db_ops(sp, m->txn);
            continue;
        }
        sqlite3_stmt *st = sp->st_ins_msg;
        char file[48];
        sqlite3_bind_int64(st, 1, (sqlite3_int64)m->mid);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)m->icid);
        sqlite3_bind_int64(st, 3, m->received_ms);
        sqlite3_bind_text(st, 4, m->sender ? m->sender : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, m->flags);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)m->size);
        sqlite3_bind_int64(st, 7, m->crc);
        if (m->has_file) {
            snprintf(file, sizeof(file), "bodies/%" PRIu64, m->mid);
            sqlite3_bind_null(st, 8);
            sqlite3_bind_text(st, 9, file, -1, SQLITE_STATIC);
        } else {
            /* zeroblob for an empty body: a NULL pointer would bind NULL */
            if (m->size == 0)
                sqlite3_bind_zeroblob(st, 8, 0);
            else
                sqlite3_bind_blob64(st, 8, m->buf, m->size, SQLITE_STATIC);
            sqlite3_bind_null(st, 9);
        }
        spool_bind_text(st, 10, m->client_ip);
        spool_bind_text(st, 11, m->helo);
        spool_bind_text(st, 12, m->listener);
        spool_bind_text(st, 13, m->envid);
        sqlite3_bind_int(st, 14, m->ret);
        spool_bind_text(st, 15, m->message_id);
        spool_bind_text(st, 16, m->subject);
        rc = spool_step_done(st);
        sqlite3_clear_bindings(st);
        for (size_t i = 0; rc == 0 && i < m->nrcpts; i++) {
            sqlite3_stmt *sr = sp->st_ins_rcpt;
            sqlite3_bind_int64(sr, 1, (sqlite3_int64)m->mid);
            /* RIDs count from 0, as in mail_logs */
            sqlite3_bind_int64(sr, 2, (sqlite3_int64)i);
            sqlite3_bind_text(sr, 3, m->rcpts[i].addr, -1, SQLITE_STATIC);
            spool_bind_text(sr, 4, m->rcpts[i].orcpt);
            sqlite3_bind_int64(sr, 5, m->rcpts[i].notify);
            sqlite3_bind_int64(sr, 6, m->received_ms);
            rc = spool_step_done(sr);
            sqlite3_clear_bindings(sr);
        }
    }
    for (int k = 0; rc == 0 && k < SPOOL_ID__COUNT; k++) {
        if (!meta[k])
            continue;
        sqlite3_bind_text(sp->st_meta, 1, id_keys[k], -1, SQLITE_STATIC);
        sqlite3_bind_int64(sp->st_meta, 2, (sqlite3_int64)meta[k]);
        rc = spool_step_done(sp->st_meta);
    }
    /* COMMIT is the durability point for the rows: with synchronous=FULL it
     * returns only after the WAL fsync. */
    if (rc == 0)
        rc = spool_step_done(sp->st_commit);
    if (rc == 0)
        return 0;
    rc = spool_sqlite_errno(db);
    snprintf(why, whylen, "%s", sqlite3_errmsg(db));
    if (!sqlite3_get_autocommit(db))
        spool_step_done(sp->st_rollback);
    return rc;
}

/* Make one batch durable and post its completions. */
static void spool_commit_batch(struct spool *sp, struct spool_msg *batch, uint64_t *meta)
{
    struct spool_note *notes = NULL, **ntail = &notes;
    bool any_file = false, any_row = false, any_meta = false;
    int rc = 0;
    char why[200];

    /* 1. Body files first: a row must never reference bytes that are not
     * on disk yet. A file that cannot be synced fails only its message. */
    for (struct spool_msg *m = batch; m; m = m->next) {
        if (m->result == 0 && m->fd >= 0 && fdatasync(m->fd) < 0) {
            m->result = -errno;
            spool_note_add(&ntail, LOG_WARNING, "MID %" PRIu64 " spool fdatasync: %s", m->mid,
                           strerror(errno));
        }
        if (m->result == 0) {
            any_file |= m->has_file;
            any_row = true;
        }
    }
    for (int k = 0; k < SPOOL_ID__COUNT; k++)
        any_meta |= meta[k] != 0;

    /* 2. Then the directory, once per batch: fdatasync covers the file's
     * data, not its name in bodies/; without this a crash could keep the
     * committed row and lose the file it points to. */
    if (any_file && fsync(sp->bodies_fd) < 0) {
        rc = -errno;
        spool_note_add(&ntail, LOG_WARNING, "spool: fsync of bodies/: %s", strerror(errno));
    }

    /* 3. Then the rows, in one transaction (the durability point). */
    if (rc == 0 && (any_row || any_meta)) {
        rc = spool_db_store(sp, batch, meta, why, sizeof(why));
        if (rc < 0)
            spool_note_add(&ntail, LOG_WARNING, "spool: commit failed: %s", why);
    }

    /* 4. Body files of finished messages go only after the commit that
     * deleted their rows: a crash in between leaves an orphan file, which
     * recovery removes, never a row without its body. */
    for (struct spool_msg *m = batch; rc == 0 && m; m = m->next) {
        if (!m->txn || m->result != 0)
            continue;
        for (size_t i = 0; i < m->txn->nops; i++) {
            if (m->txn->ops[i].kind != SPOOL_OP_MSG_DONE)
                continue;
            char name[32];
            spool_body_name(name, sizeof(name), m->txn->ops[i].mid);
            if (unlinkat(sp->bodies_fd, name, 0) < 0 && errno != ENOENT)
                spool_note_add(&ntail, LOG_WARNING, "spool: unlink body %s: %s", name,
                               strerror(errno));
        }
    }

    size_t posted = 0;
    for (struct spool_msg *m = batch; m; m = m->next) {
        if (m->fd >= 0) {
            close(m->fd);
            m->fd = -1;
        }
        if (rc < 0 && m->result == 0)
            m->result = rc;
        if (m->result < 0 && m->has_file) {
            char name[32];
            spool_body_name(name, sizeof(name), m->mid);
            unlinkat(sp->bodies_fd, name, 0);
        }
        posted++;
    }

    pthread_mutex_lock(&sp->mu);
    if (rc == 0 && (any_row || any_meta)) {
        atomic_fetch_add(&sp->batches, 1);
        for (int k = 0; k < SPOOL_ID__COUNT; k++)
            if (meta[k] > sp->durable[k])
                sp->durable[k] = meta[k];
        memset(meta, 0, sizeof(uint64_t) * SPOOL_ID__COUNT);
    } else if (rc < 0 && any_meta) {
        /* meta[] is kept by the worker and retried with the next batch
         * (not re-queued here, which would spin on a broken disk). */
        sp->meta_failures++;
        spool_note_add(&ntail, LOG_CRITICAL, "spool: cannot write ID reservation");
    }
    if (batch) {
        struct spool_msg *tail = batch;
        while (tail->next)
            tail = tail->next;
        *sp->d_tail = batch;
        sp->d_tail = &tail->next;
    }
    if (notes) {
        *sp->n_tail = notes;
        sp->n_tail = ntail;
    }
    pthread_cond_broadcast(&sp->done_cv);
    pthread_mutex_unlock(&sp->mu);

    /* 5. Only now wake the loop: callbacks ("250") follow the commit. */
    if (posted || notes) {
        uint64_t one = 1;
        ssize_t w;
        do
            w = write(sp->efd, &one, sizeof(one));
        while (w < 0 && errno == EINTR);
    }
}

static bool spool_meta_pending(const struct spool *sp)
{
    for (int k = 0; k < SPOOL_ID__COUNT; k++)
        if (sp->meta_pending[k])
            return true;
    return false;
}

/* Worker loop: take everything queued (group commit), make it durable. */
static void *spool_worker(void *arg)
{
    struct spool *sp = arg;
    uint64_t meta[SPOOL_ID__COUNT] = {0}; /* reservations to write; kept on failure */
    for (;;) {
        pthread_mutex_lock(&sp->mu);
        while (!sp->q_head && !spool_meta_pending(sp) && !sp->stop)
            pthread_cond_wait(&sp->work_cv, &sp->mu);
        if (!sp->q_head && !spool_meta_pending(sp)) {
            pthread_mutex_unlock(&sp->mu);
            break;
        }
        struct spool_msg *batch = sp->q_head;
        sp->q_head = NULL;
        sp->q_tail = &sp->q_head;
        for (int k = 0; k < SPOOL_ID__COUNT; k++)
            if (sp->meta_pending[k] > meta[k])
                meta[k] = sp->meta_pending[k];
        memset(sp->meta_pending, 0, sizeof(sp->meta_pending));
        pthread_mutex_unlock(&sp->mu);
        spool_commit_batch(sp, batch, meta);
    }
    return NULL;
}

/* ---- loop side -------------------------------------------------------- */

static void spool_txn_free(struct spool_txn *t)
{
    for (size_t i = 0; i < t->nops; i++)
        free(t->ops[i].error);
    free(t->ops);
    free(t);
}

/* The envelope strings of m (owned copies). */
static void spool_msg_free_envelope(struct spool_msg *m)
{
    free(m->sender);
    free(m->client_ip);
    free(m->helo);
    free(m->listener);
    free(m->envid);
    free(m->message_id);
    free(m->subject);
}

static void spool_msg_free(struct spool_msg *m)
{
    if (m->txn)
        spool_txn_free(m->txn);
    if (m->fd >= 0)
        close(m->fd);
    spool_msg_free_envelope(m);
    for (size_t i = 0; i < m->nrcpts; i++) {
        free(m->rcpts[i].addr);
        free(m->rcpts[i].orcpt);
    }
    free(m->rcpts);
    free(m->buf);
    free(m);
}

/* Run every posted completion: log the worker's notes, count stored
 * messages, call the callbacks. Loop thread only. */
static void spool_drain(struct spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    struct spool_msg *done = sp->d_head;
    struct spool_note *notes = sp->n_head;
    sp->d_head = NULL;
    sp->d_tail = &sp->d_head;
    sp->n_head = NULL;
    sp->n_tail = &sp->n_head;
    pthread_mutex_unlock(&sp->mu);

    while (notes) {
        struct spool_note *n = notes;
        notes = n->next;
        maillog(n->level, "%s", n->text);
        free(n);
    }
    while (done) {
        struct spool_msg *m = done;
        done = m->next;
        if (m->result == 0 && m->txn) {
            sp->nmsgs -= m->txn->ndone_msgs;
            sp->nrcpts -= m->txn->ndone_rcpts;
        } else if (m->result == 0) {
            sp->nmsgs++;
            sp->nrcpts += m->nrcpts;
        }
        if (m->cb)
            m->cb(m->arg, m->result);
        spool_msg_free(m);
    }
}

static void spool_on_done(evutil_socket_t fd, short what, void *arg)
{
    struct spool *sp = arg;
    uint64_t v;
    ssize_t r;
    do
        r = read(fd, &v, sizeof(v));
    while (r < 0 && errno == EINTR);
    spool_drain(sp);
}

static void spool_free(struct spool *sp)
{
    sqlite3_stmt *sts[] = {sp->st_begin,    sp->st_commit,        sp->st_rollback, sp->st_ins_msg,
                           sp->st_ins_rcpt, sp->st_meta,          sp->st_del_rcpt, sp->st_upd_rcpt,
                           sp->st_del_msg,  sp->st_del_msg_rcpts, sp->st_load_msg, sp->st_load_rcpt,
                           sp->st_body};
    for (size_t i = 0; i < sizeof(sts) / sizeof(sts[0]); i++)
        sqlite3_finalize(sts[i]);
    if (sp->db)
        sqlite3_close(sp->db);
    if (sp->rdb)
        sqlite3_close(sp->rdb);
    if (sp->ev)
        event_free(sp->ev);
    if (sp->efd >= 0)
        close(sp->efd);
    if (sp->bodies_fd >= 0)
        close(sp->bodies_fd);
    if (sp->damaged_fd >= 0)
        close(sp->damaged_fd);
    pthread_cond_destroy(&sp->work_cv);
    pthread_cond_destroy(&sp->done_cv);
    pthread_mutex_destroy(&sp->mu);
    free(sp->dir);
    free(sp);
}

/* The loop thread's read-only connection and its statements. */
static int spool_reader_open(struct spool *sp, char *err, size_t errlen)
{
    char path[PATH_MAX];
    static const struct spool_stmt_def stmts[] = {
        {offsetof(struct spool, st_load_msg),
         "SELECT mid, icid, received, sender, flags, size, envid, ret, client_ip, helo,"
         " listener, message_id, subject FROM msg ORDER BY mid"},
        {offsetof(struct spool, st_load_rcpt),
         "SELECT rid, addr, orcpt, notify, attempts, next_attempt, last_error FROM rcpt"
         " WHERE mid = ?1 ORDER BY rid"},
        {offsetof(struct spool, st_body), "SELECT body, size FROM msg WHERE mid = ?1"},
    };
    snprintf(path, sizeof(path), "%s/queue.db", sp->dir);
    if (sqlite3_open_v2(path, &sp->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        spool_err(err, errlen, "%s: %s", path, sp->rdb ? sqlite3_errmsg(sp->rdb) : "cannot open");
        return -1;
    }
    return spool_prepare_stmts(sp, sp->rdb, stmts, sizeof(stmts) / sizeof(stmts[0]), err, errlen);
}

struct spool *spool_open(struct event_base *base, const struct spool_params *p, char *err,
                         size_t errlen)
{
    struct spool *sp = xcalloc(1, sizeof(*sp));
    sp->base = base;
    sp->dir = xstrdup(p->dir);
    sp->threshold = p->memory_threshold;
    sp->min_free = p->min_free_space;
    sp->bodies_fd = sp->damaged_fd = sp->efd = -1;
    sp->q_tail = &sp->q_head;
    sp->d_tail = &sp->d_head;
    sp->n_tail = &sp->n_head;
    pthread_mutex_init(&sp->mu, NULL);
    pthread_cond_init(&sp->work_cv, NULL);
    pthread_cond_init(&sp->done_cv, NULL);

    int rc = fs_mkdirs(sp->dir, 0700);
    if (rc < 0) {
        spool_err(err, errlen, "%s: %s", sp->dir, strerror(-rc));
        goto fail;
    }
    if ((sp->bodies_fd = spool_open_subdir(sp->dir, "bodies")) < 0 ||
        (sp->damaged_fd = spool_open_subdir(sp->dir, "damaged")) < 0) {
        rc = sp->bodies_fd < 0 ? sp->bodies_fd : sp->damaged_fd;
        spool_err(err, errlen, "%s: %s", sp->dir, strerror(-rc));
        goto fail;
    }
    if (spool_db_open(sp, err, errlen) < 0 || spool_prepare(sp, err, errlen) < 0 ||
        spool_recover(sp, err, errlen) < 0 || spool_reserve_initial(sp, err, errlen) < 0 ||
        spool_reader_open(sp, err, errlen) < 0)
        goto fail;
    /* The new subdirectories and queue.db must survive a crash too. */
    int dfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    sp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sp->efd < 0) {
        spool_err(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    sp->ev = event_new(base, sp->efd, EV_READ | EV_PERSIST, spool_on_done, sp);
    if (!sp->ev || event_add(sp->ev, NULL) < 0) {
        spool_err(err, errlen, "cannot register spool event");
        goto fail;
    }
    rc = pthread_create(&sp->worker, NULL, spool_worker, sp);
    if (rc != 0) {
        spool_err(err, errlen, "cannot start spool worker: %s", strerror(rc));
        goto fail;
    }
    sp->worker_running = true;
    /* its name is how `status detail` tells its CPU share from the loop's */
    pthread_setname_np(sp->worker, "spool-worker");
    return sp;
fail:
    spool_free(sp);
    return NULL;
}

void spool_close(struct spool *sp)
{
    if (!sp)
        return;
    pthread_mutex_lock(&sp->mu);
    sp->stop = true;
    pthread_cond_signal(&sp->work_cv);
    pthread_mutex_unlock(&sp->mu);
    if (sp->worker_running)
        pthread_join(sp->worker, NULL);
    sp->worker_running = false;
    /* Callbacks may commit again (they get -ESHUTDOWN): drain to empty. */
    for (;;) {
        pthread_mutex_lock(&sp->mu);
        bool more = sp->d_head || sp->n_head;
        pthread_mutex_unlock(&sp->mu);
        if (!more)
            break;
        spool_drain(sp);
    }
    spool_free(sp);
}

/* Block until the worker has a reservation above next[k] on disk. Rare:
 * only when half a block of IDs is used up while the worker is stuck. */
static void spool_wait_reservation(struct spool *sp, int k)
{
    pthread_mutex_lock(&sp->mu);
    uint64_t fails = sp->meta_failures;
    while (sp->durable[k] <= sp->next[k] && sp->meta_failures == fails && sp->worker_running &&
           !sp->stop) {
        if (sp->meta_pending[k] <= sp->next[k]) {
            sp->reserved[k] = sp->next[k] + SPOOL_ID_BLOCK;
            sp->meta_pending[k] = sp->reserved[k];
        }
        pthread_cond_signal(&sp->work_cv);
        pthread_cond_wait(&sp->done_cv, &sp->mu);
    }
    sp->safe[k] = sp->durable[k];
    pthread_mutex_unlock(&sp->mu);
    if (sp->safe[k] <= sp->next[k])
        maillog(LOG_CRITICAL, "spool: %s %" PRIu64 " used beyond its durable reservation",
                id_keys[k], sp->next[k]);
}

uint64_t spool_next_id(struct spool *sp, enum spool_id_kind kind)
{
    int k = (int)kind;
    if (k < 0 || k >= SPOOL_ID__COUNT)
        abort();
    if (sp->next[k] >= sp->safe[k]) {
        pthread_mutex_lock(&sp->mu);
        sp->safe[k] = sp->durable[k];
        pthread_mutex_unlock(&sp->mu);
        if (sp->next[k] >= sp->safe[k])
            spool_wait_reservation(sp, k);
    }
    uint64_t id = sp->next[k]++;
    sp->last[k] = id;
    /* Within half a block of the reservation: queue the next one now, so
     * the worker writes it (with the next batch) long before it is needed. */
    if (sp->reserved[k] - sp->next[k] < SPOOL_ID_BLOCK / 2) {
        sp->reserved[k] = sp->next[k] + SPOOL_ID_BLOCK;
        pthread_mutex_lock(&sp->mu);
        if (sp->reserved[k] > sp->meta_pending[k])
            sp->meta_pending[k] = sp->reserved[k];
        pthread_cond_signal(&sp->work_cv);
        pthread_mutex_unlock(&sp->mu);
    }
    return id;
}

uint64_t spool_current_id(const struct spool *sp, enum spool_id_kind kind)
{
    int k = (int)kind;
    if (k < 0 || k >= SPOOL_ID__COUNT)
        abort();
    return sp->last[k];
}

bool spool_low_space(struct spool *sp)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (sp->space_valid && now.tv_sec - sp->space_at.tv_sec < 1)
        return sp->space_low;
    struct statvfs vfs;
    if (statvfs(sp->dir, &vfs) < 0) {
        /* Cannot tell: say low, so DATA is refused with 452 rather than
         * accepted onto a filesystem we cannot even stat. */
        maillog(LOG_WARNING, "spool: statvfs %s: %s", sp->dir, strerror(errno));
        sp->space_low = true;
    } else {
        uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
        sp->space_low = avail < sp->min_free;
    }
    sp->space_valid = true;
    sp->space_at = now;
    return sp->space_low;
}

void spool_counts(const struct spool *sp, uint64_t *msgs, uint64_t *rcpts)
{
    if (msgs)
        *msgs = sp->nmsgs;
    if (rcpts)
        *rcpts = sp->nrcpts;
}

uint64_t spool_stats_batches(const struct spool *sp)
{
    return atomic_load(&((struct spool *)sp)->batches);
}

struct spool_msg *spool_msg_new(struct spool *sp, uint64_t mid)
{
    struct spool_msg *m = xcalloc(1, sizeof(*m));
    m->sp = sp;
    m->mid = mid;
    m->fd = -1;
    m->crc = (uint32_t)crc32(0L, Z_NULL, 0);
    return m;
}

static char *spool_dup(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

void spool_msg_set_envelope(struct spool_msg *m, const struct spool_envelope *env)
{
    spool_msg_free_envelope(m);
    /* the MID is fixed by spool_msg_new (it names the body file) */
    m->icid = env->icid;
    m->received_ms = env->received_ms;
    m->sender = xstrdup(env->sender ? env->sender : "");
    m->flags = env->flags;
    m->client_ip = spool_dup(env->client_ip);
    m->helo = spool_dup(env->helo);
    m->listener = spool_dup(env->listener);
    m->envid = spool_dup(env->envid);
    m->ret = env->ret;
    m->message_id = spool_dup(env->message_id);
    m->subject = spool_dup(env->subject);
}

void spool_msg_add_rcpt(struct spool_msg *m, const char *addr, const char *orcpt, unsigned notify)
{
    xgrow((void **)&m->rcpts, &m->rcpt_cap, m->nrcpts + 1, sizeof(*m->rcpts));
    m->rcpts[m->nrcpts++] = (struct spool_rcpt){xstrdup(addr), spool_dup(orcpt), notify};
}

/* The body outgrew memory: create bodies/<mid> and move the buffer there. */
static int spool_msg_spill(struct spool_msg *m)
{
    char name[32];
    spool_body_name(name, sizeof(name), m->mid);
    m->fd = openat(m->sp->bodies_fd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (m->fd < 0)
        return -errno;
    m->has_file = true;
    int rc = spool_write_all(m->fd, m->buf, (size_t)m->size);
    free(m->buf);
    m->buf = NULL;
    m->buf_cap = 0;
    return rc;
}

int spool_msg_write(struct spool_msg *m, const void *data, size_t len)
{
    if (m->err)
        return m->err;
    if (len == 0)
        return 0;
    int rc = 0;
    if (!m->has_file && m->size + len > m->sp->threshold)
        rc = spool_msg_spill(m);
    if (rc == 0 && m->has_file) {
        rc = spool_write_all(m->fd, data, len);
    } else if (rc == 0) {
        xgrow((void **)&m->buf, &m->buf_cap, (size_t)m->size + len, 1);
        memcpy(m->buf + m->size, data, len);
    }
    if (rc < 0) {
        m->err = rc;
        return rc;
    }
    m->crc = (uint32_t)crc32_z(m->crc, data, (z_size_t)len);
    m->size += len;
    return 0;
}

uint64_t spool_msg_size(const struct spool_msg *m)
{
    return m->size;
}

/* Unlink the body file of a message that will never be stored. */
static void spool_msg_unlink(struct spool_msg *m)
{
    if (m->fd >= 0) {
        close(m->fd);
        m->fd = -1;
    }
    if (m->has_file) {
        char name[32];
        spool_body_name(name, sizeof(name), m->mid);
        unlinkat(m->sp->bodies_fd, name, 0);
    }
}

void spool_msg_commit(struct spool_msg *m, spool_commit_cb cb, void *arg)
{
    struct spool *sp = m->sp;
    m->cb = cb;
    m->arg = arg;
    m->next = NULL;
    pthread_mutex_lock(&sp->mu);
    if (m->err || sp->stop) {
        /* Fails without touching the worker; still completes through the
         * loop so a callback never runs inside this call. */
        m->result = m->err ? m->err : -ESHUTDOWN;
        spool_msg_unlink(m);
        *sp->d_tail = m;
        sp->d_tail = &m->next;
        pthread_mutex_unlock(&sp->mu);
        uint64_t one = 1;
        ssize_t w;
        do
            w = write(sp->efd, &one, sizeof(one));
        while (w < 0 && errno == EINTR);
        return;
    }
    *sp->q_tail = m;
    sp->q_tail = &m->next;
    pthread_cond_signal(&sp->work_cv);
    pthread_mutex_unlock(&sp->mu);
}

void spool_msg_discard(struct spool_msg *m)
{
    if (!m)
        return;
    spool_msg_unlink(m);
    spool_msg_free(m);
}

/* ---- delivery side: loading, reading bodies, result transactions ------ */

static const char *spool_col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* Read one message's pending recipients into a growing array. */
static size_t spool_load_rcpts(struct spool *sp, uint64_t mid, struct spool_rcpt_rec **recs,
                               size_t *cap)
{
    sqlite3_stmt *st = sp->st_load_rcpt;
    size_t n = 0;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)mid);
    while (sqlite3_step(st) == SQLITE_ROW) {
        xgrow((void **)recs, cap, n + 1, sizeof(**recs));
        (*recs)[n++] = (struct spool_rcpt_rec){
            .rid = (uint32_t)sqlite3_column_int64(st, 0),
            .addr = xstrdup(spool_col_text(st, 1) ? spool_col_text(st, 1) : ""),
            .orcpt = spool_col_text(st, 2) ? xstrdup(spool_col_text(st, 2)) : NULL,
            .notify = (unsigned)sqlite3_column_int64(st, 3),
            .attempts = (uint32_t)sqlite3_column_int64(st, 4),
            .next_attempt_ms = sqlite3_column_int64(st, 5),
            .last_error = spool_col_text(st, 6) ? xstrdup(spool_col_text(st, 6)) : NULL,
        };
    }
    sqlite3_reset(st);
    return n;
}

/* Hand the msg row st is on, with its pending recipients, to fn (the
 * columns of st_load_msg / spool_load_one's query, in that order). */
static void spool_row_deliver(struct spool *sp, sqlite3_stmt *st, struct spool_rcpt_rec **recs,
                              size_t *cap, spool_load_fn fn, void *ctx)
{
    struct spool_msg_rec m = {0};
    m.env = (struct spool_envelope){
        .mid = (uint64_t)sqlite3_column_int64(st, 0),
        .icid = (uint64_t)sqlite3_column_int64(st, 1),
        .received_ms = sqlite3_column_int64(st, 2),
        .sender = spool_col_text(st, 3) ? spool_col_text(st, 3) : "",
        .flags = (unsigned)sqlite3_column_int64(st, 4),
        .envid = spool_col_text(st, 6),
        .ret = sqlite3_column_int(st, 7),
        .client_ip = spool_col_text(st, 8),
        .helo = spool_col_text(st, 9),
        .listener = spool_col_text(st, 10),
        .message_id = spool_col_text(st, 11),
        .subject = spool_col_text(st, 12),
    };
    m.size = (uint64_t)sqlite3_column_int64(st, 5);
    m.nrcpts = spool_load_rcpts(sp, m.env.mid, recs, cap);
    m.rcpts = *recs;
    fn(ctx, &m);
    for (size_t i = 0; i < m.nrcpts; i++) {
        free((char *)(*recs)[i].addr);
        free((char *)(*recs)[i].orcpt);
        free((char *)(*recs)[i].last_error);
    }
}

int spool_load(struct spool *sp, spool_load_fn fn, void *ctx)
{
    sqlite3_stmt *st = sp->st_load_msg;
    struct spool_rcpt_rec *recs = NULL;
    size_t cap = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        spool_row_deliver(sp, st, &recs, &cap, fn, ctx);
    }
    if (step != SQLITE_DONE) {
        maillog(LOG_WARNING, "spool: loading the queue: %s", sqlite3_errmsg(sp->rdb));
        rc = -1;
    }
    sqlite3_reset(st);
    free(recs);
    return rc;
}

int spool_load_one(struct spool *sp, uint64_t mid, spool_load_fn fn, void *ctx)
{
    /* Prepared per call: an operator command, not a hot path. */
    static const char sql[] = "SELECT mid, icid, received, sender, flags, size, envid, ret,"
                              " client_ip, helo, listener, message_id, subject FROM msg"
                              " WHERE mid = ?1";
    sqlite3_stmt *st;
    struct spool_rcpt_rec *recs = NULL;
    size_t cap = 0;
    int rc = -ENOENT, step;
    if (sqlite3_prepare_v2(sp->rdb, sql, -1, &st, NULL) != SQLITE_OK) {
        maillog(LOG_WARNING, "spool: reading MID %llu: %s", (unsigned long long)mid,
                sqlite3_errmsg(sp->rdb));
        return -EIO;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)mid);
    if ((step = sqlite3_step(st)) == SQLITE_ROW) {
        spool_row_deliver(sp, st, &recs, &cap, fn, ctx);
        rc = 0;
    } else if (step != SQLITE_DONE) {
        maillog(LOG_WARNING, "spool: reading MID %llu: %s", (unsigned long long)mid,
                sqlite3_errmsg(sp->rdb));
        rc = -EIO;
    }
    sqlite3_finalize(st);
    free(recs);
    return rc;
}

int spool_body_open(struct spool *sp, uint64_t mid, struct spool_body *b)
{
    sqlite3_stmt *st = sp->st_body;
    int rc = -ENOENT;
    memset(b, 0, sizeof(*b));
    b->fd = -1;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)mid);
    if (sqlite3_step(st) == SQLITE_ROW) {
        b->size = (uint64_t)sqlite3_column_int64(st, 1);
        if (sqlite3_column_type(st, 0) == SQLITE_BLOB) {
            const void *p = sqlite3_column_blob(st, 0);
            size_t n = (size_t)sqlite3_column_bytes(st, 0);
            b->priv = xmalloc(n ? n : 1);
            if (n)
                memcpy(b->priv, p, n);
            b->data = b->priv;
            b->size = n;
            rc = 0;
        } else {
            char name[32];
            spool_body_name(name, sizeof(name), mid);
            b->fd = openat(sp->bodies_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            rc = b->fd < 0 ? -errno : 0;
        }
    }
    sqlite3_reset(st);
    return rc;
}

void spool_body_close(struct spool_body *b)
{
    if (b->fd >= 0)
        close(b->fd);
    free(b->priv);
    memset(b, 0, sizeof(*b));
    b->fd = -1;
}

struct spool_txn *spool_txn_new(struct spool *sp)
{
    struct spool_txn *t = xcalloc(1, sizeof(*t));
    t->sp = sp;
    t->msgs_tail = &t->msgs;
    return t;
}

static struct spool_op *spool_txn_op(struct spool_txn *t, enum spool_op_kind kind, uint64_t mid,
                                     uint32_t rid)
{
    xgrow((void **)&t->ops, &t->cap, t->nops + 1, sizeof(*t->ops));
    struct spool_op *op = &t->ops[t->nops++];
    *op = (struct spool_op){.kind = kind, .mid = mid, .rid = rid};
    return op;
}

void spool_txn_rcpt_done(struct spool_txn *t, uint64_t mid, uint32_t rid)
{
    spool_txn_op(t, SPOOL_OP_RCPT_DONE, mid, rid);
    t->ndone_rcpts++;
}

void spool_txn_rcpt_defer(struct spool_txn *t, uint64_t mid, uint32_t rid, uint32_t attempts,
                          int64_t next_ms, const char *error)
{
    struct spool_op *op = spool_txn_op(t, SPOOL_OP_RCPT_DEFER, mid, rid);
    op->attempts = attempts;
    op->next_ms = next_ms;
    op->error = error ? xstrdup(error) : NULL;
}

void spool_txn_msg_done(struct spool_txn *t, uint64_t mid)
{
    spool_txn_op(t, SPOOL_OP_MSG_DONE, mid, 0);
    t->ndone_msgs++;
}

void spool_txn_add_msg(struct spool_txn *t, struct spool_msg *m)
{
    m->next = NULL;
    *t->msgs_tail = m;
    t->msgs_tail = &m->next;
}

void spool_txn_commit(struct spool_txn *t, spool_commit_cb cb, void *arg)
{
    struct spool *sp = t->sp;
    struct spool_msg *carrier = spool_msg_new(sp, 0);
    struct spool_msg *m, *next;
    carrier->txn = t;
    /* The new messages first, then the carrier, all under one lock hold:
     * the worker takes the queue whole, so they share one SQL transaction
     * (a DSN is stored in the same commit as the bounce it reports). */
    carrier->cb = cb;
    carrier->arg = arg;
    pthread_mutex_lock(&sp->mu);
    /* After spool_close() began, the worker may be gone: complete at once
     * (through the loop, like spool_msg_commit) with -ESHUTDOWN. */
    bool stopped = sp->stop;
    struct spool_msg ***tail = stopped ? &sp->d_tail : &sp->q_tail;
    for (m = t->msgs; m; m = next) {
        next = m->next;
        m->next = NULL;
        m->cb = NULL;
        if (m->err || stopped)
            m->result = m->err ? m->err : -ESHUTDOWN;
        if (stopped)
            spool_msg_unlink(m);
        **tail = m;
        *tail = &m->next;
    }
    t->msgs = NULL;
    if (stopped)
        carrier->result = -ESHUTDOWN;
    **tail = carrier;
    *tail = &carrier->next;
    pthread_cond_signal(&sp->work_cv);
    pthread_mutex_unlock(&sp->mu);
    if (stopped) {
        uint64_t one = 1;
        ssize_t w;
        do
            w = write(sp->efd, &one, sizeof(one));
        while (w < 0 && errno == EINTR);
    }
}
