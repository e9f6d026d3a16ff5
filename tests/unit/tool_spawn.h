/*
 * tool_spawn: start one of the Python test servers in tests/tools/ (the
 * DNS server, the SMTP peer) for a unit test: fork, exec /usr/bin/python3
 * with the script and arguments, and wait for its "READY <port>" line.
 * The child dies with the test (PR_SET_PDEATHSIG), so a crashed test never
 * leaves a server behind.
 */
#ifndef POSTERN_TESTS_TOOL_SPAWN_H
#define POSTERN_TESTS_TOOL_SPAWN_H

#include <sys/types.h>

/* Start tests/tools/<script> (located through POSTERN_SRCDIR) with the
 * NULL-terminated args. Returns the child's pid and sets *port, or -1 (with
 * a line on stderr) if it did not report READY within 10 seconds. */
pid_t tool_spawn(const char *script, const char *const *args, int *port);

#endif
