/*
 * fuzz_mime_scan: the MIME filename scanner on arbitrary content. Checks
 * that feeding the input whole or split at a point derived from it gives
 * the same answer (the scanner is resumable at every byte), and that the
 * per-line helper never reads past its input (ASan).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "smtp/mime_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mime_scan a, b;
    const char *p = (const char *)data;
    size_t cut = size ? data[0] % (size + 1) : 0;
    mime_scan_init(&a);
    mime_scan_feed(&a, p, size);
    mime_scan_finish(&a);
    mime_scan_init(&b);
    mime_scan_feed(&b, p, cut);
    mime_scan_feed(&b, p + cut, size - cut);
    mime_scan_finish(&b);
    if (a.longest != b.longest)
        abort();
    (void)mime_scan_header_filename_len(p, size);
    return 0;
}
