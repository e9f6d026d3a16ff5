/*
 * fsutil: small filesystem helpers shared by the modules that own
 * directories (spool, logs, control socket, daemon startup).
 */
#ifndef POSTERN_CORE_FSUTIL_H
#define POSTERN_CORE_FSUTIL_H

#include <sys/types.h>

/* mkdir -p: create dir and its missing parents with mode (existing ones are
 * left as they are). Returns 0 or -errno. */
int fs_mkdirs(const char *dir, mode_t mode);

#endif
