/*
 * test_spool: the spool against a real temp directory, a real event_base
 * and queue.db inspected through a second SQLite connection (as an operator
 * would with sqlite3). Covers: small (blob) and large (file) bodies with
 * size/crc, callbacks only from the loop and only after the row is visible
 * to another connection, group commit, ID monotonicity across close/reopen
 * and a real crash (a forked child killed with SIGKILL), recovery (damaged
 * blob, truncated file, orphan files and rows), sticky write errors
 * (RLIMIT_FSIZE makes write(2) fail with EFBIG, even as root), discard,
 * low space, and a throughput figure (4 KiB messages, 50 in flight).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/log.h"
#include "queue/spool.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define THRESHOLD 4096

struct fx {
    char dir[PATH_MAX];
    char db[PATH_MAX + 16];
    struct event_base *base;
    struct spool *sp;
    sqlite3 *peek; /* a second connection, as an operator's sqlite3 */
};

/* Set while the test is inside spool_msg_commit(): a callback must never
 * run then. */
static bool in_commit;

struct done {
    int calls;
    int err;
    bool visible; /* the msg row was visible from the peek connection */
    bool reentrant;
    uint64_t mid;
    sqlite3 *peek;
    int *count; /* shared completion counter, or NULL */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fx_open_spool(struct fx *f, uint64_t threshold, uint64_t min_free)
{
    char err[256] = "";
    struct spool_params p = {
        .dir = f->dir, .memory_threshold = threshold, .min_free_space = min_free};
    f->sp = spool_open(f->base, &p, err, sizeof(err));
    if (!f->sp)
        fail_msg("spool_open: %s", err);
}

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/test_spool.XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->db, sizeof(f->db), "%s/queue.db", f->dir);
    f->base = event_base_new();
    fx_open_spool(f, THRESHOLD, 0);
    if (sqlite3_open_v2(f->db, &f->peek, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        return -1;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    spool_close(f->sp);
    sqlite3_close(f->peek);
    event_base_free(f->base);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* Run the loop until *counter reaches target (10 s limit). */
static void run_until(struct event_base *base, const int *counter, int target)
{
    bool timed_out = false;
    struct event *t = evtimer_new(base, on_timeout, &timed_out);
    struct timeval tv = {10, 0};
    evtimer_add(t, &tv);
    while (*counter < target && !timed_out)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    assert_false(timed_out);
}

static int64_t peek_int(sqlite3 *db, const char *sql, int64_t arg)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_int64(st, 1, arg);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static void peek_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static void on_commit(void *arg, int err)
{
    struct done *d = arg;
    d->reentrant |= in_commit;
    d->calls++;
    d->err = err;
    if (d->count)
        (*d->count)++;
    if (d->peek)
        d->visible =
            peek_int(d->peek, "SELECT count(*) FROM msg WHERE mid = ?1", (int64_t)d->mid) == 1;
}

static void fill_body(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : (char)('a' + (i * 7 + seed) % 26);
}

static struct spool_msg *make_msg(struct spool *sp, uint64_t mid, const char *body, size_t len,
                                  size_t chunk)
{
    struct spool_msg *m = spool_msg_new(sp, mid);
    struct spool_envelope env = {
        .mid = mid,
        .icid = 77,
        .received_ms = 1700000000000 + (int64_t)mid,
        .sender = "alice@example.com",
        .flags = SPOOL_F_TLS | SPOOL_F_8BITMIME,
        .client_ip = "192.0.2.1",
        .helo = "mx.example.net",
        .listener = "inbound",
        .envid = "ENV1",
        .ret = 2,
        .message_id = "<abc@example.com>",
        .subject = "hello",
    };
    spool_msg_set_envelope(m, &env);
    spool_msg_add_rcpt(m, "bob@example.org", "rfc822;bob@example.org",
                       SPOOL_NOTIFY_FAILURE | SPOOL_NOTIFY_DELAY);
    spool_msg_add_rcpt(m, "carol@example.org", NULL, SPOOL_NOTIFY_DEFAULT);
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        assert_int_equal(spool_msg_write(m, body + off, n), 0);
    }
    assert_int_equal(spool_msg_size(m), len);
    return m;
}

static void commit(struct spool_msg *m, struct done *d)
{
    in_commit = true;
    spool_msg_commit(m, on_commit, d);
    in_commit = false;
}

static bool path_exists(const struct fx *f, const char *rel)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", f->dir, rel);
    return access(p, F_OK) == 0;
}

/* Check the stored row of mid against body[0..len). */
static void check_stored(struct fx *f, uint64_t mid, const char *body, size_t len, bool as_file)
{
    sqlite3_stmt *st;
    uint32_t crc = (uint32_t)crc32(0L, (const Bytef *)body, (uInt)len);
    assert_int_equal(sqlite3_prepare_v2(f->peek,
                                        "SELECT size, crc32, body, body_file, sender, flags,"
                                        " received, ret, envid FROM msg WHERE mid = ?1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, (int64_t)mid);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(st, 0), len);
    assert_int_equal((uint32_t)sqlite3_column_int64(st, 1), crc);
    assert_string_equal(sqlite3_column_text(st, 4), "alice@example.com");
    assert_int_equal(sqlite3_column_int(st, 5), SPOOL_F_TLS | SPOOL_F_8BITMIME);
    assert_int_equal(sqlite3_column_int64(st, 6), 1700000000000 + (int64_t)mid);
    assert_int_equal(sqlite3_column_int(st, 7), 2);
    assert_string_equal(sqlite3_column_text(st, 8), "ENV1");
    if (as_file) {
        char rel[64], path[PATH_MAX + 64];
        snprintf(rel, sizeof(rel), "bodies/%" PRIu64, mid);
        assert_int_equal(sqlite3_column_type(st, 2), SQLITE_NULL);
        assert_string_equal(sqlite3_column_text(st, 3), rel);
        snprintf(path, sizeof(path), "%s/%s", f->dir, rel);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        char *got = malloc(len + 1);
        assert_int_equal(fread(got, 1, len + 1, fp), len);
        fclose(fp);
        assert_memory_equal(got, body, len);
        free(got);
        struct stat sb;
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
    } else {
        assert_int_equal(sqlite3_column_type(st, 2), SQLITE_BLOB);
        assert_int_equal(sqlite3_column_bytes(st, 2), len);
        if (len)
            assert_memory_equal(sqlite3_column_blob(st, 2), body, len);
        assert_int_equal(sqlite3_column_type(st, 3), SQLITE_NULL);
    }
    sqlite3_finalize(st);

    assert_int_equal(sqlite3_prepare_v2(f->peek,
                                        "SELECT rid, addr, orcpt, notify, state, attempts,"
                                        " next_attempt, last_error FROM rcpt WHERE mid = ?1"
                                        " ORDER BY rid",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, (int64_t)mid);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    assert_string_equal(sqlite3_column_text(st, 1), "bob@example.org");
    assert_string_equal(sqlite3_column_text(st, 2), "rfc822;bob@example.org");
    assert_int_equal(sqlite3_column_int(st, 3), SPOOL_NOTIFY_FAILURE | SPOOL_NOTIFY_DELAY);
    assert_int_equal(sqlite3_column_int(st, 4), 0);
    assert_int_equal(sqlite3_column_int(st, 5), 0);
    assert_int_equal(sqlite3_column_int64(st, 6), 1700000000000 + (int64_t)mid);
    assert_int_equal(sqlite3_column_type(st, 7), SQLITE_NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    assert_string_equal(sqlite3_column_text(st, 1), "carol@example.org");
    assert_int_equal(sqlite3_column_type(st, 2), SQLITE_NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

static void test_schema_pragmas(void **state)
{
    struct fx *f = *state;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(f->peek, "PRAGMA journal_mode", -1, &st, NULL), 0);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(peek_int(f->peek, "PRAGMA user_version", 0), 1);
    assert_true(path_exists(f, "bodies"));
    assert_true(path_exists(f, "damaged"));
    uint64_t msgs = 9, rcpts = 9;
    spool_counts(f->sp, &msgs, &rcpts);
    assert_int_equal(msgs, 0);
    assert_int_equal(rcpts, 0);
}

static void test_commit_small(void **state)
{
    struct fx *f = *state;
    char body[1000];
    fill_body(body, sizeof(body), 1);
    uint64_t mid = spool_next_id(f->sp, SPOOL_ID_MID);
    struct done d = {.mid = mid, .peek = f->peek};
    commit(make_msg(f->sp, mid, body, sizeof(body), 333), &d);
    assert_int_equal(d.calls, 0); /* never from inside spool_msg_commit */
    run_until(f->base, &d.calls, 1);
    assert_int_equal(d.err, 0);
    assert_true(d.visible);
    assert_false(d.reentrant);
    check_stored(f, mid, body, sizeof(body), false);
    assert_false(path_exists(f, "bodies/1"));
    uint64_t msgs, rcpts;
    spool_counts(f->sp, &msgs, &rcpts);
    assert_int_equal(msgs, 1);
    assert_int_equal(rcpts, 2);
}

static void test_commit_large(void **state)
{
    struct fx *f = *state;
    size_t len = 300 * 1000 + 17;
    char *body = malloc(len);
    fill_body(body, len, 2);
    uint64_t mid = spool_next_id(f->sp, SPOOL_ID_MID);
    struct spool_msg *m = make_msg(f->sp, mid, body, THRESHOLD, 1000);
    char rel[32];
    snprintf(rel, sizeof(rel), "bodies/%" PRIu64, mid);
    assert_false(path_exists(f, rel)); /* exactly the threshold stays in memory */
    assert_int_equal(spool_msg_write(m, body + THRESHOLD, 1), 0);
    assert_true(path_exists(f, rel)); /* one byte more spills to the file */
    for (size_t off = THRESHOLD + 1; off < len; off += 7001) {
        size_t n = len - off < 7001 ? len - off : 7001;
        assert_int_equal(spool_msg_write(m, body + off, n), 0);
    }
    assert_int_equal(spool_msg_size(m), len);
    struct done d = {.mid = mid, .peek = f->peek};
    commit(m, &d);
    run_until(f->base, &d.calls, 1);
    assert_int_equal(d.err, 0);
    assert_true(d.visible);
    check_stored(f, mid, body, len, true);
    free(body);
}

/* The callback waits for the loop, and by then the row is durable. */
static void test_callback_after_commit_via_loop(void **state)
{
    struct fx *f = *state;
    char body[100];
    fill_body(body, sizeof(body), 3);
    uint64_t mid = spool_next_id(f->sp, SPOOL_ID_MID);
    struct done d = {.mid = mid, .peek = f->peek};
    commit(make_msg(f->sp, mid, body, sizeof(body), 100), &d);
    /* Give the worker ample time: without the loop, nothing may run. */
    for (int i = 0; i < 50 && peek_int(f->peek, "SELECT count(*) FROM msg", 0) == 0; i++)
        usleep(10000);
    usleep(20000);
    assert_int_equal(d.calls, 0);
    run_until(f->base, &d.calls, 1);
    assert_int_equal(d.err, 0);
    assert_true(d.visible);
}

/* Messages finished in one loop turn share transactions. */
static void test_group_commit(void **state)
{
    struct fx *f = *state;
    enum { N = 200 };
    static struct done d[N];
    char body[THRESHOLD + 100];
    fill_body(body, sizeof(body), 4);
    uint64_t before = spool_stats_batches(f->sp);
    int total = 0;
    static struct spool_msg *m[N];
    /* Built first, then committed back to back, as messages finishing in
     * one loop turn are: the count then depends on grouping, not timing. */
    for (int i = 0; i < N; i++) {
        uint64_t mid = spool_next_id(f->sp, SPOOL_ID_MID);
        d[i] = (struct done){.mid = mid, .count = &total};
        /* every fourth body in a file, to group file syncs too */
        m[i] = make_msg(f->sp, mid, body, i % 4 ? 512 : sizeof(body), 512);
    }
    for (int i = 0; i < N; i++)
        commit(m[i], &d[i]);
    run_until(f->base, &total, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(d[i].err, 0);
    uint64_t batches = spool_stats_batches(f->sp) - before;
    print_message("# group commit: %d messages in %" PRIu64 " transactions\n", N, batches);
    assert_true(batches >= 1);
    assert_true(batches <= 10);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM msg", 0), N);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM rcpt", 0), 2 * N);
}

static void reopen(struct fx *f, uint64_t threshold, uint64_t min_free)
{
    spool_close(f->sp);
    f->sp = NULL;
    fx_open_spool(f, threshold, min_free);
}

static void test_ids_across_reopen(void **state)
{
    struct fx *f = *state;
    uint64_t last[SPOOL_ID__COUNT];
    for (int k = 0; k < SPOOL_ID__COUNT; k++) {
        assert_int_equal(spool_current_id(f->sp, (enum spool_id_kind)k), 0);
        uint64_t a = spool_next_id(f->sp, (enum spool_id_kind)k);
        uint64_t b = spool_next_id(f->sp, (enum spool_id_kind)k);
        assert_true(a >= 1);
        assert_int_equal(b, a + 1);
        assert_int_equal(spool_current_id(f->sp, (enum spool_id_kind)k), b);
        last[k] = b;
    }
    /* an empty body is stored as a zero-length blob and survives recovery */
    uint64_t mid = spool_next_id(f->sp, SPOOL_ID_MID);
    struct done d = {.mid = mid};
    commit(make_msg(f->sp, mid, "", 0, 1), &d);
    run_until(f->base, &d.calls, 1);
    assert_int_equal(d.err, 0);
    last[SPOOL_ID_MID] = mid;
    for (int round = 0; round < 3; round++) {
        reopen(f, THRESHOLD, 0);
        for (int k = 0; k < SPOOL_ID__COUNT; k++) {
            uint64_t v = spool_next_id(f->sp, (enum spool_id_kind)k);
            assert_true(v > last[k]);
            last[k] = v;
        }
    }
    uint64_t msgs;
    spool_counts(f->sp, &msgs, NULL);
    assert_int_equal(msgs, 1);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM damaged_msg", 0), 0);
    check_stored(f, mid, "", 0, false);
}

/* While running, the stored reservation always covers every ID handed out
 * (that is what a crash would leave); crossing half a block makes the
 * worker write the next reservation by itself. */
static void test_ids_reservation_ahead(void **state)
{
    struct fx *f = *state;
    const char *q = "SELECT value FROM meta WHERE key = 'next_mid'";
    uint64_t id = spool_next_id(f->sp, SPOOL_ID_MID);
    assert_true((uint64_t)peek_int(f->peek, q, 0) > id);
    int64_t first = peek_int(f->peek, q, 0);
    for (int i = 0; i < 6000; i++)
        id = spool_next_id(f->sp, SPOOL_ID_MID);
    assert_true((uint64_t)peek_int(f->peek, q, 0) > id);
    /* a reservation-only batch: poll the database, no loop needed */
    for (int i = 0; i < 500 && peek_int(f->peek, q, 0) == first; i++)
        usleep(10000);
    assert_true(peek_int(f->peek, q, 0) > first);
    assert_true((uint64_t)peek_int(f->peek, q, 0) >= id + 5000);

    /* simulated crash: meta left at the value seen while running */
    int64_t at_crash = peek_int(f->peek, q, 0);
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE meta SET value = %" PRId64 " WHERE key = 'next_mid'",
             at_crash);
    spool_close(f->sp);
    f->sp = NULL;
    peek_exec(f->peek, sql);
    fx_open_spool(f, THRESHOLD, 0);
    uint64_t after = spool_next_id(f->sp, SPOOL_ID_MID);
    assert_true(after > id);
    assert_int_equal(after, (uint64_t)at_crash);
}

/* A real crash: a child opens the spool, commits, and is SIGKILLed with
 * its worker running; the parent reopens and must see the message and
 * higher IDs. Meta rewound below a stored MID must not reuse the MID. */
static void test_ids_after_kill(void **state)
{
    struct fx *f = *state;
    spool_close(f->sp);
    f->sp = NULL;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        struct event_base *base = event_base_new();
        struct spool_params p = {.dir = f->dir, .memory_threshold = THRESHOLD};
        char err[256];
        struct spool *sp = spool_open(base, &p, err, sizeof(err));
        if (!sp)
            _exit(2);
        uint64_t ids[4];
        for (int k = 0; k < SPOOL_ID__COUNT; k++)
            for (int i = 0; i < 7000; i++)
                ids[k] = spool_next_id(sp, (enum spool_id_kind)k);
        char body[THRESHOLD * 3];
        fill_body(body, sizeof(body), 5);
        struct done d = {0};
        spool_msg_commit(make_msg(sp, ids[SPOOL_ID_MID], body, sizeof(body), 999), on_commit, &d);
        while (d.calls == 0)
            event_base_loop(base, EVLOOP_ONCE);
        ids[3] = (uint64_t)d.err;
        if (write(pfd[1], ids, sizeof(ids)) != sizeof(ids))
            _exit(3);
        raise(SIGKILL);
        _exit(4);
    }
    close(pfd[1]);
    uint64_t ids[4];
    assert_int_equal(read(pfd[0], ids, sizeof(ids)), sizeof(ids));
    close(pfd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(ids[3], 0);

    fx_open_spool(f, THRESHOLD, 0);
    for (int k = 0; k < SPOOL_ID__COUNT; k++)
        assert_true(spool_next_id(f->sp, (enum spool_id_kind)k) > ids[k]);
    uint64_t msgs;
    spool_counts(f->sp, &msgs, NULL);
    assert_int_equal(msgs, 1);
    char body[THRESHOLD * 3];
    fill_body(body, sizeof(body), 5);
    check_stored(f, ids[SPOOL_ID_MID], body, sizeof(body), true);

    /* meta lost/rewound: the highest stored MID still wins */
    spool_close(f->sp);
    f->sp = NULL;
    peek_exec(f->peek, "UPDATE meta SET value = 1");
    fx_open_spool(f, THRESHOLD, 0);
    assert_true(spool_next_id(f->sp, SPOOL_ID_MID) > ids[SPOOL_ID_MID]);
}

static bool log_contains(const char *dir, const char *needle)
{
    char path[PATH_MAX + 32], buf[16384];
    snprintf(path, sizeof(path), "%s/log/mail_logs", dir);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void test_recovery(void **state)
{
    struct fx *f = *state;
    enum { N = 5 };
    uint64_t mid[N];
    size_t len[N] = {500, THRESHOLD * 4, THRESHOLD * 4, 800, THRESHOLD * 2};
    char *body[N];
    struct done d[N];
    int calls = 0;
    for (int i = 0; i < N; i++) {
        mid[i] = spool_next_id(f->sp, SPOOL_ID_MID);
        body[i] = malloc(len[i]);
        fill_body(body[i], len[i], (unsigned)i);
        d[i] = (struct done){.mid = mid[i], .count = &calls};
        commit(make_msg(f->sp, mid[i], body[i], len[i], 1000), &d[i]);
    }
    run_until(f->base, &calls, N);
    spool_close(f->sp);
    f->sp = NULL;

    char sql[256], path[PATH_MAX + 64];
    /* 0: blob bytes changed, same length -> crc mismatch */
    snprintf(sql, sizeof(sql), "UPDATE msg SET body = zeroblob(500) WHERE mid = %" PRIu64, mid[0]);
    peek_exec(f->peek, sql);
    /* 1: body file truncated -> size mismatch */
    snprintf(path, sizeof(path), "%s/bodies/%" PRIu64, f->dir, mid[1]);
    assert_int_equal(truncate(path, THRESHOLD), 0);
    /* 4: body file deleted -> missing */
    snprintf(path, sizeof(path), "%s/bodies/%" PRIu64, f->dir, mid[4]);
    assert_int_equal(unlink(path), 0);
    /* orphans: files without rows, rcpt rows without msg */
    snprintf(path, sizeof(path), "%s/bodies/999999", f->dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    snprintf(path, sizeof(path), "%s/bodies/junk.tmp", f->dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    close(fd);
    peek_exec(f->peek, "INSERT INTO rcpt VALUES(424242, 1, 'x@y', NULL, 0, 0, 0, 0, NULL)");

    char logdir[PATH_MAX + 8];
    snprintf(logdir, sizeof(logdir), "%s/log", f->dir);
    assert_int_equal(maillog_open(logdir), 0);
    fx_open_spool(f, THRESHOLD, 0);
    maillog_close();

    uint64_t msgs, rcpts;
    spool_counts(f->sp, &msgs, &rcpts);
    assert_int_equal(msgs, 2);
    assert_int_equal(rcpts, 4);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM msg", 0), 2);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM rcpt", 0), 4);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM damaged_msg", 0), 3);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM damaged_rcpt", 0), 6);
    for (int i = 0; i < N; i++) {
        bool bad = i == 0 || i == 1 || i == 4;
        assert_int_equal(
            peek_int(f->peek, "SELECT count(*) FROM msg WHERE mid = ?1", (int64_t)mid[i]),
            bad ? 0 : 1);
        assert_int_equal(
            peek_int(f->peek, "SELECT count(*) FROM damaged_msg WHERE mid = ?1", (int64_t)mid[i]),
            bad ? 1 : 0);
    }
    check_stored(f, mid[2], body[2], len[2], true);
    check_stored(f, mid[3], body[3], len[3], false);
    char rel[64];
    snprintf(rel, sizeof(rel), "damaged/%" PRIu64, mid[1]);
    assert_true(path_exists(f, rel));
    snprintf(rel, sizeof(rel), "bodies/%" PRIu64, mid[1]);
    assert_false(path_exists(f, rel));
    assert_false(path_exists(f, "bodies/999999"));
    assert_false(path_exists(f, "bodies/junk.tmp"));

    char line[128];
    snprintf(line, sizeof(line), "Warning: MID %" PRIu64 " damaged in spool (crc mismatch)",
             mid[0]);
    assert_true(log_contains(f->dir, line));
    snprintf(line, sizeof(line), "MID %" PRIu64 " damaged in spool (size mismatch), moved aside",
             mid[1]);
    assert_true(log_contains(f->dir, line));
    snprintf(line, sizeof(line), "MID %" PRIu64 " damaged in spool (body file missing)", mid[4]);
    assert_true(log_contains(f->dir, line));
    assert_true(log_contains(f->dir, "2 messages, 4 recipients, 3 damaged, 2 orphan files"));

    /* a second start finds nothing more to do */
    reopen(f, THRESHOLD, 0);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM damaged_msg", 0), 3);
    spool_counts(f->sp, &msgs, NULL);
    assert_int_equal(msgs, 2);
    for (int i = 0; i < N; i++)
        free(body[i]);
}

/* RLIMIT_FSIZE makes write(2) past the limit fail with EFBIG (SIGXFSZ
 * ignored), which works as root where a read-only bodies/ would not. */
static void test_write_error_sticky(void **state)
{
    struct fx *f = *state;
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    char body[THRESHOLD * 4];
    fill_body(body, sizeof(body), 6);
    uint64_t mid = spool_next_id(f->sp, SPOOL_ID_MID);
    struct spool_msg *m = make_msg(f->sp, mid, body, 1000, 1000);

    lim = old;
    lim.rlim_cur = THRESHOLD + 1500; /* the spill succeeds, a later write is cut short */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = 0;
    size_t off = 1000;
    while (rc == 0 && off < sizeof(body)) {
        rc = spool_msg_write(m, body + off, 1000);
        if (rc == 0)
            off += 1000;
    }
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, oldsig);

    assert_int_equal(rc, -EFBIG);
    uint64_t size = spool_msg_size(m);
    assert_int_equal(size, off);
    /* sticky: later writes do nothing, even though the disk is fine now */
    assert_int_equal(spool_msg_write(m, "x", 1), -EFBIG);
    assert_int_equal(spool_msg_size(m), size);

    struct done d = {.mid = mid, .peek = f->peek};
    commit(m, &d);
    assert_int_equal(d.calls, 0);
    run_until(f->base, &d.calls, 1);
    assert_int_equal(d.err, -EFBIG);
    assert_false(d.visible);
    char rel[32];
    snprintf(rel, sizeof(rel), "bodies/%" PRIu64, mid);
    assert_false(path_exists(f, rel));
    uint64_t msgs;
    spool_counts(f->sp, &msgs, NULL);
    assert_int_equal(msgs, 0);
}

static void test_discard(void **state)
{
    struct fx *f = *state;
    char body[THRESHOLD * 2];
    fill_body(body, sizeof(body), 7);
    uint64_t mid = spool_next_id(f->sp, SPOOL_ID_MID);
    struct spool_msg *m = make_msg(f->sp, mid, body, sizeof(body), 1024);
    char rel[32];
    snprintf(rel, sizeof(rel), "bodies/%" PRIu64, mid);
    assert_true(path_exists(f, rel));
    spool_msg_discard(m);
    assert_false(path_exists(f, rel));
    spool_msg_discard(make_msg(f->sp, mid + 1, body, 10, 10)); /* in-memory */
    spool_msg_discard(NULL);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM msg", 0), 0);
}

static void test_low_space(void **state)
{
    struct fx *f = *state;
    assert_false(spool_low_space(f->sp));
    reopen(f, THRESHOLD, UINT64_MAX);
    assert_true(spool_low_space(f->sp));
    assert_true(spool_low_space(f->sp)); /* cached */
}

/* Closing with commits in flight completes them all before returning. */
static void test_close_runs_callbacks(void **state)
{
    struct fx *f = *state;
    enum { N = 20 };
    struct done d[N];
    char body[300];
    fill_body(body, sizeof(body), 8);
    for (int i = 0; i < N; i++) {
        uint64_t mid = spool_next_id(f->sp, SPOOL_ID_MID);
        d[i] = (struct done){.mid = mid, .peek = f->peek};
        commit(make_msg(f->sp, mid, body, sizeof(body), 300), &d[i]);
    }
    spool_close(f->sp);
    f->sp = NULL;
    for (int i = 0; i < N; i++) {
        assert_int_equal(d[i].calls, 1);
        assert_int_equal(d[i].err, 0);
        assert_true(d[i].visible);
    }
    fx_open_spool(f, THRESHOLD, 0);
}

struct bench {
    struct spool *sp;
    const char *body;
    size_t len;
    int started, done, total, errors;
};

/* ---- delivery side: load, body read, result transactions ---------------- */

struct loaded {
    int nmsgs;
    uint64_t mids[8];
    size_t nrcpts[8];
    uint32_t attempts[8][2];
    char sender[64];
};

static void on_load(void *ctx, const struct spool_msg_rec *m)
{
    struct loaded *l = ctx;
    if (l->nmsgs >= 8)
        return;
    l->mids[l->nmsgs] = m->env.mid;
    l->nrcpts[l->nmsgs] = m->nrcpts;
    for (size_t i = 0; i < m->nrcpts && i < 2; i++)
        l->attempts[l->nmsgs][i] = m->rcpts[i].attempts;
    snprintf(l->sender, sizeof(l->sender), "%s", m->env.sender);
    l->nmsgs++;
}

static void commit_two(struct fx *f, char *small, char *large)
{
    int count = 0;
    struct done d1 = {.count = &count}, d2 = {.count = &count};
    fill_body(small, 100, 1);
    fill_body(large, THRESHOLD * 2, 2);
    commit(make_msg(f->sp, 1, small, 100, 100), &d1);
    commit(make_msg(f->sp, 2, large, THRESHOLD * 2, 1000), &d2);
    run_until(f->base, &count, 2);
    assert_int_equal(d1.err, 0);
    assert_int_equal(d2.err, 0);
}

static void test_load_and_body(void **state)
{
    struct fx *f = *state;
    char small[100], large[THRESHOLD * 2];
    struct loaded l = {0};
    struct spool_body b;
    commit_two(f, small, large);
    assert_int_equal(spool_load(f->sp, on_load, &l), 0);
    assert_int_equal(l.nmsgs, 2);
    assert_int_equal(l.mids[0], 1);
    assert_int_equal(l.nrcpts[0], 2);
    assert_string_equal(l.sender, "alice@example.com");
    /* a blob is copied into memory */
    assert_int_equal(spool_body_open(f->sp, 1, &b), 0);
    assert_non_null(b.data);
    assert_int_equal(b.size, 100);
    assert_memory_equal(b.data, small, 100);
    spool_body_close(&b);
    /* a file is handed out as a descriptor */
    assert_int_equal(spool_body_open(f->sp, 2, &b), 0);
    assert_null(b.data);
    assert_true(b.fd >= 0);
    assert_int_equal(b.size, sizeof(large));
    char back[THRESHOLD * 2];
    assert_int_equal(pread(b.fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
    assert_memory_equal(back, large, sizeof(large));
    spool_body_close(&b);
    assert_int_equal(spool_body_open(f->sp, 99, &b), -ENOENT);
}

static void test_txn_results(void **state)
{
    struct fx *f = *state;
    char small[100], large[THRESHOLD * 2];
    int count = 0;
    struct done d = {.count = &count};
    uint64_t msgs, rcpts;
    commit_two(f, small, large);
    uint64_t before = spool_stats_batches(f->sp);

    /* message 1: rid 0 delivered, rid 1 deferred; message 2 finished, and
     * a DSN stored in the same transaction */
    struct spool_txn *t = spool_txn_new(f->sp);
    spool_txn_rcpt_done(t, 1, 0);
    spool_txn_rcpt_defer(t, 1, 1, 3, 1800000000000, "451 4.3.0 try later");
    spool_txn_rcpt_done(t, 2, 0);
    spool_txn_rcpt_done(t, 2, 1);
    spool_txn_msg_done(t, 2);
    spool_txn_add_msg(t, make_msg(f->sp, 3, small, 50, 50));
    spool_txn_commit(t, on_commit, &d);
    run_until(f->base, &count, 1);
    assert_int_equal(d.err, 0);
    /* one SQL transaction for all of it */
    assert_int_equal(spool_stats_batches(f->sp), before + 1);

    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM rcpt WHERE mid = ?1", 1), 1);
    assert_int_equal(peek_int(f->peek, "SELECT attempts FROM rcpt WHERE mid = ?1 AND rid = 1", 1),
                     3);
    assert_int_equal(
        peek_int(f->peek, "SELECT next_attempt FROM rcpt WHERE mid = ?1 AND rid = 1", 1),
        1800000000000);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM msg WHERE mid = ?1", 2), 0);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM rcpt WHERE mid = ?1", 2), 0);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM msg WHERE mid = ?1", 3), 1);
    /* the finished message's body file is gone, after the commit */
    assert_false(path_exists(f, "bodies/2"));
    spool_counts(f->sp, &msgs, &rcpts);
    assert_int_equal(msgs, 2);  /* 1 and the DSN */
    assert_int_equal(rcpts, 3); /* 1's deferred one and the DSN's two */

    /* the deferral survives a reopen */
    struct loaded l = {0};
    reopen(f, THRESHOLD, 0);
    assert_int_equal(spool_load(f->sp, on_load, &l), 0);
    assert_int_equal(l.nmsgs, 2);
    assert_int_equal(l.nrcpts[0], 1);
    assert_int_equal(l.attempts[0][0], 3);
}

static void test_txn_queued_before_close_commits(void **state)
{
    struct fx *f = *state;
    char small[100], large[THRESHOLD * 2];
    commit_two(f, small, large);
    /* a txn queued before spool_close() is still committed, and its
     * callback runs from the close's drain */
    struct done d = {0};
    struct spool_txn *t = spool_txn_new(f->sp);
    spool_txn_rcpt_done(t, 1, 0);
    spool_txn_commit(t, on_commit, &d);
    spool_close(f->sp);
    f->sp = NULL;
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.err, 0); /* queued before the close: still committed */
    fx_open_spool(f, THRESHOLD, 0);
    assert_int_equal(peek_int(f->peek, "SELECT count(*) FROM rcpt WHERE mid = ?1", 1), 1);
}

static void bench_one(struct bench *b);

static void bench_cb(void *arg, int err)
{
    struct bench *b = arg;
    b->done++;
    b->errors += err != 0;
    if (b->started < b->total)
        bench_one(b);
}

static void bench_one(struct bench *b)
{
    uint64_t mid = spool_next_id(b->sp, SPOOL_ID_MID);
    struct spool_msg *m = spool_msg_new(b->sp, mid);
    struct spool_envelope env = {.mid = mid, .icid = 1, .received_ms = 1, .sender = "a@b"};
    spool_msg_set_envelope(m, &env);
    spool_msg_add_rcpt(m, "c@d", NULL, 0);
    spool_msg_write(m, b->body, b->len);
    b->started++;
    spool_msg_commit(m, bench_cb, b);
}

static double bench_run(struct fx *f, uint64_t threshold, int total, uint64_t *batches)
{
    char body[4096];
    fill_body(body, sizeof(body), 9);
    reopen(f, threshold, 0);
    struct bench b = {.sp = f->sp, .body = body, .len = sizeof(body), .total = total};
    uint64_t before = spool_stats_batches(f->sp);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 50 && b.started < total; i++)
        bench_one(&b);
    run_until(f->base, &b.done, total);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(b.errors, 0);
    *batches = spool_stats_batches(f->sp) - before;
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    return total / secs;
}

/* Throughput figure: 4 KiB messages, 50 in flight (POSTERN_SPOOL_BENCH_N
 * sets the count; TMPDIR chooses the disk). */
static void test_throughput(void **state)
{
    struct fx *f = *state;
    const char *e = getenv("POSTERN_SPOOL_BENCH_N");
    int total = e ? atoi(e) : 2000;
    uint64_t batches;
    double rate = bench_run(f, 256 * 1024, total, &batches);
    print_message("# throughput: %d x 4 KiB blob bodies, 50 in flight: %.0f msg/s,"
                  " %" PRIu64 " transactions\n",
                  total, rate, batches);
    rate = bench_run(f, 1024, total, &batches);
    print_message("# throughput: %d x 4 KiB file bodies, 50 in flight: %.0f msg/s,"
                  " %" PRIu64 " transactions\n",
                  total, rate, batches);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema_pragmas, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_commit_small, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_commit_large, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_callback_after_commit_via_loop, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ids_across_reopen, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ids_reservation_ahead, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ids_after_kill, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_recovery, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_write_error_sticky, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_discard, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_low_space, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_runs_callbacks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_load_and_body, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_txn_results, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_txn_queued_before_close_commits, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_throughput, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
