/*
 * toy: a tiny line-oriented "language" for test_bare_runtime.py, compiled static so that it runs in
 * an image holding nothing but it and the sandbox helper (no python3, no shell, no libc).
 * Usage: toy PROGRAM_FILE [ARGS...]; each line of the program is one command:
 *   print TEXT       TEXT and a newline on stdout
 *   args             each argument on its own line
 *   cat              stdin to stdout
 *   write NAME TEXT  /output/NAME holding TEXT and a newline
 *   litter           files in /tmp and /dev/shm
 *   leave-child      a detached grandchild that ignores SIGTERM and waits forever
 *   census           the command lines of the other processes (not init, not its own launcher), sorted,
 *                    one per line
 *   list DIR         the names in DIR, sorted, on one line
 *   spin             loop forever
 *   signals          how a write to a closed pipe and one past RLIMIT_FSIZE end, and whether
 *                    SIGTERM is at its default (it would have died otherwise)
 *   exit N           exit with N
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list(const char *directory, int processes)
{
    char *names[512];
    int count = 0;
    DIR *dir = opendir(directory);
    struct dirent *entry;
    while (dir && count < 512 && (entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        if (!processes) {
            names[count++] = strdup(entry->d_name);
            continue;
        }
        int pid = atoi(entry->d_name);
        if (pid <= 1 || pid == getpid() || pid == getppid())
            continue;
        char path[64], line[512] = "";
        snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
        int fd = open(path, O_RDONLY);
        ssize_t got = fd >= 0 ? read(fd, line, sizeof line - 1) : 0;
        if (fd >= 0)
            close(fd);
        for (ssize_t i = 0; i < got; i++)
            if (!line[i])
                line[i] = ' ';
        while (got > 0 && line[got - 1] == ' ')
            got--;
        line[got > 0 ? got : 0] = '\0';
        names[count++] = strdup(line);
    }
    if (dir)
        closedir(dir);
    qsort(names, (size_t)count, sizeof *names, by_name);
    for (int i = 0; i < count; i++)
        printf(processes ? "%s\n" : "%s%s", names[i], processes ? "" : (i + 1 < count ? " " : ""));
    if (!processes)
        printf("\n");
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    FILE *program = argc > 1 ? fopen(argv[1], "r") : NULL;
    if (!program) {
        fprintf(stderr, "toy: no program\n");
        return 2;
    }
    char line[4096];
    while (fgets(line, sizeof line, program)) {
        line[strcspn(line, "\n")] = '\0';
        char *rest = strchr(line, ' ');
        rest = rest ? rest + 1 : line + strlen(line);
        if (!strncmp(line, "print ", 6)) {
            printf("%s\n", rest);
        } else if (!strcmp(line, "args")) {
            for (int i = 2; i < argc; i++)
                printf("%s\n", argv[i]);
        } else if (!strcmp(line, "cat")) {
            char buffer[4096];
            ssize_t got;
            while ((got = read(0, buffer, sizeof buffer)) > 0)
                fwrite(buffer, 1, (size_t)got, stdout);
        } else if (!strncmp(line, "write ", 6)) {
            char *text = strchr(rest, ' ');
            char path[512];
            if (text)
                *text++ = '\0';
            snprintf(path, sizeof path, "/output/%s", rest);
            FILE *out = fopen(path, "w");
            if (!out)
                return 3;
            fprintf(out, "%s\n", text ? text : "");
            fclose(out);
        } else if (!strcmp(line, "litter")) {
            fclose(fopen("/tmp/litter", "w"));
            fclose(fopen("/dev/shm/litter", "w"));
        } else if (!strcmp(line, "leave-child")) {
            if (fork() == 0) {
                setsid();
                if (fork() == 0) {
                    signal(SIGTERM, SIG_IGN);
                    for (;;)
                        pause();
                }
                _exit(0);
            }
        } else if (!strcmp(line, "census")) {
            list("/proc", 1);
        } else if (!strncmp(line, "list ", 5)) {
            list(rest, 0);
        } else if (!strcmp(line, "signals")) {
            int ends[2];
            if (pipe(ends) == 0) {
                close(ends[0]);
                printf("pipe %s\n", write(ends[1], "x", 1) < 0 && errno == EPIPE ? "EPIPE" : "?");
            }
            struct rlimit small = {1, RLIM_INFINITY};
            getrlimit(RLIMIT_FSIZE, &small);
            small.rlim_cur = 1;
            setrlimit(RLIMIT_FSIZE, &small);
            int fd = open("/tmp/big", O_WRONLY | O_CREAT | O_TRUNC, 0600);
            ssize_t first = write(fd, "ab", 2);
            ssize_t second = write(fd, "c", 1);
            printf("fsize %zd %s\n", first, second < 0 && errno == EFBIG ? "EFBIG" : "?");
            struct sigaction term;
            sigaction(SIGTERM, NULL, &term);
            printf("term %s\n", term.sa_handler == SIG_DFL ? "default" : "changed");
        } else if (!strcmp(line, "spin")) {
            for (volatile unsigned long i = 0;; i++)
                ;
        } else if (!strncmp(line, "exit ", 5)) {
            return atoi(rest);
        } else {
            fprintf(stderr, "toy: unknown command: %s\n", line);
            return 2;
        }
    }
    return 0;
}
