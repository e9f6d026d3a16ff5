/*
 * libFuzzer harness for smtp_cmd: the whole input is one command line
 * (without CRLF), parsed the way the session does, and also handed to
 * every argument parser directly so their states are reached even when
 * smtp_cmd_parse would refuse the line. Results must point inside the
 * input; decoded xtext must fit and be printable; numbers must round-trip.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_within(const char *p, size_t n, const char *buf, size_t len)
{
    if (n == 0)
        return;
    if (p < buf || p + n > buf + len)
        abort();
}

static void fuzz_check_split(const char *arg, size_t len, const char *prefix)
{
    struct smtp_param params[SMTP_MAX_PARAMS];
    const char *path;
    size_t path_len, np;
    enum smtp_mailrcpt_status st =
        smtp_mailrcpt_split(arg, len, prefix, &path, &path_len, params, &np);
    if (st != SMTP_MR_OK)
        return;
    if (path_len < 2 || path[0] != '<' || path[path_len - 1] != '>' || np > SMTP_MAX_PARAMS)
        abort();
    fuzz_within(path, path_len, arg, len);
    for (size_t i = 0; i < np; i++) {
        if (params[i].key_len == 0)
            abort();
        fuzz_within(params[i].key, params[i].key_len, arg, len);
        if (params[i].value != NULL) {
            if (params[i].value_len == 0 ||
                params[i].value != params[i].key + params[i].key_len + 1)
                abort();
            fuzz_within(params[i].value, params[i].value_len, arg, len);
        }
    }
}

static void fuzz_check_u64(const char *s, size_t len)
{
    uint64_t v;
    if (!smtp_parse_u64(s, len, &v))
        return;
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%" PRIu64, v);
    size_t skip = 0;
    while (skip + 1 < len && s[skip] == '0')
        skip++;
    if ((size_t)n != len - skip || memcmp(buf, s + skip, (size_t)n) != 0)
        abort();
}

static void fuzz_check_xtext(const char *s, size_t len)
{
    size_t outlen = len + 1;
    char *out = malloc(outlen);
    if (out == NULL)
        abort();
    if (smtp_xtext_decode(s, len, out, outlen)) {
        size_t n = strlen(out);
        if (n > len)
            abort();
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)out[i];
            if (c < 0x20 || c == 0x7f)
                abort();
        }
        /* a smaller buffer must refuse rather than truncate */
        if (n > 0 && smtp_xtext_decode(s, len, out, n))
            abort();
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy so ASan reports any read past len */
    char *line = malloc(size ? size : 1);
    if (line == NULL)
        abort();
    memcpy(line, data, size);

    struct smtp_cmd cmd;
    enum smtp_cmd_status st = smtp_cmd_parse(line, size, &cmd);
    if (cmd.verb_str == NULL || cmd.arg == NULL || smtp_verb_name(cmd.verb) == NULL)
        abort();
    if (st == SMTP_CMD_OK) {
        if (cmd.verb_len == 0 || (unsigned)cmd.verb >= SMTP_VERB__COUNT)
            abort();
        fuzz_within(cmd.verb_str, cmd.verb_len, line, size);
        fuzz_within(cmd.arg, cmd.arg_len, line, size);
        if (memchr(line, '\0', size) != NULL)
            abort();
        if (cmd.verb == SMTP_VERB_MAIL)
            fuzz_check_split(cmd.arg, cmd.arg_len, "FROM:");
        else if (cmd.verb == SMTP_VERB_RCPT)
            fuzz_check_split(cmd.arg, cmd.arg_len, "TO:");
        else if (cmd.verb == SMTP_VERB_BDAT) {
            uint64_t n;
            bool last;
            smtp_bdat_parse(cmd.arg, cmd.arg_len, &n, &last);
        }
    }

    fuzz_check_split(line, size, "FROM:");
    fuzz_check_split(line, size, "TO:");
    fuzz_check_u64(line, size);
    uint64_t n;
    bool last;
    smtp_bdat_parse(line, size, &n, &last);
    fuzz_check_xtext(line, size);
    free(line);
    return 0;
}
