/*
 * tool_spawn: see tool_spawn.h.
 */
#include "tool_spawn.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Longest argument list a tool is started with. */
#define SPAWN_MAX_ARGS 32

pid_t tool_spawn(const char *script, const char *const *args, int *port)
{
    const char *src = getenv("POSTERN_SRCDIR");
    char path[PATH_MAX], line[64] = "";
    const char *argv[SPAWN_MAX_ARGS + 3];
    int pfd[2], n = 0;
    snprintf(path, sizeof(path), "%s/tests/tools/%s", src ? src : ".", script);
    argv[n++] = "python3";
    argv[n++] = path;
    for (size_t i = 0; args[i] != NULL && n < SPAWN_MAX_ARGS + 2; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    if (pipe(pfd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive a crashed test */
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execv("/usr/bin/python3", (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    size_t len = 0;
    while (len < sizeof line - 1 && strchr(line, '\n') == NULL && poll(&p, 1, 10000) == 1) {
        ssize_t got = read(pfd[0], line + len, sizeof line - 1 - len);
        if (got <= 0)
            break;
        len += (size_t)got;
        line[len] = '\0';
    }
    close(pfd[0]);
    if (pid < 0 || sscanf(line, "READY %d", port) != 1) {
        fprintf(stderr, "%s did not start: \"%s\"\n", path, line);
        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
        }
        return -1;
    }
    return pid;
}
