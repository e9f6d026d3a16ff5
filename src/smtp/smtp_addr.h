/*
 * smtp_addr: the one strict parser for RFC 5321 paths (section 4.1.2,
 * Reverse-path / Forward-path), and the relay decision built on it.
 *
 * Why one parser: open relays and remote code execution in MTAs
 * (OpenSMTPD CVE-2020-7247, Exim CVE-2019-10149) came from ad-hoc address
 * handling in several places. Here the address is parsed once into the
 * mailbox that delivery will put in its own RCPT TO, and every decision
 * (relay, logging, routing) is taken on that same mailbox.
 *
 * Accepted: "<>" (only where the caller allows a null path), "<local@domain>",
 * a source route "<@a,@b:local@domain>" (RFC 5321 4.1.2: accepted, and
 * ignored: delivery uses only the mailbox), a quoted local part, a domain
 * literal "[1.2.3.4]" / "[IPv6:...]", and, when SMTPUTF8 was given, UTF-8 in
 * local part and domain (RFC 6531). "<postmaster>" without a domain is
 * accepted only where the caller allows it (RCPT, RFC 5321 4.5.1).
 *
 * Limits (RFC 5321 4.5.3.1): path at most 256 octets including the angle
 * brackets, domain at most 255, each label at most 63. The 64-octet local-part
 * limit is deliberately not enforced: RFC 5321 asks implementations to accept
 * longer ones where they can, and VERP/SRS senders routinely exceed it.
 */
#ifndef POSTERN_SMTP_ADDR_H
#define POSTERN_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_PATH_MAX   256 /* octets including "<" and ">" */
#define SMTP_DOMAIN_MAX 255

enum smtp_addr_status {
    SMTP_ADDR_OK = 0,
    SMTP_ADDR_SYNTAX,   /* 501 5.1.3 (MAIL: 5.1.7, RCPT: 5.1.3) */
    SMTP_ADDR_TOO_LONG, /* 501 5.1.3 path too long */
    SMTP_ADDR_NULL_NOT_ALLOWED,
    SMTP_ADDR_NON_ASCII /* 553 5.6.7 UTF-8 address without SMTPUTF8 */
};

enum smtp_addr_flags {
    SMTP_ADDR_ALLOW_NULL = 1,       /* MAIL FROM:<> */
    SMTP_ADDR_ALLOW_POSTMASTER = 2, /* RCPT TO:<postmaster> */
    SMTP_ADDR_UTF8 = 4              /* SMTPUTF8 was given on MAIL */
};

struct smtp_path {
    /* The mailbox as delivery will send it: local "@" domain, source route
     * dropped, local part exactly as the client wrote it (quotes kept only
     * where needed), domain lower-cased (ASCII only). "" for the null path;
     * "postmaster" alone for the bare postmaster. NUL-terminated. */
    char mailbox[SMTP_PATH_MAX + 1];
    size_t len;
    size_t local_len;   /* bytes of mailbox before the '@' (or whole len) */
    const char *domain; /* points into mailbox after '@'; "" if none */
    size_t domain_len;
    /* The local part with quoting removed (quoted-pairs resolved): what the
     * next hop will see as the user name. Used for the relay decision. */
    char local_dequoted[SMTP_PATH_MAX + 1];
    size_t local_dequoted_len;
    bool is_null;       /* <> */
    bool is_postmaster; /* <postmaster> without domain */
    bool had_source_route;
    bool quoted_local;
    bool domain_literal; /* [1.2.3.4] */
    bool utf8;           /* contains non-ASCII */
};

/* Parse a path including its angle brackets (s/len as returned by
 * smtp_mailrcpt_split). flags: smtp_addr_flags. */
enum smtp_addr_status smtp_path_parse(const char *s, size_t len, unsigned flags,
                                      struct smtp_path *out);

/* Why a recipient is refused by the relay check (RAT), or RELAY_OK. */
enum smtp_relay_verdict {
    SMTP_RELAY_OK = 0,
    SMTP_RELAY_FOREIGN_DOMAIN, /* domain not a relay domain */
    SMTP_RELAY_DOMAIN_LITERAL, /* user@[1.2.3.4] */
    SMTP_RELAY_ROUTING_CHAR,   /* '%', '!' or '@' in the (dequoted) local part */
};

/* Decide whether a recipient may be accepted inbound, on the mailbox exactly
 * as delivery will use it. is_relay_domain answers for a lower-cased domain.
 * The bare postmaster is always accepted (RFC 5321 4.5.1). */
enum smtp_relay_verdict
smtp_relay_check(const struct smtp_path *rcpt,
                 bool (*is_relay_domain)(void *ctx, const char *domain, size_t len), void *ctx);

/* Short text for a verdict, for logs ("foreign domain", ...). */
const char *smtp_relay_verdict_text(enum smtp_relay_verdict v);

/* Length in octets of the well-formed UTF-8 character (RFC 3629 section 4:
 * no overlong forms, no surrogates, nothing above U+10FFFF) that starts at s,
 * 1 for an ASCII byte, or 0 if s[0..len) does not start with one. Shared by
 * the address parser and the esmtp-value check (RFC 6531 UTF8-non-ascii). */
size_t smtp_utf8_char_len(const char *s, size_t len);

#endif
