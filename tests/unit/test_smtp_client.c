/*
 * test_smtp_client: the outbound SMTP client against real servers on
 * loopback: tests/tools/smtp_peer.py (configurable: masked banners, EHLO
 * failures, STARTTLS with injection, stalls, resets, recording of exactly
 * what arrived) and Postfix's smtp-sink.
 *
 * Each test starts a peer with its options, runs one client on a fresh
 * event_base until the client is gone (failed, or QUIT done: the loop then
 * has no events left, which also shows the client leaves none behind), and
 * checks the callbacks and what the peer recorded. A guard timer fails the
 * test if the client neither fails nor gets through its script in time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "delivery/smtp_client.h"

#define MAX_MSGS 4

/* ---- fixtures: temp dir, TLS material ------------------------------------ */

static char tmpdir[256];
static char certfile[300], keyfile[300];
static SSL_CTX *tls_ctx;

static int run_cmd(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int group_setup(void **state)
{
    char err[256];
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/postern-client-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(certfile, sizeof(certfile), "%s/cert.pem", tmpdir);
    snprintf(keyfile, sizeof(keyfile), "%s/key.pem", tmpdir);
    char *const req[] = {"/usr/bin/openssl",
                         "req",
                         "-x509",
                         "-newkey",
                         "ec",
                         "-pkeyopt",
                         "ec_paramgen_curve:prime256v1",
                         "-nodes",
                         "-keyout",
                         keyfile,
                         "-out",
                         certfile,
                         "-days",
                         "2",
                         "-subj",
                         "/CN=peer.test",
                         NULL};
    if (run_cmd(req) != 0)
        return -1;
    tls_ctx = smtp_client_tls_ctx_new(err, sizeof(err));
    return tls_ctx == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    char *const rm[] = {"/bin/rm", "-rf", tmpdir, NULL};
    (void)state;
    SSL_CTX_free(tls_ctx);
    run_cmd(rm);
    return 0;
}

/* ---- peers ------------------------------------------------------------------- */

struct peer {
    pid_t pid;
    int port;
    char dir[300];    /* dump_dir */
    char record[320]; /* JSON lines */
};

/* Start smtp_peer.py with a JSON object of options (without the braces);
 * record and dump_dir are added. */
static void peer_start(struct peer *pr, const char *json_opts)
{
    static int seq;
    const char *src = getenv("POSTERN_SRCDIR");
    char script[512], json[4096], line[64];
    int out[2];

    assert_non_null(src);
    snprintf(script, sizeof(script), "%s/tests/tools/smtp_peer.py", src);
    snprintf(pr->dir, sizeof(pr->dir), "%s/peer%d", tmpdir, ++seq);
    assert_int_equal(mkdir(pr->dir, 0700), 0);
    snprintf(pr->record, sizeof(pr->record), "%s/record.jsonl", pr->dir);
    snprintf(json, sizeof(json), "{\"record\":\"%s\",\"dump_dir\":\"%s\"%s%s}", pr->record, pr->dir,
             json_opts[0] ? "," : "", json_opts);
    assert_int_equal(pipe(out), 0);
    pr->pid = fork();
    assert_true(pr->pid >= 0);
    if (pr->pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execl("/usr/bin/python3", "python3", script, "--json", json, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    /* "READY <port>\n" within 10 s */
    struct pollfd pfd = {out[0], POLLIN, 0};
    size_t got = 0;
    while (got < sizeof(line) - 1 && memchr(line, '\n', got) == NULL) {
        assert_true(poll(&pfd, 1, 10000) == 1);
        ssize_t n = read(out[0], line + got, sizeof(line) - 1 - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    line[got] = '\0';
    close(out[0]);
    assert_int_equal(sscanf(line, "READY %d", &pr->port), 1);
}

static void peer_stop(struct peer *pr)
{
    int st;
    kill(pr->pid, SIGTERM);
    waitpid(pr->pid, &st, 0);
}

/* A free loopback port (bound and released: nothing listens there). */
static int free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t r = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[r] = '\0';
    if (len)
        *len = r;
    return buf;
}

static int count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Count of lines in the peer's record containing s. */
static int record_count(const struct peer *pr, const char *s)
{
    char *rec = read_file(pr->record, NULL);
    int n = rec ? count_substr(rec, s) : 0;
    free(rec);
    return n;
}

/* ---- driving a client ---------------------------------------------------------- */

struct run {
    struct event_base *base;
    struct event *guard;
    const struct smtp_client_msg *msgs[MAX_MSGS];
    size_t nmsgs, sent;
    int readies, dones;
    bool failed, guard_fired;
    struct smtp_client_error err;
    struct smtp_client_info info;
    /* copies of each done() result */
    struct {
        enum smtp_client_stage stage;
        int mail, data, rcpt[4];
        char data_enh[16];
        bool local_error;
    } res[MAX_MSGS];
};

static void on_ready(void *arg, struct smtp_client *c)
{
    struct run *r = arg;
    r->readies++;
    r->info = *smtp_client_info(c);
    if (r->sent < r->nmsgs) {
        smtp_client_send(c, r->msgs[r->sent++]);
        return;
    }
    event_del(r->guard); /* the client's QUIT ends the loop */
    smtp_client_quit(c);
}

static void on_done(void *arg, struct smtp_client *c, const struct smtp_client_result *res)
{
    struct run *r = arg;
    assert_true(r->dones < MAX_MSGS);
    r->res[r->dones].stage = res->stage;
    r->res[r->dones].mail = res->mail.code;
    r->res[r->dones].data = res->data.code;
    snprintf(r->res[r->dones].data_enh, 16, "%s", res->data.enhanced);
    r->res[r->dones].local_error = res->local_error;
    for (size_t i = 0; i < res->nrcpts && i < 4; i++)
        r->res[r->dones].rcpt[i] = res->rcpt[i].code;
    r->dones++;
}

static void on_failed(void *arg, struct smtp_client *c, const struct smtp_client_error *err)
{
    struct run *r = arg;
    r->failed = true;
    r->err = *err;
    r->info = *smtp_client_info(c);
    event_del(r->guard);
}

static const struct smtp_client_ops ops = {on_ready, on_done, on_failed};

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    struct run *r = arg;
    r->guard_fired = true;
    event_base_loopbreak(r->base);
}

static struct smtp_client_params params(struct sockaddr_in *sin, int port, enum smtp_tls_policy tls)
{
    struct smtp_client_params p = {0};
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p.dcid = 1;
    p.helo_name = "gw.test";
    p.host = "peer.test";
    p.addr = (struct sockaddr *)sin;
    p.addrlen = sizeof(*sin);
    p.tls = tls;
    p.tls_ctx = tls == SMTP_TLS_NONE ? NULL : tls_ctx;
    p.connect_timeout_ms = 2000;
    p.command_timeout_ms = 3000;
    p.data_block_timeout_ms = 3000;
    p.data_done_timeout_ms = 3000;
    return p;
}

/* Run one client until it is gone; guard after 20 s. */
static void run_client(struct run *r, const struct smtp_client_params *p)
{
    struct timeval tv = {20, 0};
    r->base = event_base_new();
    r->guard = evtimer_new(r->base, on_guard, r);
    evtimer_add(r->guard, &tv);
    smtp_client_start(r->base, p, &ops, r);
    event_base_dispatch(r->base);
    assert_false(r->guard_fired);
    event_free(r->guard);
    event_base_free(r->base);
}

static struct smtp_client_msg msg_mem(const char *body, const char *const *rcpts, size_t n)
{
    struct smtp_client_msg m = {0};
    m.sender = "sender@gw.test";
    m.rcpts = rcpts;
    m.nrcpts = n;
    m.body = body;
    m.size = strlen(body);
    m.body_fd = -1;
    return m;
}

static const char *rcpt1[] = {"rcpt@peer.test"};

/* Exact wire handling: dot-stuffing, bare LF and bare CR repaired, final
 * CRLF added; the peer's unstuffed copy must be the normalised body. */
static const char tricky_body[] = "Subject: t\n\n.leading dot\r\n..two dots\nbare cr\rcrlf\r\n.\n"
                                  "x.y\n.\r\nend";
static const char tricky_expect[] = "Subject: t\r\n\r\n.leading dot\r\n..two dots\r\nbare cr\r\n"
                                    "crlf\r\n.\r\nx.y\r\n.\r\nend\r\n";

static void check_dump(const struct peer *pr, int n, const char *expect, size_t len)
{
    char path[400];
    size_t got_len;
    snprintf(path, sizeof(path), "%s/msg-%d.eml", pr->dir, n);
    char *got = read_file(path, &got_len);
    assert_non_null(got);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, expect, len);
    free(got);
}

static void deliver_tricky(const char *peer_opts, bool expect_pipelining)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    struct smtp_client_msg m = msg_mem(tricky_body, rcpt1, 1);
    peer_start(&pr, peer_opts);
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.msgs[0] = &m;
    r.nmsgs = 1;
    run_client(&r, &p);
    peer_stop(&pr);
    assert_false(r.failed);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.res[0].stage, SC_DOT);
    assert_int_equal(r.res[0].mail, 250);
    assert_int_equal(r.res[0].rcpt[0], 250);
    assert_int_equal(r.res[0].data, 250);
    assert_int_equal(r.info.pipelining, expect_pipelining);
    check_dump(&pr, 1, tricky_expect, sizeof(tricky_expect) - 1);
    assert_int_equal(record_count(&pr, "\"bare_lf\":false"), 1);
    assert_int_equal(record_count(&pr, "\"rcpts\":[\"rcpt@peer.test\"]"), 1);
    assert_int_equal(record_count(&pr, "\"mail_from\":\"sender@gw.test\""), 1);
}

static void test_delivery_pipelining(void **state)
{
    (void)state;
    deliver_tricky("", true);
}

static void test_delivery_no_pipelining(void **state)
{
    (void)state;
    deliver_tricky("\"ehlo\":[\"SIZE 100000\",\"8BITMIME\"]", false);
}

/* Two messages on one connection; null sender; 8BITMIME and SIZE params. */
static void test_connection_reuse(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    const char *rcpts[] = {"a@peer.test", "b@peer.test"};
    struct smtp_client_msg m1 = msg_mem("first\r\n", rcpts, 2);
    struct smtp_client_msg m2 = msg_mem("second\r\n", rcpts + 1, 1);
    (void)state;
    m2.sender = "";
    m2.body_8bit = true;
    peer_start(&pr, "");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.msgs[0] = &m1;
    r.msgs[1] = &m2;
    r.nmsgs = 2;
    run_client(&r, &p);
    peer_stop(&pr);
    assert_false(r.failed);
    assert_int_equal(r.dones, 2);
    assert_int_equal(r.readies, 3);
    assert_int_equal(record_count(&pr, "\"type\":\"connect\""), 1);
    assert_int_equal(record_count(&pr, "\"type\":\"message\""), 2);
    assert_int_equal(record_count(&pr, "\"mail_from\":\"\""), 1);
    assert_int_equal(record_count(&pr, "\"mail_params\":\"SIZE=7\""), 1);
    assert_int_equal(record_count(&pr, "\"mail_params\":\"SIZE=8 BODY=8BITMIME\""), 1);
    check_dump(&pr, 1, "first\r\n", 7);
    check_dump(&pr, 2, "second\r\n", 8);
}

static void rcpt_partly(const char *extra)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    char opts[512];
    const char *rcpts[] = {"good@peer.test", "bad@peer.test", "later@peer.test"};
    struct smtp_client_msg m = msg_mem("hi\r\n", rcpts, 3);
    snprintf(opts, sizeof(opts),
             "\"rcpt_replies\":{\"bad@peer.test\":\"550 5.1.1 No such user\","
             "\"later@peer.test\":\"450 4.2.0 Try later\"}%s",
             extra);
    peer_start(&pr, opts);
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.msgs[0] = &m;
    r.nmsgs = 1;
    run_client(&r, &p);
    peer_stop(&pr);
    assert_false(r.failed);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.res[0].stage, SC_DOT);
    assert_int_equal(r.res[0].rcpt[0], 250);
    assert_int_equal(r.res[0].rcpt[1], 550);
    assert_int_equal(r.res[0].rcpt[2], 450);
    assert_int_equal(record_count(&pr, "\"rcpts\":[\"good@peer.test\"]"), 1);
}

static void test_rcpt_partly_refused(void **state)
{
    (void)state;
    rcpt_partly("");
    rcpt_partly(",\"ehlo\":[\"8BITMIME\"]");
}

/* A refused transaction: done() with the stage, no message, RSET, and
 * ready() again for the next one. */
static void refused_tx(const char *opts, enum smtp_client_stage stage, int mail, int rcpt)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    struct smtp_client_msg m = msg_mem("hi\r\n", rcpt1, 1);
    peer_start(&pr, opts);
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.msgs[0] = &m;
    r.msgs[1] = &m;
    r.nmsgs = 2;
    run_client(&r, &p);
    peer_stop(&pr);
    assert_false(r.failed);
    assert_int_equal(r.dones, 2);
    assert_int_equal(r.readies, 3);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r.res[i].stage, stage);
        assert_int_equal(r.res[i].mail, mail);
        assert_int_equal(r.res[i].rcpt[0], rcpt);
        assert_false(r.res[i].local_error);
    }
    assert_int_equal(record_count(&pr, "\"type\":\"message\""), 0);
    assert_int_equal(record_count(&pr, "\"type\":\"connect\""), 1);
}

static void test_mail_452(void **state)
{
    (void)state;
    /* pipelined: RCPT and DATA replies still read (and 503s ignored) */
    refused_tx("\"mail_reply\":\"452 4.3.1 Insufficient system resources\"", SC_MAIL, 452, 503);
    /* one command at a time: nothing after MAIL */
    refused_tx("\"mail_reply\":\"452 4.3.1 Insufficient system resources\",\"ehlo\":[]", SC_MAIL,
               452, 0);
}

static void test_all_rcpt_refused(void **state)
{
    (void)state;
    refused_tx("\"rcpt_reply\":\"550 5.1.1 No such user\"", SC_RCPT, 250, 550);
    refused_tx("\"rcpt_reply\":\"550 5.1.1 No such user\",\"ehlo\":[]", SC_RCPT, 250, 550);
}

/* Run a client that must fail; returns the run for checks. */
static void expect_failure(struct run *r, const char *opts, enum smtp_tls_policy tls,
                           enum smtp_client_stage stage)
{
    struct peer pr;
    struct sockaddr_in sin;
    static struct smtp_client_msg m;
    m = msg_mem("hello\r\n", rcpt1, 1);
    peer_start(&pr, opts);
    struct smtp_client_params p = params(&sin, pr.port, tls);
    p.command_timeout_ms = 500;
    p.data_done_timeout_ms = 500;
    r->msgs[0] = &m;
    r->nmsgs = 1;
    run_client(r, &p);
    peer_stop(&pr);
    assert_true(r->failed);
    assert_int_equal(r->err.stage, stage);
}

static void test_banner_452(void **state)
{
    struct run r = {0};
    char fmt[256];
    (void)state;
    expect_failure(&r, "\"banner\":\"452 4.3.1 Insufficient system resources\"", SMTP_TLS_NONE,
                   SC_BANNER);
    assert_int_equal(r.err.reply.code, 452);
    assert_string_equal(r.err.reply.enhanced, "4.3.1");
    smtp_reply_format(&r.err.reply, fmt, sizeof(fmt));
    assert_string_equal(fmt, "('452', ['4.3.1 Insufficient system resources'])");
    assert_false(r.err.timeout);
    assert_int_equal(r.readies, 0);
}

static void test_ehlo_4xx(void **state)
{
    struct run r = {0};
    (void)state;
    expect_failure(&r, "\"ehlo_reply\":\"421 4.3.2 Service not available\"", SMTP_TLS_NONE,
                   SC_EHLO);
    assert_int_equal(r.err.reply.code, 421);
    assert_int_equal(r.readies, 0);
}

static void test_ehlo_5xx_helo_fallback(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    struct smtp_client_msg m = msg_mem("via helo\r\n", rcpt1, 1);
    (void)state;
    peer_start(&pr, "\"no_ehlo\":true");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_PREFERRED);
    r.msgs[0] = &m;
    r.nmsgs = 1;
    run_client(&r, &p);
    peer_stop(&pr);
    assert_false(r.failed);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.res[0].stage, SC_DOT);
    assert_false(r.info.esmtp);
    assert_false(r.info.pipelining);
    assert_int_equal(record_count(&pr, "\"helo\":\"gw.test\""), 1);
    assert_int_equal(record_count(&pr, "\"mail_params\":\"\""), 1);
}

static void test_ehlo_5xx_then_helo_refused(void **state)
{
    struct run r = {0};
    (void)state;
    expect_failure(&r, "\"no_ehlo\":true,\"helo_reply\":\"550 5.7.1 go away\"", SMTP_TLS_NONE,
                   SC_EHLO);
    assert_int_equal(r.err.reply.code, 550);
}

static void test_masked(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    struct smtp_client_msg m = msg_mem("x\r\n", rcpt1, 1);
    (void)state;
    /* the firewall's work: banner masked, STARTTLS masked */
    peer_start(&pr, "\"banner\":\"220 ****2***0**\",\"ehlo\":[\"PIPELINING\",\"XXXXXXXA\"]");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_PREFERRED);
    r.msgs[0] = &m;
    r.nmsgs = 1;
    run_client(&r, &p);
    peer_stop(&pr);
    assert_false(r.failed);
    assert_true(r.info.masked_banner);
    assert_true(r.info.masked_ehlo);
    assert_false(r.info.starttls);
    assert_true(r.info.pipelining);
    assert_string_equal(r.info.banner, "****2***0**");
    assert_int_equal(r.dones, 1);

    /* with TLS required, the failure names both symptoms */
    struct run r2 = {0};
    expect_failure(&r2, "\"banner\":\"220 *****02****0****0\",\"ehlo\":[\"XXXXXXXA\"]",
                   SMTP_TLS_REQUIRED, SC_STARTTLS);
    assert_true(r2.err.tls_required);
    assert_true(r2.err.masked_banner);
    assert_true(r2.err.masked_ehlo);
}

static void test_unmasked_flags(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    (void)state;
    peer_start(&pr, "\"ehlo\":[\"PIPELINING\",\"SIZE 2000\",\"SMTPUTF8\",\"8BITMIME\","
                    "\"CHUNKING\",\"DSN\",\"XFORWARD NAME\"]");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    run_client(&r, &p);
    peer_stop(&pr);
    assert_false(r.failed);
    assert_int_equal(r.readies, 1);
    assert_false(r.info.masked_banner);
    assert_false(r.info.masked_ehlo);
    assert_true(r.info.esmtp && r.info.pipelining && r.info.smtputf8 && r.info.eightbitmime);
    assert_true(r.info.chunking && r.info.dsn && r.info.size_offered);
    assert_int_equal(r.info.max_size, 2000);
    assert_string_equal(r.info.banner, "peer.test ESMTP smtp_peer");
}

static void tls_peer_opts(char *buf, size_t len, const char *extra)
{
    snprintf(buf, len, "\"starttls\":true,\"cert\":\"%s\",\"key\":\"%s\"%s", certfile, keyfile,
             extra);
}

static void deliver_tls(const char *extra, enum smtp_tls_policy tls, bool expect_tls, struct run *r)
{
    struct peer pr;
    struct sockaddr_in sin;
    char opts[1024];
    static struct smtp_client_msg m;
    m = msg_mem(tricky_body, rcpt1, 1);
    tls_peer_opts(opts, sizeof(opts), extra);
    peer_start(&pr, opts);
    struct smtp_client_params p = params(&sin, pr.port, tls);
    r->msgs[0] = &m;
    r->nmsgs = 1;
    run_client(r, &p);
    peer_stop(&pr);
    assert_false(r->failed);
    assert_int_equal(r->dones, 1);
    assert_int_equal(r->res[0].stage, SC_DOT);
    assert_int_equal(r->info.tls_active, expect_tls);
    assert_int_equal(record_count(&pr, expect_tls ? "\"tls\":true" : "\"tls\":false"), 1);
    check_dump(&pr, 1, tricky_expect, sizeof(tricky_expect) - 1);
}

static void test_starttls_preferred(void **state)
{
    struct run r = {0};
    (void)state;
    deliver_tls("", SMTP_TLS_PREFERRED, true, &r);
    assert_true(strncmp(r.info.tls_version, "TLSv1.", 6) == 0);
    assert_true(r.info.tls_cipher[0] != '\0');
    assert_int_equal(r.info.starttls_discarded, 0);
    assert_true(r.info.pipelining); /* learnt again after TLS */
    struct run r2 = {0};
    deliver_tls("", SMTP_TLS_REQUIRED, true, &r2);
    struct run r3 = {0};
    deliver_tls("", SMTP_TLS_NONE, false, &r3);
}

/* CVE-2021-38371 class: lines the peer sends after its 220 and before the
 * handshake must be dropped; parsed as the reply to the next EHLO they
 * would fail the session. */
static void test_starttls_injection_discarded(void **state)
{
    struct run r = {0};
    (void)state;
    deliver_tls(",\"inject\":\"554-injected\\n554 5.7.0 injected\"", SMTP_TLS_REQUIRED, true, &r);
    assert_int_equal(r.info.starttls_discarded, strlen("554-injected\r\n554 5.7.0 injected\r\n"));
}

static void test_starttls_refused(void **state)
{
    struct run r = {0};
    char opts[1024];
    (void)state;
    /* preferred: go on in plain text */
    deliver_tls(",\"starttls_reply\":\"454 4.7.0 TLS not available\"", SMTP_TLS_PREFERRED, false,
                &r);
    /* required: fail, with the refusal */
    struct run r2 = {0};
    tls_peer_opts(opts, sizeof(opts), ",\"starttls_reply\":\"454 4.7.0 TLS not available\"");
    expect_failure(&r2, opts, SMTP_TLS_REQUIRED, SC_STARTTLS);
    assert_true(r2.err.tls_required);
    assert_int_equal(r2.err.reply.code, 454);
}

static void test_starttls_required_not_offered(void **state)
{
    struct run r = {0};
    (void)state;
    expect_failure(&r, "", SMTP_TLS_REQUIRED, SC_STARTTLS);
    assert_true(r.err.tls_required);
    assert_int_equal(r.err.reply.code, 0);
    assert_int_equal(r.readies, 0);
}

static void test_connect_refused(void **state)
{
    struct sockaddr_in sin;
    struct run r = {0};
    (void)state;
    struct smtp_client_params p = params(&sin, free_port(), SMTP_TLS_NONE);
    run_client(&r, &p);
    assert_true(r.failed);
    assert_int_equal(r.err.stage, SC_CONNECT);
    assert_int_equal(r.err.sys_errno, ECONNREFUSED);
    assert_false(r.err.timeout);
}

static void test_stalls_time_out(void **state)
{
    static const struct {
        const char *stall;
        enum smtp_client_stage stage;
    } stalls[] = {{"banner", SC_BANNER}, {"ehlo", SC_EHLO}, {"mail", SC_MAIL},
                  {"rcpt", SC_RCPT},     {"data", SC_DATA}, {"dot", SC_DOT}};
    char opts[128];
    (void)state;
    for (size_t i = 0; i < sizeof(stalls) / sizeof(stalls[0]); i++) {
        struct run r = {0};
        print_message("# stall at %s\n", stalls[i].stall);
        snprintf(opts, sizeof(opts), "\"stall\":\"%s\"", stalls[i].stall);
        expect_failure(&r, opts, SMTP_TLS_NONE, stalls[i].stage);
        assert_true(r.err.timeout);
        assert_int_equal(r.err.sys_errno, ETIMEDOUT);
        assert_int_equal(r.dones, 0);
    }
}

static void test_resets(void **state)
{
    static const struct {
        const char *reset;
        enum smtp_client_stage stage;
    } resets[] = {{"banner", SC_BANNER}, {"ehlo", SC_EHLO}, {"mail", SC_MAIL},
                  {"rcpt", SC_RCPT},     {"data", SC_DATA}, {"dot", SC_DOT}};
    char opts[128];
    (void)state;
    for (size_t i = 0; i < sizeof(resets) / sizeof(resets[0]); i++) {
        struct run r = {0};
        print_message("# reset at %s\n", resets[i].reset);
        snprintf(opts, sizeof(opts), "\"reset\":\"%s\"", resets[i].reset);
        expect_failure(&r, opts, SMTP_TLS_NONE, resets[i].stage);
        assert_false(r.err.timeout);
        assert_true(r.err.eof || r.err.sys_errno == ECONNRESET);
        assert_int_equal(r.dones, 0);
    }
}

/* A body bigger than the socket buffers, reset by the peer part way. */
static void test_reset_mid_data(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    size_t len = 4 * 1024 * 1024;
    char *body = malloc(len + 1);
    (void)state;
    for (size_t i = 0; i < len; i++)
        body[i] = (i % 64 == 63) ? '\n' : 'a';
    body[len] = '\0';
    struct smtp_client_msg m = msg_mem(body, rcpt1, 1);
    peer_start(&pr, "\"reset\":\"body\",\"reset_after\":100000");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.msgs[0] = &m;
    r.nmsgs = 1;
    run_client(&r, &p);
    peer_stop(&pr);
    free(body);
    assert_true(r.failed);
    assert_int_equal(r.err.stage, SC_DOT);
    assert_true(r.err.eof || r.err.sys_errno == ECONNRESET || r.err.sys_errno == EPIPE);
    assert_int_equal(r.dones, 0);
    assert_int_equal(record_count(&pr, "\"type\":\"message\""), 0);
}

/* Replies that break the syntax fail the session with what came. */
static void test_malformed_replies(void **state)
{
    struct run r = {0};
    (void)state;
    expect_failure(&r, "\"banner\":\"220-first\\n250 second\"", SMTP_TLS_NONE, SC_BANNER);
    assert_true(r.err.malformed);
    assert_int_equal(r.err.reply.code, 220);
    assert_int_equal(r.err.reply.nlines, 1);

    struct run r2 = {0};
    expect_failure(&r2, "\"mail_reply\":\"2x0 what\"", SMTP_TLS_NONE, SC_MAIL);
    assert_true(r2.err.malformed);

    struct run r3 = {0};
    char opts[2600];
    memset(opts, 0, sizeof(opts));
    strcpy(opts, "\"banner\":\"220 ");
    memset(opts + strlen(opts), 'z', 2100);
    strcat(opts, "\"");
    expect_failure(&r3, opts, SMTP_TLS_NONE, SC_BANNER);
    assert_true(r3.err.malformed);

    struct run r4 = {0};
    expect_failure(&r4, "\"banner\":\"220 ok\\n\\n\"", SMTP_TLS_NONE, SC_EHLO);
}

/* 5 MB from a file descriptor, streamed; the peer must get it exactly. */
static void test_large_file_body(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    char path[400];
    size_t len = 5 * 1024 * 1024;
    char *body = malloc(len);
    (void)state;
    for (size_t i = 0; i < len; i++)
        body[i] = (char)('a' + (i % 26));
    for (size_t i = 76; i + 1 < len; i += 78) {
        body[i] = '\r';
        body[i + 1] = '\n';
    }
    body[len - 2] = '\r';
    body[len - 1] = '\n';
    snprintf(path, sizeof(path), "%s/big.eml", tmpdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, body, len), (ssize_t)len);
    struct smtp_client_msg m = msg_mem("", rcpt1, 1);
    m.body = NULL;
    m.body_fd = fd;
    m.size = len;
    peer_start(&pr, "");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.msgs[0] = &m;
    r.nmsgs = 1;
    run_client(&r, &p);
    peer_stop(&pr);
    close(fd); /* the client worked on its own dup */
    assert_false(r.failed);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.res[0].stage, SC_DOT);
    check_dump(&pr, 1, body, len);
    free(body);
    unlink(path);
}

static void test_local_errors(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    (void)state;
    struct smtp_client_msg big = msg_mem("0123456789\r\n", rcpt1, 1);
    big.size = 5000; /* what the spool says */
    struct smtp_client_msg utf8 = msg_mem("x\r\n", rcpt1, 1);
    utf8.smtputf8 = true;
    peer_start(&pr, "\"ehlo\":[\"PIPELINING\",\"SIZE 1000\"]");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.msgs[0] = &big;
    r.msgs[1] = &utf8;
    r.nmsgs = 2;
    run_client(&r, &p);
    peer_stop(&pr);
    assert_false(r.failed);
    assert_int_equal(r.dones, 2);
    assert_int_equal(r.readies, 3);
    assert_true(r.res[0].local_error);
    assert_int_equal(r.res[0].data, 552);
    assert_string_equal(r.res[0].data_enh, "5.3.4");
    assert_int_equal(r.res[0].mail, 0);
    assert_true(r.res[1].local_error);
    assert_int_equal(r.res[1].data, 553);
    assert_string_equal(r.res[1].data_enh, "5.6.7");
    assert_int_equal(record_count(&pr, "\"type\":\"message\""), 0);
}

/* Postfix's smtp-sink: a real server; with -P it plays a Cisco PIX: masked
 * banner, no ESMTP (EHLO gets 5xx, so HELO). */
static void sink_deliver(bool pix)
{
    char port_s[32], dump[400], dir[350];
    struct sockaddr_in sin;
    struct run r = {0};
    static int seq;
    int port = free_port();
    const char *rcpts[] = {"one@sink.test", "two@sink.test"};
    struct smtp_client_msg m1 = msg_mem("Subject: sink\r\n\r\n.dotted\r\nbody one\r\n", rcpts, 2);
    struct smtp_client_msg m2 = msg_mem("body two\n", rcpts, 1);

    snprintf(dir, sizeof(dir), "%s/sink%d", tmpdir, ++seq);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(dump, sizeof(dump), "%s/%%M.", dir);
    snprintf(port_s, sizeof(port_s), "127.0.0.1:%d", port);
    const char *argv[16];
    int argc = 0;
    argv[argc++] = "smtp-sink";
    if (geteuid() == 0) {
        argv[argc++] = "-u"; /* smtp-sink insists on a user when run as root */
        argv[argc++] = "root";
    }
    if (pix)
        argv[argc++] = "-P";
    argv[argc++] = "-d";
    argv[argc++] = dump;
    argv[argc++] = port_s;
    argv[argc++] = "10";
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv("/usr/sbin/smtp-sink", (char *const *)argv);
        _exit(127);
    }
    /* wait until it listens */
    for (int i = 0; i < 100; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct smtp_client_params p = params(&sin, port, SMTP_TLS_NONE);
        int ok = connect(fd, p.addr, p.addrlen);
        close(fd);
        if (ok == 0)
            break;
        usleep(20000);
    }
    struct smtp_client_params p = params(&sin, port, SMTP_TLS_PREFERRED);
    r.msgs[0] = &m1;
    r.msgs[1] = &m2;
    r.nmsgs = 2;
    run_client(&r, &p);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    assert_false(r.failed);
    assert_int_equal(r.dones, 2);
    assert_int_equal(r.res[0].stage, SC_DOT);
    assert_int_equal(r.res[1].stage, SC_DOT);
    assert_int_equal(r.info.masked_banner, pix);
    assert_int_equal(r.info.esmtp, !pix);
    assert_int_equal(r.info.pipelining, !pix);

    /* the dumps: one file per message; check the bodies arrived unstuffed */
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "cat %s/* > %s/all 2>/dev/null", dir, tmpdir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "%s/all", tmpdir);
    char *all = read_file(cmd, NULL);
    assert_non_null(all);
    assert_non_null(strstr(all, "\n.dotted\n"));
    assert_non_null(strstr(all, "\nbody one\n"));
    assert_non_null(strstr(all, "\nbody two\n"));
    assert_int_equal(count_substr(all, "<one@sink.test>"), 2);
    assert_int_equal(count_substr(all, "<two@sink.test>"), 1);
    free(all);
}

static void test_smtp_sink(void **state)
{
    (void)state;
    sink_deliver(false);
    sink_deliver(true);
}

/* abort() from inside ready(): no further callbacks, nothing leaks. */
static bool aborted_once;
static void on_ready_abort(void *arg, struct smtp_client *c)
{
    struct run *r = arg;
    r->readies++;
    aborted_once = true;
    event_del(r->guard);
    smtp_client_abort(c);
}

static void test_abort_in_callback(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    static const struct smtp_client_ops abort_ops = {on_ready_abort, on_done, on_failed};
    struct timeval tv = {20, 0};
    (void)state;
    peer_start(&pr, "");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.base = event_base_new();
    r.guard = evtimer_new(r.base, on_guard, &r);
    evtimer_add(r.guard, &tv);
    smtp_client_start(r.base, &p, &abort_ops, &r);
    event_base_dispatch(r.base);
    event_free(r.guard);
    event_base_free(r.base);
    peer_stop(&pr);
    assert_true(aborted_once);
    assert_int_equal(r.readies, 1);
    assert_false(r.failed);
}

/* The peer says 220 to STARTTLS but goes on in plain text: the handshake
 * fails, and that is a failure at SC_TLS (the session cannot go back). */
static void test_tls_handshake_failure(void **state)
{
    struct run r = {0};
    char opts[1024];
    (void)state;
    tls_peer_opts(opts, sizeof(opts), ",\"starttls_reply\":\"220 2.0.0 Go ahead (not really)\"");
    expect_failure(&r, opts, SMTP_TLS_PREFERRED, SC_TLS);
    assert_false(r.err.tls_required);
    assert_false(r.info.tls_active);
    assert_int_equal(r.readies, 0);
}

/* quit() from inside done(), while the RSET after a refused MAIL is still
 * unanswered: QUIT follows RSET, the loop ends, no ready() comes. */
static void on_done_quit(void *arg, struct smtp_client *c, const struct smtp_client_result *res)
{
    struct run *r = arg;
    on_done(arg, c, res);
    event_del(r->guard);
    smtp_client_quit(c);
}

static void test_quit_in_done(void **state)
{
    struct peer pr;
    struct sockaddr_in sin;
    struct run r = {0};
    static const struct smtp_client_ops quit_ops = {on_ready, on_done_quit, on_failed};
    struct smtp_client_msg m = msg_mem("hi\r\n", rcpt1, 1);
    struct timeval tv = {20, 0};
    (void)state;
    peer_start(&pr, "\"mail_reply\":\"452 4.3.1 Insufficient system resources\"");
    struct smtp_client_params p = params(&sin, pr.port, SMTP_TLS_NONE);
    r.msgs[0] = &m;
    r.nmsgs = 1;
    r.base = event_base_new();
    r.guard = evtimer_new(r.base, on_guard, &r);
    evtimer_add(r.guard, &tv);
    smtp_client_start(r.base, &p, &quit_ops, &r);
    event_base_dispatch(r.base);
    event_free(r.guard);
    event_base_free(r.base);
    peer_stop(&pr);
    assert_false(r.guard_fired);
    assert_false(r.failed);
    assert_int_equal(r.readies, 1);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.res[0].stage, SC_MAIL);
    assert_int_equal(r.res[0].mail, 452);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivery_pipelining),
        cmocka_unit_test(test_delivery_no_pipelining),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_rcpt_partly_refused),
        cmocka_unit_test(test_mail_452),
        cmocka_unit_test(test_all_rcpt_refused),
        cmocka_unit_test(test_banner_452),
        cmocka_unit_test(test_ehlo_4xx),
        cmocka_unit_test(test_ehlo_5xx_helo_fallback),
        cmocka_unit_test(test_ehlo_5xx_then_helo_refused),
        cmocka_unit_test(test_masked),
        cmocka_unit_test(test_unmasked_flags),
        cmocka_unit_test(test_starttls_preferred),
        cmocka_unit_test(test_starttls_injection_discarded),
        cmocka_unit_test(test_starttls_refused),
        cmocka_unit_test(test_starttls_required_not_offered),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_stalls_time_out),
        cmocka_unit_test(test_resets),
        cmocka_unit_test(test_reset_mid_data),
        cmocka_unit_test(test_malformed_replies),
        cmocka_unit_test(test_large_file_body),
        cmocka_unit_test(test_local_errors),
        cmocka_unit_test(test_smtp_sink),
        cmocka_unit_test(test_abort_in_callback),
        cmocka_unit_test(test_tls_handshake_failure),
        cmocka_unit_test(test_quit_in_done),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
