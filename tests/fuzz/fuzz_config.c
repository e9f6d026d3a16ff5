/*
 * fuzz_config: libFuzzer harness for the YAML configuration loader.
 *
 * Feeds arbitrary bytes to config_load_buffer(); when they load, dumps the
 * result into a memory stream, loads that dump back (it must load: the dump
 * is documented to be loadable) and releases everything, so ASan/UBSan and
 * LeakSanitizer see the parse, error, dump and free paths.
 */
#include "core/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config_error err;
    char msg[512];
    struct config *cfg = config_load_buffer("fuzz", (const char *)data, size, &err);

    if (cfg == NULL) {
        config_error_format(&err, "fuzz", msg, sizeof msg);
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out == NULL)
        abort();
    config_dump(cfg, out);
    fclose(out);

    struct config *back = config_load_buffer("dump", text, len, &err);
    if (back == NULL) {
        config_error_format(&err, "dump", msg, sizeof msg);
        fprintf(stderr, "dump of a loaded config does not load: %s\n%s", msg, text);
        abort();
    }
    (void)config_is_relay_domain(cfg, "a.example.org", 13);
    config_unref(back);
    config_unref(config_ref(cfg));
    config_unref(cfg);
    free(text);
    return 0;
}
