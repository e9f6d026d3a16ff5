/*
 * smtp_cmd: pure parsing of one SMTP command line (RFC 5321 section 4.1),
 * with no I/O and no allocation. The caller has already split the input at
 * CRLF and checked the line-length limit; the line given here excludes CRLF.
 *
 * Results point into the caller's line buffer (never copied), nginx-style.
 * Verbs are case-insensitive. ESMTP parameters (RFC 5321 4.1.2 esmtp-param)
 * are split into keyword/value pairs, at most SMTP_MAX_PARAMS of them: a
 * client that sends more gets a syntax error rather than growing memory.
 */
#ifndef POSTERN_SMTP_CMD_H
#define POSTERN_SMTP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_verb {
    SMTP_VERB_UNKNOWN = 0,
    SMTP_VERB_HELO,
    SMTP_VERB_EHLO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_BDAT,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_VRFY,
    SMTP_VERB_EXPN,
    SMTP_VERB_HELP,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
    SMTP_VERB_ETRN,
    /* Not SMTP at all, recognised so the session can log and drop them. */
    SMTP_VERB_HTTP, /* GET, POST, HEAD, PUT, CONNECT, OPTIONS, DELETE */
    SMTP_VERB__COUNT
};

enum smtp_cmd_status {
    SMTP_CMD_OK = 0,
    SMTP_CMD_EMPTY,    /* empty line or only spaces */
    SMTP_CMD_NUL,      /* a NUL byte anywhere in the line */
    SMTP_CMD_BADCHAR,  /* control character (other than SP/HTAB) in the line */
    SMTP_CMD_NON_ASCII /* 8-bit byte in the verb */
};

struct smtp_cmd {
    enum smtp_verb verb;
    const char *verb_str; /* the verb as sent, for logging */
    size_t verb_len;
    const char *arg; /* after the verb and its separating space(s); "" if none */
    size_t arg_len;  /* trailing spaces removed */
};

/* Split a command line into verb and argument. */
enum smtp_cmd_status smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out);

/* Name of a verb in upper case ("MAIL"), for logs. */
const char *smtp_verb_name(enum smtp_verb verb);

#define SMTP_MAX_PARAMS 10

struct smtp_param {
    const char *key; /* keyword, e.g. "SIZE" (compare case-insensitively) */
    size_t key_len;
    const char *value; /* NULL when the parameter has no "=value" */
    size_t value_len;
};

enum smtp_mailrcpt_status {
    SMTP_MR_OK = 0,
    SMTP_MR_SYNTAX,   /* not "FROM:" / "TO:" followed by a path */
    SMTP_MR_TOO_MANY, /* more than SMTP_MAX_PARAMS parameters */
    SMTP_MR_BAD_PARAM /* malformed esmtp-param */
};

/* Split the argument of MAIL ("FROM:<path> params") or RCPT ("TO:<path>
 * params"). prefix is "FROM:" or "TO:" (matched case-insensitively; RFC 5321
 * forbids the space some clients put after the colon, but it is tolerated as
 * every major MTA does). On success *path and *path_len cover the path including
 * its angle brackets, ready for smtp_path_parse(). */
enum smtp_mailrcpt_status smtp_mailrcpt_split(const char *arg, size_t len, const char *prefix,
                                              const char **path, size_t *path_len,
                                              struct smtp_param *params, size_t *nparams);

/* Parse a decimal number of at most 20 digits that fits in uint64_t
 * (SIZE=, BDAT chunk sizes). Returns false on anything else. */
bool smtp_parse_u64(const char *s, size_t len, uint64_t *out);

/* Parse the BDAT argument: "<size>" or "<size> LAST". */
bool smtp_bdat_parse(const char *arg, size_t len, uint64_t *size, bool *last);

/* xtext (RFC 3461 section 4) decoding for ORCPT/ENVID: returns false if s is
 * not valid xtext or the decoded form does not fit in outlen-1 bytes. */
bool smtp_xtext_decode(const char *s, size_t len, char *out, size_t outlen);

#endif
