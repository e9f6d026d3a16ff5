/*
 * member: the one parser of sender group members (gateway-behaviour.md
 * section 1), shared by the configuration loader (which validates and
 * normalises the text) and the HAT compiler (which turns the parsed form
 * into sorted ranges and lists).
 *
 * Syntax (keywords case-insensitive; host names, zones and IPv6 lower-cased):
 *
 *   10.1.1.1                   one IPv4 address
 *   10.1.1.0/24                IPv4 CIDR, /0../32; host bits must be zero
 *   10.1.1.10-20               range of the last octet (10 <= 20)
 *   10.1.1.10-10.1.2.20        full IPv4 range (start <= end)
 *   10.1.1.  10.1.  10.        partial IPv4: whole leading octets, ending in a dot
 *   2001:db8::1                one IPv6 address
 *   2001:db8::/32              IPv6 CIDR, /0../128; host bits must be zero
 *   2001:db8::1-2001:db8::ff   full IPv6 range
 *   mx.example.com             a host whose verified PTR name is exactly this
 *   .example.com               a host whose verified PTR name is below example.com
 *   SBRS[-10:-3]               reputation score in [lo, hi], decimals in [-10, 10]
 *   SBRS[none]                 no reputation score (no list answered)
 *   dnslist[zen.example]       listed in that DNS list
 *   ALL                        every host
 *
 * Strictness, and why: a CIDR with host bits set ("10.1.1.5/24") is refused
 * rather than masked, since it is almost always a typo for a single address
 * or for another network; octets with leading zeros are refused (some tools
 * read them as octal); IPv4-mapped IPv6 addresses are refused (write the
 * IPv4 form: IPv4 clients, also those seen as ::ffff:a.b.c.d on a
 * dual-stack socket, are matched against IPv4 members only, so an IPv6
 * member such as ::/0 never matches them); a name
 * whose last label is all digits ("10.1.1") is refused as a mistyped
 * address. Host names may contain '_' (real PTR names do).
 */
#ifndef POSTERN_POLICY_MEMBER_H
#define POSTERN_POLICY_MEMBER_H

#include <stdint.h>

/* Why 299: struct policy_decision.member holds the member's text (300). */
#define MEMBER_MAX_LEN 299

enum member_kind {
    MEMBER_IPV4,      /* v4_lo..v4_hi */
    MEMBER_IPV6,      /* v6_lo..v6_hi */
    MEMBER_HOST,      /* name: exact PTR name */
    MEMBER_SUFFIX,    /* name: ".example.com" (leading dot kept) */
    MEMBER_SBRS,      /* sbrs_lo..sbrs_hi */
    MEMBER_SBRS_NONE, /* no score */
    MEMBER_DNSLIST,   /* name: the zone */
    MEMBER_ALL,
};

struct member {
    enum member_kind kind;
    uint32_t v4_lo, v4_hi;              /* host byte order, inclusive */
    unsigned char v6_lo[16], v6_hi[16]; /* network byte order, inclusive */
    double sbrs_lo, sbrs_hi;            /* inclusive */
    char name[256];                     /* lower-case */
};

/* Parse one member (NUL-terminated text) into m. Returns NULL, or a short
 * reason why the text is not a member. */
const char *member_parse(const char *text, struct member *m);

/* member_parse, then rewrite s in place to its canonical case (keywords
 * "ALL", "SBRS", "none", "dnslist"; names and IPv6 lower-case). Same
 * length. The configuration loader's check for members. */
const char *member_normalize(char *s);

/* A DNS name: LDH (and '_') labels of 1..63, at most 253 characters, no
 * leading or trailing dot; lower-cased in place. NULL or why not. */
const char *member_check_domain(char *s);

/* Kind name for logs and tests ("ipv4", "host", ...). */
const char *member_kind_name(enum member_kind k);

#endif
