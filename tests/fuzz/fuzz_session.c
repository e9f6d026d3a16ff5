/*
 * fuzz_session: libFuzzer harness driving a whole inbound SMTP session
 * (smtp_server.c) from bytes, on a real event_base, a real spool (in a
 * temporary directory, /dev/shm when available) and a real resolver.
 *
 * No listening socket: each input is one connection made with
 * socketpair(AF_UNIX) and handed to smtp_server_accept() with a fake peer
 * address; the listener is built by hand from the configuration's default
 * listener (policy_table_compile()), exactly as listener_set_apply() fills
 * it, so no port is bound and parallel fuzz jobs never collide.
 *
 * Input: byte 0 = flags, byte 1 = split seed, the rest = what the client
 * sends.
 *   flags bit 0: the peer is 127.0.0.1 (AF_INET): the pre-banner policy
 *                lookups run (PTR asked to 127.0.0.1:9, refused at once);
 *                otherwise an address family the lookup cannot use, so the
 *                policy is decided synchronously inside accept
 *   flags bit 1: with bit 0, send the first piece before the banner
 *                (pregreet path)
 *   flags bit 2: half-close the client side right after the last piece,
 *                even while a message is being committed (EOF during
 *                MODE_COMMIT); otherwise wait until the session is idle
 *                before the half-close, so pipelined commands after a
 *                message still run
 *   flags bit 3: the session is on a second listener whose hostname is 700
 *                octets (the configuration checks hostnames for spaces
 *                only), so banner, EHLO and the Received header carry it
 *   byte 1:      low 2 bits pick the largest piece (1, 7, 64 or 4096
 *                octets), the whole byte seeds an LCG for piece sizes; the
 *                loop runs between pieces so partial reads are exercised.
 *
 * Properties checked (abort() on failure):
 *   - every session is freed once the client is gone (no session is left
 *     in the server after the client's EOF: leaks and hangs);
 *   - every reply line is "[2-5]DD" followed by ' ' or '-' and ends in
 *     CRLF, with no CR, LF or NUL inside;
 *   - "250 ... Message N accepted" is never sent for a message that the
 *     server did not count as queued (the 250 comes only from the commit).
 *
 * FUZZ_SESSION_VERBOSE=1 copies the server's replies to stderr (to read
 * what a corpus file does: fuzz_session FILE).
 *
 * The spool is thrown away and recreated every FUZZ_RECYCLE inputs so it
 * does not grow without bound (nothing delivers the queued messages).
 */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "dns/resolver.h"
#include "policy/policy.h"
#include "queue/spool.h"
#include "smtp/listener.h"
#include "smtp/smtp_server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_RECYCLE 2000
/* Bound on one input's run: a session still present after this is a hang. */
#define FUZZ_DEADLINE_MS 10000

static const char fuzz_yaml[] = "hostname: fuzz.test\n"
                                "relay_domains: [example.com, .example.org]\n"
                                "limits:\n"
                                "  max_message_size: 64K\n"
                                "  max_recipients: 20\n"
                                "  max_command_line: 512\n"
                                "  max_text_line: 1000\n"
                                "  max_errors: 10\n"
                                "timeouts:\n"
                                "  command: 5m\n"
                                "  data: 5m\n"
                                "spool:\n"
                                "  memory_threshold: 2K\n"
                                "  min_free_space: 0\n"
                                "resolver:\n"
                                "  servers: [\"127.0.0.1:9\"]\n"
                                "  timeout: 100ms\n"
                                "  attempts: 1\n"
                                "connection_dns:\n"
                                "  deadline: 300ms\n"
                                "mail_flow_policies:\n"
                                "  - name: ACCEPTED\n"
                                "    max_message_size: 64K\n"
                                "    max_concurrent_connections: 1000\n"
                                "    max_messages_per_connection: 5\n"
                                "    max_recipients_per_message: 20\n"
                                "    max_recipients_per_hour: 0\n";

static struct {
    struct event_base *base;
    struct config *cfg;
    struct resolver *res;
    struct listener *lst;
    struct listener *lst_long; /* same, with a 700-octet hostname */
    struct spool *sp;
    struct smtp_server *srv;
    struct event *guard;
    char root[256]; /* mkdtemp'd directory */
    char dir[300];  /* the spool directory (root/spool) */
    unsigned long iter;
    bool verbose; /* FUZZ_SESSION_VERBOSE: replies to stderr */
} F;

static int fuzz_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void fuzz_rmtree(const char *dir)
{
    nftw(dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void fuzz_server_up(void)
{
    char err[256];
    struct spool_params p = {
        .dir = F.dir,
        .memory_threshold = F.cfg->spool.memory_threshold,
        .min_free_space = F.cfg->spool.min_free_space,
    };
    F.sp = spool_open(F.base, &p, err, sizeof(err));
    if (F.sp == NULL) {
        fprintf(stderr, "fuzz_session: spool_open: %s\n", err);
        abort();
    }
    F.srv = smtp_server_new(F.base, F.sp, F.res, F.cfg);
}

static void fuzz_server_down(void)
{
    smtp_server_free(F.srv);
    F.srv = NULL;
    spool_close(F.sp);
    F.sp = NULL;
    fuzz_rmtree(F.dir);
}

static void fuzz_teardown(void)
{
    if (F.base == NULL)
        return;
    fuzz_server_down();
    fuzz_rmtree(F.root);
    resolver_free(F.res);
    listener_unref(F.lst);
    listener_unref(F.lst_long);
    config_unref(F.cfg);
    event_free(F.guard);
    event_base_free(F.base);
    F.base = NULL;
}

static void fuzz_on_guard(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* One loop turn that returns after at most ms milliseconds. */
static void fuzz_turn(unsigned ms)
{
    struct timeval tv = {0, (suseconds_t)ms * 1000};
    if (ms == 0) {
        event_base_loop(F.base, EVLOOP_NONBLOCK);
        return;
    }
    event_add(F.guard, &tv);
    event_base_loop(F.base, EVLOOP_ONCE);
    event_del(F.guard);
}

/* A listener as listener_set_apply() builds it, without a socket. */
static struct listener *fuzz_listener(const struct cfg_listener *cl, const char *hostname)
{
    char err[256];
    struct listener *l = calloc(1, sizeof(*l));
    if (l == NULL)
        abort();
    l->refs = 1;
    l->name = strdup(cl->name);
    l->address = strdup(cl->address);
    l->port = cl->port;
    l->type = cl->type;
    l->hostname = strdup(hostname ? hostname : cl->hostname);
    l->hat = policy_table_compile(F.cfg, cl, err, sizeof(err));
    if (l->hat == NULL) {
        fprintf(stderr, "fuzz_session: policy_table_compile: %s\n", err);
        abort();
    }
    return l;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct config_error cerr;
    char err[256];
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(F.root, sizeof(F.root), "%s/fuzz_session.XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(F.root) == NULL) {
        perror("fuzz_session: mkdtemp");
        abort();
    }
    snprintf(F.dir, sizeof(F.dir), "%s/spool", F.root);
    F.verbose = getenv("FUZZ_SESSION_VERBOSE") != NULL;
    F.base = event_base_new();
    F.guard = evtimer_new(F.base, fuzz_on_guard, NULL);
    F.cfg = config_load_buffer("fuzz_session", fuzz_yaml, sizeof(fuzz_yaml) - 1, &cerr);
    if (F.cfg == NULL || F.cfg->nlisteners < 1) {
        config_error_format(&cerr, "fuzz_session", err, sizeof(err));
        fprintf(stderr, "fuzz_session: config: %s\n", err);
        abort();
    }
    F.res = resolver_new(F.base, &F.cfg->resolver, err, sizeof(err));
    if (F.res == NULL) {
        fprintf(stderr, "fuzz_session: resolver_new: %s\n", err);
        abort();
    }
    F.lst = fuzz_listener(&F.cfg->listeners[0], NULL);
    char longname[701];
    for (size_t i = 0; i < 700; i++)
        longname[i] = i % 64 == 63 ? '.' : 'h';
    memcpy(longname + 700 - 10, ".fuzz.test", 10);
    longname[700] = '\0';
    F.lst_long = fuzz_listener(&F.cfg->listeners[0], longname);
    fuzz_server_up();
    atexit(fuzz_teardown);
    return 0;
}

/* Replies received by the client end, checked line by line. */
struct fuzz_replies {
    char line[2048];
    size_t len;
    bool overlong;
    unsigned accepted; /* "250 2.0.0 Message N accepted" lines */
    size_t total;
};

static void fuzz_check_line(struct fuzz_replies *r)
{
    const char *l = r->line;
    size_t n = r->len; /* includes the LF */
    if (r->overlong)
        return;
    if (n < 6 || l[n - 2] != '\r' || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
        l[2] < '0' || l[2] > '9' || (l[3] != ' ' && l[3] != '-')) {
        fprintf(stderr, "fuzz_session: malformed reply line: %.*s\n", (int)n, l);
        abort();
    }
    for (size_t i = 0; i < n - 2; i++)
        if (l[i] == '\r' || l[i] == '\0') {
            fprintf(stderr, "fuzz_session: CR/NUL inside a reply line: %.*s\n", (int)n, l);
            abort();
        }
    if (n > 24 && memcmp(l, "250 2.0.0 Message ", 18) == 0 && strstr(l, " accepted") != NULL)
        r->accepted++;
}

/* Read and check whatever the server wrote. Returns bytes read, or -1 at
 * EOF. */
static long fuzz_drain(int fd, struct fuzz_replies *r)
{
    char buf[8192];
    long got = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n == 0)
            return got > 0 ? got : -1;
        if (n < 0)
            return got;
        got += n;
        r->total += (size_t)n;
        if (F.verbose)
            fwrite(buf, 1, (size_t)n, stderr);
        for (ssize_t i = 0; i < n; i++) {
            if (r->len < sizeof(r->line))
                r->line[r->len++] = buf[i];
            else
                r->overlong = true;
            if (buf[i] == '\n') {
                fuzz_check_line(r);
                r->len = 0;
                r->overlong = false;
            }
        }
    }
}

static uint32_t fuzz_lcg(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

static long fuzz_ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

static void fuzz_hang(const char *what)
{
    fprintf(stderr, "fuzz_session: %s (sessions left: %u)\n", what,
            smtp_server_stats(F.srv)->current);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t max_piece[] = {1, 7, 64, 4096};
    struct fuzz_replies rep = {0};
    struct timespec t0;
    int sv[2];

    if (size < 2)
        return 0;
    unsigned flags = data[0];
    uint32_t seed = data[1] * 2654435761u + 1;
    size_t piece_max = max_piece[data[1] & 3];
    const uint8_t *in = data + 2;
    size_t len = size - 2;
    bool inet = flags & 1, pregreet = inet && (flags & 2), early_eof = flags & 4;

    if (++F.iter % FUZZ_RECYCLE == 0) {
        fuzz_server_down();
        fuzz_server_up();
    }
    const struct smtp_server_stats *st = smtp_server_stats(F.srv);
    uint64_t queued_before = st->messages;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("fuzz_session: socketpair");
        abort();
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (inet) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(40000);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        ss.ss_family = AF_UNIX; /* no address: the policy decides at once */
    }
    smtp_server_accept(F.srv, (flags & 8) ? F.lst_long : F.lst, sv[0], (struct sockaddr *)&ss,
                       sizeof(ss));

    size_t pos = 0;
    bool gone = false; /* the server closed its end */
    if (inet && !pregreet) {
        /* wait for the banner (or the close) before talking */
        while (rep.total == 0 && !gone && st->current > 0) {
            fuzz_turn(5);
            if (fuzz_drain(sv[1], &rep) < 0)
                gone = true;
            if (fuzz_ms_since(&t0) > FUZZ_DEADLINE_MS)
                fuzz_hang("no banner");
        }
    }
    while (pos < len && !gone) {
        size_t n = 1 + fuzz_lcg(&seed) % piece_max;
        if (n > len - pos)
            n = len - pos;
        ssize_t w = send(sv[1], in + pos, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            gone = true; /* EPIPE/ECONNRESET: the session closed */
            break;
        }
        if (w > 0)
            pos += (size_t)w;
        fuzz_turn(w > 0 ? 0 : 1);
        if (fuzz_drain(sv[1], &rep) < 0)
            gone = true;
        if (fuzz_ms_since(&t0) > FUZZ_DEADLINE_MS)
            fuzz_hang("input not consumed");
    }
    if (!early_eof) {
        /* let the session finish what it has (commits included) */
        int idle = 0;
        while (!gone && st->current > 0 && idle < 3) {
            fuzz_turn(1);
            long got = fuzz_drain(sv[1], &rep);
            if (got < 0)
                gone = true;
            idle = got > 0 ? 0 : idle + 1;
            if (fuzz_ms_since(&t0) > FUZZ_DEADLINE_MS)
                fuzz_hang("session never idle");
        }
    }
    shutdown(sv[1], SHUT_WR);
    while (st->current > 0) {
        fuzz_turn(2);
        fuzz_drain(sv[1], &rep);
        if (fuzz_ms_since(&t0) > FUZZ_DEADLINE_MS)
            fuzz_hang("session not freed after the client's EOF");
    }
    fuzz_drain(sv[1], &rep);
    close(sv[1]);
    /* let any loose completions run (nothing may refer to the session) */
    fuzz_turn(0);
    if (rep.accepted > st->messages - queued_before) {
        fprintf(stderr, "fuzz_session: %u \"accepted\" replies for %llu queued messages\n",
                rep.accepted, (unsigned long long)(st->messages - queued_before));
        abort();
    }
    return 0;
}
