/*
 * Unit tests for smtp_cmd: command-line splitting, MAIL/RCPT argument
 * splitting, numbers, BDAT arguments and xtext. Table-driven: one row per
 * case, inputs given with explicit lengths (embedded NULs are cases too).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtp/smtp_cmd.h"

/* A string literal as (pointer, length), so embedded NULs count. */
#define S(x) x, sizeof(x) - 1

#define CHECK(cond, i)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg("case %zu: %s", (size_t)(i), #cond);                                          \
    } while (0)

static bool mem_eq(const char *a, size_t alen, const char *b)
{
    return alen == strlen(b) && memcmp(a, b, alen) == 0;
}

/* ---- smtp_cmd_parse ---- */

struct cmd_case {
    const char *line;
    size_t len;
    enum smtp_cmd_status status;
    enum smtp_verb verb;
    const char *verb_str; /* expected verb as sent (OK only) */
    const char *arg;      /* expected argument (OK only) */
};

static const struct cmd_case cmd_cases[] = {
    {S("HELO mx.example.com"), SMTP_CMD_OK, SMTP_VERB_HELO, "HELO", "mx.example.com"},
    {S("helo x"), SMTP_CMD_OK, SMTP_VERB_HELO, "helo", "x"},
    {S("EHLO x"), SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "x"},
    {S("eHlO x"), SMTP_CMD_OK, SMTP_VERB_EHLO, "eHlO", "x"},
    {S("MAIL FROM:<a@b>"), SMTP_CMD_OK, SMTP_VERB_MAIL, "MAIL", "FROM:<a@b>"},
    {S("mail from:<a@b> SIZE=10"), SMTP_CMD_OK, SMTP_VERB_MAIL, "mail", "from:<a@b> SIZE=10"},
    {S("RCPT TO:<a@b>"), SMTP_CMD_OK, SMTP_VERB_RCPT, "RCPT", "TO:<a@b>"},
    {S("rCpT TO:<a@b>"), SMTP_CMD_OK, SMTP_VERB_RCPT, "rCpT", "TO:<a@b>"},
    {S("DATA"), SMTP_CMD_OK, SMTP_VERB_DATA, "DATA", ""},
    {S("data"), SMTP_CMD_OK, SMTP_VERB_DATA, "data", ""},
    {S("BDAT 100 LAST"), SMTP_CMD_OK, SMTP_VERB_BDAT, "BDAT", "100 LAST"},
    {S("RSET"), SMTP_CMD_OK, SMTP_VERB_RSET, "RSET", ""},
    {S("rset"), SMTP_CMD_OK, SMTP_VERB_RSET, "rset", ""},
    {S("NOOP"), SMTP_CMD_OK, SMTP_VERB_NOOP, "NOOP", ""},
    {S("NOOP anything at all"), SMTP_CMD_OK, SMTP_VERB_NOOP, "NOOP", "anything at all"},
    {S("QUIT"), SMTP_CMD_OK, SMTP_VERB_QUIT, "QUIT", ""},
    {S("Quit"), SMTP_CMD_OK, SMTP_VERB_QUIT, "Quit", ""},
    {S("VRFY root"), SMTP_CMD_OK, SMTP_VERB_VRFY, "VRFY", "root"},
    {S("EXPN staff"), SMTP_CMD_OK, SMTP_VERB_EXPN, "EXPN", "staff"},
    {S("HELP"), SMTP_CMD_OK, SMTP_VERB_HELP, "HELP", ""},
    {S("STARTTLS"), SMTP_CMD_OK, SMTP_VERB_STARTTLS, "STARTTLS", ""},
    {S("starttls"), SMTP_CMD_OK, SMTP_VERB_STARTTLS, "starttls", ""},
    {S("AUTH PLAIN AGZvbwBiYXI="), SMTP_CMD_OK, SMTP_VERB_AUTH, "AUTH", "PLAIN AGZvbwBiYXI="},
    {S("ETRN example.com"), SMTP_CMD_OK, SMTP_VERB_ETRN, "ETRN", "example.com"},
    /* HTTP methods: cross-protocol requests */
    {S("GET / HTTP/1.1"), SMTP_CMD_OK, SMTP_VERB_HTTP, "GET", "/ HTTP/1.1"},
    {S("POST /x HTTP/1.0"), SMTP_CMD_OK, SMTP_VERB_HTTP, "POST", "/x HTTP/1.0"},
    {S("HEAD / HTTP/1.1"), SMTP_CMD_OK, SMTP_VERB_HTTP, "HEAD", "/ HTTP/1.1"},
    {S("PUT /f HTTP/1.1"), SMTP_CMD_OK, SMTP_VERB_HTTP, "PUT", "/f HTTP/1.1"},
    {S("CONNECT mx:25 HTTP/1.1"), SMTP_CMD_OK, SMTP_VERB_HTTP, "CONNECT", "mx:25 HTTP/1.1"},
    {S("options * HTTP/1.1"), SMTP_CMD_OK, SMTP_VERB_HTTP, "options", "* HTTP/1.1"},
    {S("DELETE /x HTTP/1.1"), SMTP_CMD_OK, SMTP_VERB_HTTP, "DELETE", "/x HTTP/1.1"},
    {S("get"), SMTP_CMD_OK, SMTP_VERB_HTTP, "get", ""},
    /* unknown verbs: exact length, no prefix matching */
    {S("FOO bar"), SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "FOO", "bar"},
    {S("MAILX FROM:<a@b>"), SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "MAILX", "FROM:<a@b>"},
    {S("MAI FROM:<a@b>"), SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "MAI", "FROM:<a@b>"},
    {S("MAIL:FROM:<a@b>"), SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "MAIL:FROM:<a@b>", ""},
    {S("STARTTLSX"), SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "STARTTLSX", ""},
    {S("GETS /"), SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "GETS", "/"},
    /* the verb ends at SP only: HTAB does not separate it */
    {S("EHLO\tfoo"), SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "EHLO\tfoo", ""},
    {S("EHLO foo\tbar"), SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "foo\tbar"},
    /* spaces: separating ones skipped, trailing ones (and HTAB) trimmed */
    {S("EHLO   foo   "), SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "foo"},
    {S("EHLO foo bar "), SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "foo bar"},
    {S("EHLO foo\t \t"), SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "foo"},
    {S("QUIT   "), SMTP_CMD_OK, SMTP_VERB_QUIT, "QUIT", ""},
    {S("  NOOP"), SMTP_CMD_OK, SMTP_VERB_NOOP, "NOOP", ""},
    {S(" MAIL FROM:<>"), SMTP_CMD_OK, SMTP_VERB_MAIL, "MAIL", "FROM:<>"},
    /* empty */
    {S(""), SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S(" "), SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("     "), SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, NULL, NULL},
    /* NUL anywhere, even after other defects */
    {S("\0"), SMTP_CMD_NUL, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("MAIL\0FROM:<a@b>"), SMTP_CMD_NUL, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("MAIL FROM:<a@b>\0"), SMTP_CMD_NUL, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("RCPT TO:<a\0@b>"), SMTP_CMD_NUL, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("\x01\0"), SMTP_CMD_NUL, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("N\xc3\xb6OP\0"), SMTP_CMD_NUL, SMTP_VERB_UNKNOWN, NULL, NULL},
    /* control characters other than HTAB */
    {S("NO\x01OP"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("NOOP \x1b[31m"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("NOOP \x7f"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("NOOP\r"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("MAIL FROM:<a@b>\rRCPT TO:<c@d>"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("MAIL FROM:<a@b>\nRCPT TO:<c@d>"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("\n"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("\x1f"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("\xc3\xb6\x01"), SMTP_CMD_BADCHAR, SMTP_VERB_UNKNOWN, NULL, NULL},
    /* 8-bit bytes: refused in the verb, allowed in the argument */
    {S("N\xc3\xb6OP"), SMTP_CMD_NON_ASCII, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("\xff"), SMTP_CMD_NON_ASCII, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("EHLO\x80 x"), SMTP_CMD_NON_ASCII, SMTP_VERB_UNKNOWN, NULL, NULL},
    {S("EHLO h\xc3\xa9llo"), SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "h\xc3\xa9llo"},
    {S("RCPT TO:<\xe7\x94\xa8@\xe4\xbe\x8b.cn>"), SMTP_CMD_OK, SMTP_VERB_RCPT, "RCPT",
     "TO:<\xe7\x94\xa8@\xe4\xbe\x8b.cn>"},
    {S("NOOP \xff\xfe"), SMTP_CMD_OK, SMTP_VERB_NOOP, "NOOP", "\xff\xfe"},
};

static void test_cmd_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cmd_cases) / sizeof(cmd_cases[0]); i++) {
        const struct cmd_case *c = &cmd_cases[i];
        struct smtp_cmd cmd;
        enum smtp_cmd_status st = smtp_cmd_parse(c->line, c->len, &cmd);
        CHECK(st == c->status, i);
        CHECK(cmd.arg != NULL && cmd.verb_str != NULL, i);
        if (st != SMTP_CMD_OK)
            continue;
        CHECK(cmd.verb == c->verb, i);
        CHECK(mem_eq(cmd.verb_str, cmd.verb_len, c->verb_str), i);
        CHECK(mem_eq(cmd.arg, cmd.arg_len, c->arg), i);
        /* results point into the caller's line (or are the constant "") */
        CHECK(cmd.verb_str >= c->line && cmd.verb_str + cmd.verb_len <= c->line + c->len, i);
        CHECK(cmd.arg_len == 0 || (cmd.arg >= c->line && cmd.arg + cmd.arg_len <= c->line + c->len),
              i);
    }
}

/* The line is never read past len: a verb cut short is not completed by
 * whatever follows in memory. */
static void test_cmd_parse_explicit_length(void **state)
{
    (void)state;
    struct smtp_cmd cmd;
    const char buf[] = "QUITE";
    assert_int_equal(smtp_cmd_parse(buf, 4, &cmd), SMTP_CMD_OK);
    assert_int_equal(cmd.verb, SMTP_VERB_QUIT);
    assert_int_equal(smtp_cmd_parse(buf, 5, &cmd), SMTP_CMD_OK);
    assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
    const char nul_after[] = "NOOP\0";
    assert_int_equal(smtp_cmd_parse(nul_after, 4, &cmd), SMTP_CMD_OK);
    assert_int_equal(cmd.verb, SMTP_VERB_NOOP);
}

static void test_verb_name(void **state)
{
    (void)state;
    static const struct {
        enum smtp_verb verb;
        const char *name;
    } names[] = {
        {SMTP_VERB_UNKNOWN, "UNKNOWN"},    {SMTP_VERB_HELO, "HELO"},
        {SMTP_VERB_EHLO, "EHLO"},          {SMTP_VERB_MAIL, "MAIL"},
        {SMTP_VERB_RCPT, "RCPT"},          {SMTP_VERB_DATA, "DATA"},
        {SMTP_VERB_BDAT, "BDAT"},          {SMTP_VERB_RSET, "RSET"},
        {SMTP_VERB_NOOP, "NOOP"},          {SMTP_VERB_QUIT, "QUIT"},
        {SMTP_VERB_VRFY, "VRFY"},          {SMTP_VERB_EXPN, "EXPN"},
        {SMTP_VERB_HELP, "HELP"},          {SMTP_VERB_STARTTLS, "STARTTLS"},
        {SMTP_VERB_AUTH, "AUTH"},          {SMTP_VERB_ETRN, "ETRN"},
        {SMTP_VERB_HTTP, "HTTP"},          {SMTP_VERB__COUNT, "UNKNOWN"},
        {(enum smtp_verb)1000, "UNKNOWN"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_string_equal(smtp_verb_name(names[i].verb), names[i].name);

    /* every SMTP verb's name parses back to itself */
    for (int v = SMTP_VERB_HELO; v < SMTP_VERB_HTTP; v++) {
        struct smtp_cmd cmd;
        const char *n = smtp_verb_name((enum smtp_verb)v);
        assert_int_equal(smtp_cmd_parse(n, strlen(n), &cmd), SMTP_CMD_OK);
        assert_int_equal(cmd.verb, v);
    }
}

/* ---- smtp_mailrcpt_split ---- */

struct mr_case {
    const char *arg;
    size_t len;
    const char *prefix;
    enum smtp_mailrcpt_status status;
    const char *path;   /* expected path (OK only) */
    const char *params; /* expected params joined by one SP (OK only) */
};

#define ELEVEN_PARAMS " A=1 B=2 C=3 D=4 E=5 F=6 G=7 H=8 I=9 J=10 K=11"
#define TEN_PARAMS    " A=1 B=2 C=3 D=4 E=5 F=6 G=7 H=8 I=9 J=10"

static const struct mr_case mr_cases[] = {
    {S("FROM:<a@b>"), "FROM:", SMTP_MR_OK, "<a@b>", ""},
    {S("from:<a@b>"), "FROM:", SMTP_MR_OK, "<a@b>", ""},
    {S("FrOm:<A@B>"), "FROM:", SMTP_MR_OK, "<A@B>", ""},
    {S("TO:<a@b>"), "TO:", SMTP_MR_OK, "<a@b>", ""},
    {S("to:<a@b>"), "TO:", SMTP_MR_OK, "<a@b>", ""},
    {S("FROM:<>"), "FROM:", SMTP_MR_OK, "<>", ""},
    {S("TO:<postmaster>"), "TO:", SMTP_MR_OK, "<postmaster>", ""},
    /* spaces after the colon tolerated, not before it */
    {S("FROM: <a@b>"), "FROM:", SMTP_MR_OK, "<a@b>", ""},
    {S("FROM:    <a@b>"), "FROM:", SMTP_MR_OK, "<a@b>", ""},
    {S("FROM :<a@b>"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S(" FROM:<a@b>"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM<a@b>"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:a@b"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:<a@b"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:   "), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FR"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S(""), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:<a@b>"), "TO:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("TO:<a@b>"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROMX<a@b>"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    /* parameters */
    {S("FROM:<> SIZE=100"), "FROM:", SMTP_MR_OK, "<>", "SIZE=100"},
    {S("FROM:<a@b> SIZE=100 BODY=8BITMIME"), "FROM:", SMTP_MR_OK, "<a@b>",
     "SIZE=100 BODY=8BITMIME"},
    {S("FROM:<a@b>  SIZE=100   SMTPUTF8"), "FROM:", SMTP_MR_OK, "<a@b>", "SIZE=100 SMTPUTF8"},
    {S("FROM:<a@b> SIZE=100 "), "FROM:", SMTP_MR_OK, "<a@b>", "SIZE=100"},
    {S("FROM:<a@b> "), "FROM:", SMTP_MR_OK, "<a@b>", ""},
    {S("TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b"), "TO:", SMTP_MR_OK, "<a@b>",
     "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b"},
    {S("FROM:<a@b> 8BIT-X=1 X-Y-Z"), "FROM:", SMTP_MR_OK, "<a@b>", "8BIT-X=1 X-Y-Z"},
    {S("FROM:<a@b> AUTH=<>"), "FROM:", SMTP_MR_OK, "<a@b>", "AUTH=<>"},
    {S("FROM:<a@b> X=!~"), "FROM:", SMTP_MR_OK, "<a@b>", "X=!~"},
    {S("FROM:<a@b> X=\xc3\xa9t\xc3\xa9"), "FROM:", SMTP_MR_OK, "<a@b>", "X=\xc3\xa9t\xc3\xa9"},
    {S("FROM:<a@b>" TEN_PARAMS), "FROM:", SMTP_MR_OK, "<a@b>", &TEN_PARAMS[1]},
    {S("FROM:<a@b>" ELEVEN_PARAMS), "FROM:", SMTP_MR_TOO_MANY, NULL, NULL},
    {S("FROM:<a@b>SIZE=100"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:<a@b>>"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:<a@b>\tSIZE=1"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:<a@b> SIZE="), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> =100"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> -SIZE=1"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> SI_ZE=1"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> SIZE=1=2"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> X=a\x01"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> X=a\x7f"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> X=a\tb"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> X=\xc3"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> X=\xff"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> X=\xc0\xaf"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> \xc3\xa9=1"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    {S("FROM:<a@b> X\0=1"), "FROM:", SMTP_MR_BAD_PARAM, NULL, NULL},
    /* the closing '>' respects quoted strings and quoted-pairs */
    {S("FROM:<\"a>b\"@c>"), "FROM:", SMTP_MR_OK, "<\"a>b\"@c>", ""},
    {S("FROM:<\"a>b\"@c> SIZE=1"), "FROM:", SMTP_MR_OK, "<\"a>b\"@c>", "SIZE=1"},
    {S("FROM:<\"a\\\">b\"@c> SIZE=1"), "FROM:", SMTP_MR_OK, "<\"a\\\">b\"@c>", "SIZE=1"},
    {S("FROM:<\"a\\\\\">b\"@c>"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("FROM:<\"a>b@c>"), "FROM:", SMTP_MR_SYNTAX, NULL, NULL},
    {S("TO:<@a,@b:\"x y\"@c> NOTIFY=NEVER"), "TO:", SMTP_MR_OK, "<@a,@b:\"x y\"@c>",
     "NOTIFY=NEVER"},
};

static void test_mailrcpt_split_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(mr_cases) / sizeof(mr_cases[0]); i++) {
        const struct mr_case *c = &mr_cases[i];
        struct smtp_param params[SMTP_MAX_PARAMS];
        const char *path = (const char *)1;
        size_t path_len = 99, np = 99;
        enum smtp_mailrcpt_status st =
            smtp_mailrcpt_split(c->arg, c->len, c->prefix, &path, &path_len, params, &np);
        CHECK(st == c->status, i);
        if (st != SMTP_MR_OK) {
            CHECK(path == NULL && path_len == 0, i);
            continue;
        }
        CHECK(mem_eq(path, path_len, c->path), i);
        CHECK(path >= c->arg && path + path_len <= c->arg + c->len, i);
        char joined[256] = "";
        size_t o = 0;
        for (size_t k = 0; k < np; k++) {
            o += (size_t)snprintf(joined + o, sizeof(joined) - o, "%s%.*s", k ? " " : "",
                                  (int)params[k].key_len, params[k].key);
            if (params[k].value != NULL)
                o += (size_t)snprintf(joined + o, sizeof(joined) - o, "=%.*s",
                                      (int)params[k].value_len, params[k].value);
            else
                CHECK(params[k].value_len == 0, i);
        }
        if (strcmp(joined, c->params) != 0)
            fail_msg("case %zu: params \"%s\", want \"%s\"", i, joined, c->params);
    }
}

/* A keyword without "=" has a NULL value; one with "=" never has. */
static void test_mailrcpt_param_value_null(void **state)
{
    (void)state;
    struct smtp_param params[SMTP_MAX_PARAMS];
    const char *path;
    size_t path_len, np;
    const char arg[] = "FROM:<a@b> SMTPUTF8 SIZE=5";
    assert_int_equal(
        smtp_mailrcpt_split(arg, sizeof(arg) - 1, "FROM:", &path, &path_len, params, &np),
        SMTP_MR_OK);
    assert_int_equal(np, 2);
    assert_null(params[0].value);
    assert_non_null(params[1].value);
    assert_int_equal(params[1].value_len, 1);
}

/* ---- smtp_parse_u64 ---- */

struct u64_case {
    const char *s;
    size_t len;
    bool ok;
    uint64_t value;
};

static const struct u64_case u64_cases[] = {
    {S("0"), true, 0},
    {S("1"), true, 1},
    {S("123"), true, 123},
    {S("007"), true, 7},
    {S("10485760"), true, 10485760},
    {S("18446744073709551615"), true, UINT64_MAX},
    {S("18446744073709551614"), true, UINT64_MAX - 1},
    {S("00000000000000000001"), true, 1},
    {S("18446744073709551616"), false, 0},
    {S("18446744073709551620"), false, 0},
    {S("99999999999999999999"), false, 0},
    {S("000000000000000000001"), false, 0},
    {S("100000000000000000000"), false, 0},
    {S(""), false, 0},
    {S("-1"), false, 0},
    {S("+1"), false, 0},
    {S("1 "), false, 0},
    {S(" 1"), false, 0},
    {S("1a"), false, 0},
    {S("0x10"), false, 0},
    {S("1.5"), false, 0},
    {S("1\0"), false, 0},
    {S("\xd9\xa1"), false, 0},
};

static void test_parse_u64_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(u64_cases) / sizeof(u64_cases[0]); i++) {
        const struct u64_case *c = &u64_cases[i];
        uint64_t v = 42;
        bool ok = smtp_parse_u64(c->s, c->len, &v);
        CHECK(ok == c->ok, i);
        if (ok)
            CHECK(v == c->value, i);
        else
            CHECK(v == 42, i); /* untouched on failure */
    }
}

/* ---- smtp_bdat_parse ---- */

struct bdat_case {
    const char *s;
    size_t len;
    bool ok;
    uint64_t size;
    bool last;
};

static const struct bdat_case bdat_cases[] = {
    {S("100"), true, 100, false},
    {S("100 LAST"), true, 100, true},
    {S("100 last"), true, 100, true},
    {S("100 LaSt"), true, 100, true},
    {S("0 LAST"), true, 0, true},
    {S("0"), true, 0, false},
    {S("100  LAST"), true, 100, true},
    {S("100 "), true, 100, false},
    {S("18446744073709551615 LAST"), true, UINT64_MAX, true},
    {S("18446744073709551616 LAST"), false, 0, false},
    {S("100 LASTX"), false, 0, false},
    {S("100 LAS"), false, 0, false},
    {S("100LAST"), false, 0, false},
    {S("100 LAST x"), false, 0, false},
    {S("100 FIRST"), false, 0, false},
    {S("LAST"), false, 0, false},
    {S(" 100"), false, 0, false},
    {S(""), false, 0, false},
    {S("-1"), false, 0, false},
    {S("1e3"), false, 0, false},
    {S("100\tLAST"), false, 0, false},
};

static void test_bdat_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bdat_cases) / sizeof(bdat_cases[0]); i++) {
        const struct bdat_case *c = &bdat_cases[i];
        uint64_t size = 42;
        bool last = false;
        bool ok = smtp_bdat_parse(c->s, c->len, &size, &last);
        CHECK(ok == c->ok, i);
        if (ok) {
            CHECK(size == c->size, i);
            CHECK(last == c->last, i);
        }
    }
}

/* ---- smtp_xtext_decode ---- */

struct xtext_case {
    const char *s;
    size_t len;
    size_t outlen;
    bool ok;
    const char *want;
};

static const struct xtext_case xtext_cases[] = {
    {S(""), 16, true, ""},
    {S("abc"), 16, true, "abc"},
    {S("a+2Bb"), 16, true, "a+b"},
    {S("+3D"), 16, true, "="},
    {S("+2B+3D"), 16, true, "+="},
    {S("rfc822;joe+40example.com"), 64, true, "rfc822;joe@example.com"},
    {S("+41"), 16, true, "A"},
    {S("!~"), 16, true, "!~"},
    {S("utf-8;+C3+A9@x"), 16, true, "utf-8;\xc3\xa9@x"},
    {S("+20"), 16, true, " "},
    /* not xtext */
    {S("a=b"), 16, false, NULL},
    {S("a b"), 16, false, NULL},
    {S("a+"), 16, false, NULL},
    {S("a+2"), 16, false, NULL},
    {S("a+2b"), 16, false, NULL},
    {S("+g0"), 16, false, NULL},
    {S("+G0"), 16, false, NULL},
    {S("+ 0"), 16, false, NULL},
    {S("\x80"), 16, false, NULL},
    {S("a\0b"), 16, false, NULL},
    {S("a\tb"), 16, false, NULL},
    {S("\x7f"), 16, false, NULL},
    /* decoded control bytes would reach a DSN: refused */
    {S("+00"), 16, false, NULL},
    {S("a+0D+0Ab"), 16, false, NULL},
    {S("+1F"), 16, false, NULL},
    {S("+7F"), 16, false, NULL},
    /* output room: outlen-1 octets plus the NUL */
    {S("abc"), 4, true, "abc"},
    {S("abcd"), 4, false, NULL},
    {S("a+2Bb"), 4, true, "a+b"},
    {S("a+2Bbc"), 4, false, NULL},
    {S(""), 1, true, ""},
    {S("a"), 1, false, NULL},
    {S(""), 0, false, NULL},
};

static void test_xtext_decode_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(xtext_cases) / sizeof(xtext_cases[0]); i++) {
        const struct xtext_case *c = &xtext_cases[i];
        char out[64];
        memset(out, 'Z', sizeof(out));
        bool ok = smtp_xtext_decode(c->s, c->len, out, c->outlen);
        CHECK(ok == c->ok, i);
        if (ok)
            CHECK(strcmp(out, c->want) == 0, i);
        /* never writes past outlen */
        for (size_t k = c->outlen; k < sizeof(out); k++)
            CHECK(out[k] == 'Z', i);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_parse_table),
        cmocka_unit_test(test_cmd_parse_explicit_length),
        cmocka_unit_test(test_verb_name),
        cmocka_unit_test(test_mailrcpt_split_table),
        cmocka_unit_test(test_mailrcpt_param_value_null),
        cmocka_unit_test(test_parse_u64_table),
        cmocka_unit_test(test_bdat_parse_table),
        cmocka_unit_test(test_xtext_decode_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
