/*
 * smtp_cmd: split one SMTP command line into verb and argument, and the
 * argument grammars that are not addresses (MAIL/RCPT parameters, BDAT
 * sizes, xtext). See smtp_cmd.h.
 *
 * Design: every function is pure, works on (pointer, length) pairs that are
 * NOT NUL-terminated, never allocates and never copies what it can point at:
 * results are pointers into the caller's line. Checks run in a fixed order
 * so one line always yields one status whatever else is wrong with it:
 *   1. a NUL anywhere            -> SMTP_CMD_NUL (strings downstream stop there)
 *   2. any other control byte    -> SMTP_CMD_BADCHAR (HTAB excepted)
 *   3. only spaces               -> SMTP_CMD_EMPTY
 *   4. an 8-bit byte in the verb -> SMTP_CMD_NON_ASCII
 * 8-bit bytes in the argument are left for the address parser, which knows
 * whether SMTPUTF8 was given (RFC 6531).
 *
 * Verbs are found in a table (case-insensitive, exact length), so adding one
 * is a one-line change. HTTP methods share the table: a browser or proxy
 * talking to port 25 is logged and dropped, never treated as a typo.
 */
#include "smtp/smtp_cmd.h"

#include "smtp/smtp_addr.h"

#include <string.h>

struct cmd_verb_entry {
    const char *name;
    enum smtp_verb verb;
};

static const struct cmd_verb_entry cmd_verbs[] = {
    {"HELO", SMTP_VERB_HELO},
    {"EHLO", SMTP_VERB_EHLO},
    {"MAIL", SMTP_VERB_MAIL},
    {"RCPT", SMTP_VERB_RCPT},
    {"DATA", SMTP_VERB_DATA},
    {"BDAT", SMTP_VERB_BDAT},
    {"RSET", SMTP_VERB_RSET},
    {"NOOP", SMTP_VERB_NOOP},
    {"QUIT", SMTP_VERB_QUIT},
    {"VRFY", SMTP_VERB_VRFY},
    {"EXPN", SMTP_VERB_EXPN},
    {"HELP", SMTP_VERB_HELP},
    {"STARTTLS", SMTP_VERB_STARTTLS},
    {"AUTH", SMTP_VERB_AUTH},
    {"ETRN", SMTP_VERB_ETRN},
    /* RFC 9110 section 9 methods (and CONNECT through proxies): a cross-
     * protocol request, recognised so the session can drop it at once. */
    {"GET", SMTP_VERB_HTTP},
    {"POST", SMTP_VERB_HTTP},
    {"HEAD", SMTP_VERB_HTTP},
    {"PUT", SMTP_VERB_HTTP},
    {"CONNECT", SMTP_VERB_HTTP},
    {"OPTIONS", SMTP_VERB_HTTP},
    {"DELETE", SMTP_VERB_HTTP},
};

static const char *const cmd_verb_names[SMTP_VERB__COUNT] = {
    [SMTP_VERB_UNKNOWN] = "UNKNOWN", [SMTP_VERB_HELO] = "HELO",         [SMTP_VERB_EHLO] = "EHLO",
    [SMTP_VERB_MAIL] = "MAIL",       [SMTP_VERB_RCPT] = "RCPT",         [SMTP_VERB_DATA] = "DATA",
    [SMTP_VERB_BDAT] = "BDAT",       [SMTP_VERB_RSET] = "RSET",         [SMTP_VERB_NOOP] = "NOOP",
    [SMTP_VERB_QUIT] = "QUIT",       [SMTP_VERB_VRFY] = "VRFY",         [SMTP_VERB_EXPN] = "EXPN",
    [SMTP_VERB_HELP] = "HELP",       [SMTP_VERB_STARTTLS] = "STARTTLS", [SMTP_VERB_AUTH] = "AUTH",
    [SMTP_VERB_ETRN] = "ETRN",       [SMTP_VERB_HTTP] = "HTTP",
};

/* ASCII-only case folding: the C library's tolower() depends on the locale. */
static unsigned char cmd_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static bool cmd_is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool cmd_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Case-insensitive comparison of s[0..len) with the NUL-terminated lit. */
static bool cmd_equal_nocase(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    if (len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (cmd_lower((unsigned char)s[i]) != cmd_lower((unsigned char)lit[i]))
            return false;
    }
    return true;
}

/* Status of the bytes of the whole line (steps 1 and 2 of the file comment). */
static enum smtp_cmd_status cmd_check_bytes(const char *line, size_t len)
{
    if (memchr(line, '\0', len) != NULL)
        return SMTP_CMD_NUL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        /* RFC 5321 4.1.1 commands are printable text; HTAB is tolerated
         * because some clients use it in EHLO arguments and it is harmless.
         * DEL (0x7f) is a control character too (RFC 5234 CTL). */
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return SMTP_CMD_BADCHAR;
    }
    return SMTP_CMD_OK;
}

/* Look a verb up in the table; SMTP_VERB_UNKNOWN if it is not there. */
static enum smtp_verb cmd_lookup_verb(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof(cmd_verbs) / sizeof(cmd_verbs[0]); i++) {
        if (cmd_equal_nocase(s, len, cmd_verbs[i].name))
            return cmd_verbs[i].verb;
    }
    return SMTP_VERB_UNKNOWN;
}

enum smtp_cmd_status smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out)
{
    out->verb = SMTP_VERB_UNKNOWN;
    out->verb_str = "";
    out->verb_len = 0;
    out->arg = "";
    out->arg_len = 0;

    enum smtp_cmd_status st = cmd_check_bytes(line, len);
    if (st != SMTP_CMD_OK)
        return st;

    /* Leading spaces are not in the RFC 5321 grammar, but skipping them is
     * unambiguous (Postfix does the same) and cannot hide anything. */
    size_t i = 0;
    while (i < len && line[i] == ' ')
        i++;
    if (i == len)
        return SMTP_CMD_EMPTY;

    size_t vstart = i;
    while (i < len && line[i] != ' ')
        i++;
    out->verb_str = line + vstart;
    out->verb_len = i - vstart;
    for (size_t k = vstart; k < i; k++) {
        if ((unsigned char)line[k] >= 0x80)
            return SMTP_CMD_NON_ASCII;
    }
    out->verb = cmd_lookup_verb(out->verb_str, out->verb_len);

    while (i < len && line[i] == ' ')
        i++;
    size_t end = len;
    while (end > i && (line[end - 1] == ' ' || line[end - 1] == '\t'))
        end--;
    if (end > i) {
        out->arg = line + i;
        out->arg_len = end - i;
    }
    return SMTP_CMD_OK;
}

const char *smtp_verb_name(enum smtp_verb verb)
{
    if ((unsigned)verb >= SMTP_VERB__COUNT || cmd_verb_names[verb] == NULL)
        return "UNKNOWN";
    return cmd_verb_names[verb];
}

/* Index just past the '>' that closes the path opened at s[0] == '<', or 0.
 * A '>' inside a quoted local part does not close the path (RFC 5321 4.1.2
 * Quoted-string), nor does one escaped by a quoted-pair inside it. */
static size_t cmd_find_path_end(const char *s, size_t len)
{
    bool quoted = false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (quoted && c == '\\') {
            i++; /* quoted-pairSMTP: the next octet is literal */
            continue;
        }
        if (c == '"')
            quoted = !quoted;
        else if (c == '>' && !quoted)
            return i + 1;
    }
    return 0;
}

/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")  (RFC 5321 4.1.2) */
static bool cmd_valid_keyword(const char *s, size_t len)
{
    if (len == 0 || !cmd_is_alnum((unsigned char)s[0]))
        return false;
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!cmd_is_alnum(c) && c != '-')
            return false;
    }
    return true;
}

/* esmtp-value = 1*(%d33-60 / %d62-126), extended by RFC 6531 section 3.3 with
 * UTF8-non-ascii, which must then be well-formed UTF-8. */
static bool cmd_valid_value(const char *s, size_t len)
{
    if (len == 0)
        return false;
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t n = smtp_utf8_char_len(s + i, len - i);
            if (n == 0)
                return false;
            i += n;
            continue;
        }
        if (c < 33 || c > 126 || c == '=')
            return false;
        i++;
    }
    return true;
}

/* Split one esmtp-param ("KEY" or "KEY=value") into p. */
static bool cmd_parse_param(const char *s, size_t len, struct smtp_param *p)
{
    const char *eq = memchr(s, '=', len);
    size_t klen = eq ? (size_t)(eq - s) : len;
    if (!cmd_valid_keyword(s, klen))
        return false;
    p->key = s;
    p->key_len = klen;
    p->value = NULL;
    p->value_len = 0;
    if (eq == NULL)
        return true;
    p->value = eq + 1;
    p->value_len = len - klen - 1;
    return cmd_valid_value(p->value, p->value_len);
}

/* Split the parameters after the path: one or more SP before each. */
static enum smtp_mailrcpt_status cmd_split_params(const char *s, size_t len,
                                                  struct smtp_param *params, size_t *nparams)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] != ' ')
            return SMTP_MR_SYNTAX; /* the path must be followed by SP or end */
        while (i < len && s[i] == ' ')
            i++;
        if (i == len)
            break; /* trailing spaces */
        size_t start = i;
        while (i < len && s[i] != ' ')
            i++;
        /* SMTP_MAX_PARAMS: no MAIL/RCPT extension in use needs more than a
         * handful (SIZE BODY SMTPUTF8 RET ENVID AUTH / NOTIFY ORCPT), and a
         * fixed array keeps a hostile client from growing memory. */
        if (*nparams >= SMTP_MAX_PARAMS)
            return SMTP_MR_TOO_MANY;
        if (!cmd_parse_param(s + start, i - start, &params[*nparams]))
            return SMTP_MR_BAD_PARAM;
        (*nparams)++;
    }
    return SMTP_MR_OK;
}

enum smtp_mailrcpt_status smtp_mailrcpt_split(const char *arg, size_t len, const char *prefix,
                                              const char **path, size_t *path_len,
                                              struct smtp_param *params, size_t *nparams)
{
    *path = NULL;
    *path_len = 0;
    *nparams = 0;

    size_t plen = strlen(prefix);
    if (len < plen || !cmd_equal_nocase(arg, plen, prefix))
        return SMTP_MR_SYNTAX;
    size_t i = plen;
    while (i < len && arg[i] == ' ')
        i++;
    if (i == len || arg[i] != '<')
        return SMTP_MR_SYNTAX;

    size_t end = cmd_find_path_end(arg + i, len - i);
    if (end == 0)
        return SMTP_MR_SYNTAX;
    *path = arg + i;
    *path_len = end;
    i += end;
    enum smtp_mailrcpt_status st = cmd_split_params(arg + i, len - i, params, nparams);
    if (st != SMTP_MR_OK) {
        *path = NULL;
        *path_len = 0;
    }
    return st;
}

bool smtp_parse_u64(const char *s, size_t len, uint64_t *out)
{
    /* 20 digits: UINT64_MAX is 18446744073709551615. Longer input (even with
     * leading zeros) is refused rather than scanned without bound. */
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!cmd_is_digit(c))
            return false;
        uint64_t d = (uint64_t)(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool smtp_bdat_parse(const char *arg, size_t len, uint64_t *size, bool *last)
{
    /* RFC 3030 section 2: bdat-cmd = "BDAT" SP chunk-size [SP end-marker];
     * extra spaces between the two are tolerated like everywhere else. */
    size_t i = 0;
    while (i < len && arg[i] != ' ')
        i++;
    if (!smtp_parse_u64(arg, i, size))
        return false;
    size_t rest = i;
    while (rest < len && arg[rest] == ' ')
        rest++;
    if (rest == len) {
        *last = false;
        return true;
    }
    if (!cmd_equal_nocase(arg + rest, len - rest, "LAST"))
        return false;
    *last = true;
    return true;
}

static int cmd_hex_value(unsigned char c)
{
    /* RFC 3461 section 4: hexchar digits are "0"-"9" and upper-case "A"-"F". */
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool smtp_xtext_decode(const char *s, size_t len, char *out, size_t outlen)
{
    if (outlen == 0)
        return false;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        unsigned char v;
        if (c == '+') {
            if (len - i < 3)
                return false;
            int hi = cmd_hex_value((unsigned char)s[i + 1]);
            int lo = cmd_hex_value((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            v = (unsigned char)(hi * 16 + lo);
            /* ENVID and ORCPT carry printable text (RFC 3461 4.4, 4.2;
             * RFC 6533 for UTF-8): a decoded control byte could only inject
             * lines into the DSN we may build from it, so it is refused. */
            if (v < 0x20 || v == 0x7f)
                return false;
            i += 2;
        } else if (c >= '!' && c <= '~' && c != '=') {
            v = c; /* xchar: "!".."~" except "+" and "=" */
        } else {
            return false;
        }
        if (o + 1 >= outlen)
            return false;
        out[o++] = (char)v;
    }
    out[o] = '\0';
    return true;
}
