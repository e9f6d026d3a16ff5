/*
 * dns_parse: a strict, bounded parser of DNS answer packets (RFC 1035 §4).
 *
 * Why our own: c-ares 1.18's ares_parse_mx_reply/ares_parse_ptr_reply/
 * ares_parse_txt_reply do not return TTLs, and none of them report the SOA
 * minimum that negative caching (RFC 2308) needs. The resolver gets the raw
 * answer from ares_query() and hands it to dns_parse_answer().
 *
 * What it returns: the header RCODE, the records of the asked type owned by
 * the question name or by the end of a CNAME chain that starts there (all
 * inside the answer section), the minimum TTL over those records and the
 * CNAMEs used, and the negative-caching TTL from an SOA in the authority
 * section (min(SOA TTL, SOA MINIMUM), RFC 2308 §5).
 *
 * Strictness: every length is checked against the packet before it is read;
 * names obey the 63-octet label and 255-octet name limits (RFC 1035 §2.3.4),
 * compression pointers must point strictly before the lowest position read so
 * far for that name (which rules out every loop); RDATA of the types we read
 * must be exactly as long as RDLENGTH says. The additional section is not
 * read (nothing in it is used).
 *
 * Memory: one allocation per result, sized exactly (a counting pass, then a
 * filling pass): struct dns_result, its rr array and every string. Free it
 * with dns_result_free() (plain free()).
 *
 * Names are returned in presentation format without the trailing dot ("."
 * for the root, e.g. an RFC 7505 null MX): letters, digits, '-', '_' and
 * other printable ASCII pass; '.' and '\' inside a label become "\." and
 * "\\"; any other octet becomes "\DDD" (RFC 1035 §5.1), so a label can never
 * pretend to be two labels and no control byte reaches a log line.
 */
#ifndef POSTERN_DNS_DNS_PARSE_H
#define POSTERN_DNS_DNS_PARSE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The record types Postern asks for. */
enum dns_type { DNS_A, DNS_AAAA, DNS_MX, DNS_PTR, DNS_TXT, DNS_TYPE__COUNT };

/* Presentation name ("A", "MX"...) and wire value (1, 28, 15, 12, 16). */
const char *dns_type_str(enum dns_type t);
uint16_t dns_type_code(enum dns_type t);
/* Parse "a"/"AAAA"/"mx"... (any case). Returns false if unknown. */
bool dns_type_from_str(const char *s, enum dns_type *out);

/* One record of the asked type. Only the fields of its type are set. */
struct dns_rr {
    uint32_t ttl; /* seconds, as received (RFC 2181 §8: high bit set reads as 0) */
    /* A / AAAA */
    int family; /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } addr;
    char addr_str[INET6_ADDRSTRLEN]; /* inet_ntop form */
    /* MX */
    uint16_t pref;
    /* MX exchange or PTR target, presentation form; "." for the root */
    const char *host;
    /* TXT: the character-strings of one record concatenated (RFC 7208 §3.3
     * style), NUL-terminated; may contain NUL bytes, so use text_len. */
    const char *text;
    size_t text_len;
};

struct dns_result {
    unsigned rcode; /* header RCODE (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED...) */
    bool aa;        /* authoritative answer bit */
    size_t n;       /* records in rr */
    struct dns_rr *rr;
    uint32_t min_ttl;  /* min over rr[] and the CNAMEs followed; 0 when n == 0 */
    bool has_soa;      /* an SOA was found in the authority section */
    uint32_t neg_ttl;  /* min(SOA TTL, SOA MINIMUM) when has_soa */
    unsigned cnames;   /* CNAME links followed */
    const char *qname; /* question name, presentation form */
};

enum dns_parse_err {
    DNS_PARSE_OK = 0,
    DNS_PARSE_SHORT,     /* packet ends inside a header, name, RR or RDATA */
    DNS_PARSE_NAME,      /* bad label type, label or name too long */
    DNS_PARSE_LOOP,      /* compression pointer not strictly backwards */
    DNS_PARSE_QUESTION,  /* not one question, or not the one we asked */
    DNS_PARSE_NOTANSWER, /* QR bit clear or opcode not QUERY */
    DNS_PARSE_RDATA,     /* RDATA length does not fit its type */
    DNS_PARSE_CHAIN,     /* CNAME chain too long or looping */
};

const char *dns_parse_strerror(enum dns_parse_err e);

/* Parse the answer pkt[0..len) to a query for (qname, qtype). qname is in
 * presentation form, any case, with or without the trailing dot; NULL
 * accepts any question name (fuzzing, diagnostics). On DNS_PARSE_OK *out is
 * a new result (n may be 0: NXDOMAIN, NODATA, SERVFAIL...); otherwise *out
 * is NULL. */
enum dns_parse_err dns_parse_answer(const uint8_t *pkt, size_t len, const char *qname,
                                    enum dns_type qtype, struct dns_result **out);

void dns_result_free(struct dns_result *res);

/* Wire-format helpers, exported for the tests. */
/* Encode a presentation name (escapes \. \\ \DDD understood, trailing dot
 * optional) into wire form. Returns its length, or 0 if it is not a valid
 * name (empty label, label > 63, name > 255). */
size_t dns_name_to_wire(const char *name, uint8_t *out, size_t outlen);

#endif
