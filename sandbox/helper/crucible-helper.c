/*
 * crucible-helper: the programs the host starts inside a sandbox, as one small static binary, so
 * that any image can be a runtime (no python3, no shell needed in it).
 *
 * It runs as the sandbox user, with no capabilities, under the sandbox's seccomp profile, on a
 * read-only root. Installed root-owned, mode 0755, at /usr/local/libexec/crucible-helper in every
 * image the project builds (apps/sandboxing/image.py compiles it: gcc -static -O2). The host's side
 * of each protocol is apps/sandboxing/helper.py; the host treats all of its output as hostile.
 *
 *   idle                          the container's main process: SIGTERM, SIGINT, SIGHUP ignored, waits forever
 *   term-all                      SIGTERM to every process the sandbox user may signal (not itself), exit 0
 *   launch CODE_PATH MARKER_HEX OUTPUT_DIR N KEY=VALUE*N ARGV...
 *                                 reads the payload header (helper.HEADER: four lengths and the run's
 *                                 16-byte nonce) from stdin, makes itself non-dumpable and forks. The
 *                                 child reads the rest (a seccomp filter, the code, the program's stdin,
 *                                 extra files), writes the files (never through a link, never over an
 *                                 existing file), makes fd 0 the stdin bytes, installs the filter,
 *                                 writes the marker to stderr then stdout, and execs ARGV with exactly
 *                                 the given environment (SIGPIPE and SIGXFSZ ignored, every other
 *                                 signal at its default). The parent (SIGTERM, SIGINT, SIGHUP ignored:
 *                                 a cancel's term-all is for the program; no stdin) waits for the child;
 *                                 if the child wrote the marker, it then writes one trailer to stdout
 *                                 and to stderr:
 *                                     \0crucible:end:NONCE_HEX:STATUS:empty|files\0
 *                                 (STATUS the exit status or 128 + the signal; "empty" when OUTPUT_DIR,
 *                                 opened without following a link, holds no entry) and exits STATUS.
 *                                 Without the marker (the child failed before it) there is no trailer.
 *                                 When it cannot fork it runs the program in its own process, as
 *                                 before the trailer existed: no trailer either.
 *   collect ROOT MAX_FILES MAX_BYTES
 *                                 writes the records of the regular files under ROOT (streams.py parses them)
 *   reap                          SIGKILLs every process but init, the idle main process and itself
 *   reap reset DIR...             also empties each DIR and verifies the sandbox is clean
 *   serve                         one exec for all the programs of a reused sandbox (non-dumpable, SIGTERM,
 *                                 SIGINT, SIGHUP and SIGPIPE ignored): reads frames [kind (1)][length (4)]
 *                                 [body] from stdin until it ends. L: [fields length (4)], the workdir
 *                                 and launch's arguments (each NUL-terminated), then launch's payload:
 *                                 the program runs in a child exactly as launch's child (the workdir its
 *                                 cwd); once it has ended, this process SIGKILLs every process but init,
 *                                 the idle main process and itself (nothing a program left runs while
 *                                 the host writes a frame), writes launch's trailer with the payload's
 *                                 nonce and reads the next frame (without the marker, or when what the
 *                                 program left survives the SIGKILLs, no trailer: it exits as launch
 *                                 does, with the child's status). R: [nonce (16)][DIR, NUL-terminated]*: as
 *                                 reap reset (this process spared, counted as expected), then the reply
 *                                     \0crucible:reset:NONCE_HEX:ok|REASON\0
 *                                 on stdout and then stderr. P (only right after an R whose reply was ok,
 *                                 else ignored): [fields length (4)][the workdir and launch's arguments,
 *                                 the marker empty][argv length (4)][ARGV][a seccomp filter]: ARGV (a
 *                                 Python interpreter that waits, sandbox/prestart) starts ahead as
 *                                 launch's child would start the program, its fd 0 a pipe; the next L
 *                                 frame with the same fields (the marker aside) and filter runs on it
 *                                 (this process writes the files and the marker, then the go on the
 *                                 pipe: [f, the stdin file's path | n], NUL); any other frame kills it
 *                                 first. Anything it cannot do (a frame that is not
 *                                 acceptable, no process to spare, a failed write): it exits, no trailer,
 *                                 no reply. The sandbox user may kill it: the stream then ends.
 *   await                         the main process of a fresh sandbox (stdin open) whose one program the
 *                                 host sends over attach, no exec: non-dumpable, SIGTERM, SIGINT, SIGHUP
 *                                 and SIGPIPE ignored, it writes nothing until it has read one L frame
 *                                 (serve's) from stdin; the program runs in a child exactly as launch's
 *                                 child, this process writes launch's trailer, then reads stdin to its
 *                                 end (the host closes it once it has read the counters and, with
 *                                 "files", collected /output by exec) and exits with the program's
 *                                 status: the container stops by itself. Stdin ending before a frame:
 *                                 it idles (a warm sandbox that ran its program by exec instead).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- shared ---------------------------------------------------------------------------------- */

static int write_all(int fd, const void *data, size_t size)
{
    const char *at = data;
    while (size) {
        ssize_t done = write(fd, at, size);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        at += done;
        size -= (size_t)done;
    }
    return 0;
}

static void say(const char *prefix, const char *format, ...)
{
    char line[1024];
    int used = snprintf(line, sizeof line, "%s: ", prefix);
    va_list args;
    va_start(args, format);
    vsnprintf(line + used, sizeof line - (size_t)used, format, args);
    va_end(args);
    size_t length = strnlen(line, sizeof line - 2);
    line[length] = '\n';
    write_all(2, line, length + 1);
}

/* A non-negative decimal argument; -1 when it is not one. */
static long long parse_count(const char *text)
{
    if (!*text)
        return -1;
    long long value = 0;
    for (const char *at = text; *at; at++) {
        if (*at < '0' || *at > '9' || value > (LLONG_MAX - 9) / 10)
            return -1;
        value = value * 10 + (*at - '0');
    }
    return value;
}

/* ---- idle and term-all ----------------------------------------------------------------------- */

/* The signals a cancel (term-all) sends to every process, or a hang-up: for the program, never for
 * the idle main process or a launcher that waits to report. */
static void cancel_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

static void ignore_signal(int number)
{
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(number, &ignore, NULL);
}

static void ignore_cancel_signals(void)
{
    ignore_signal(SIGTERM);
    ignore_signal(SIGINT);
    ignore_signal(SIGHUP);
}

/* The idle main process: a cancel's SIGTERM to every process reaches the program, not this one. */
static _Noreturn void cmd_idle(void)
{
    ignore_cancel_signals();
    for (;;)
        pause();
}

static int cmd_term_all(void)
{
    kill(-1, SIGTERM);
    return 0;
}

/* ---- launch ---------------------------------------------------------------------------------- */

#define EXIT_PAYLOAD_SHORT 125
#define EXIT_NO_FILTER 126
#define EXIT_CANNOT_RUN 127
#define STDIN_FILE ".stdin" /* next to the code file; not a valid runtime file name */
#define LAUNCHER "crucible-launcher"

static void launch_fail(int code, const char *format, ...)
{
    char message[900];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    say(LAUNCHER, "%s", message);
    _exit(code);
}

/* Where read_exactly reads: stdin, or (serve's child) the rest of a frame already in memory. */
static const unsigned char *payload_left;
static size_t payload_left_size;

static unsigned char *read_exactly(size_t size)
{
    unsigned char *buffer = malloc(size ? size : 1);
    if (!buffer)
        launch_fail(EXIT_PAYLOAD_SHORT, "the payload does not fit in memory");
    if (payload_left) {
        if (size > payload_left_size)
            launch_fail(EXIT_PAYLOAD_SHORT, "payload ended early");
        memcpy(buffer, payload_left, size);
        payload_left += size;
        payload_left_size -= size;
        return buffer;
    }
    size_t have = 0;
    while (have < size) {
        ssize_t got = read(0, buffer + have, size - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            launch_fail(EXIT_PAYLOAD_SHORT, "payload ended early");
        have += (size_t)got;
    }
    return buffer;
}

static uint32_t be32(const unsigned char *at)
{
    return (uint32_t)at[0] << 24 | (uint32_t)at[1] << 16 | (uint32_t)at[2] << 8 | at[3];
}

/* Create NAME in the directory DIR_FD (never an existing file, never through a symlink) holding DATA. */
static void write_new_file(int dir_fd, const char *name, const unsigned char *data, size_t size, mode_t mode)
{
    int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        launch_fail(EXIT_CANNOT_RUN, "cannot create %s: %s", name, strerror(errno));
    if (write_all(fd, data, size) != 0)
        launch_fail(EXIT_CANNOT_RUN, "cannot write %s: %s", name, strerror(errno));
    close(fd);
}

/* The extra files of a payload (name length (2), content length (4), name, content)*: each written
 * next to the code file; a name with a path separator, a NUL or a leading dot is refused. */
static void write_files(int dir_fd, const unsigned char *blob, size_t size)
{
    size_t at = 0;
    while (at < size) {
        if (size - at < 6)
            launch_fail(EXIT_PAYLOAD_SHORT, "a file name or size in the payload is not acceptable");
        size_t name_len = (size_t)blob[at] << 8 | blob[at + 1];
        size_t content_len = be32(blob + at + 2);
        at += 6;
        if (name_len == 0 || name_len > 255 || name_len > size - at || content_len > size - at - name_len)
            launch_fail(EXIT_PAYLOAD_SHORT, "a file name or size in the payload is not acceptable");
        char name[256];
        memcpy(name, blob + at, name_len);
        name[name_len] = '\0';
        if (strlen(name) != name_len || strchr(name, '/') || name[0] == '.')
            launch_fail(EXIT_PAYLOAD_SHORT, "a file name or size in the payload is not acceptable");
        write_new_file(dir_fd, name, blob + at + name_len, content_len, 0444);
        at += name_len + content_len;
    }
}

static void install_filter(unsigned char *bpf, size_t size)
{
    struct sock_fprog program = {.len = (unsigned short)(size / sizeof(struct sock_filter)),
                                 .filter = (struct sock_filter *)bpf};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) != 0)
        launch_fail(EXIT_NO_FILTER, "cannot install the seccomp filter: %s", strerror(errno));
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The directory part of PATH, as Python's os.path.dirname says it (into OUT, PATH_MAX bytes). */
static void dirname_of(const char *path, char *out)
{
    const char *slash = strrchr(path, '/');
    size_t length = slash ? (size_t)(slash - path) + 1 : 0;
    size_t all = length;
    while (length > 0 && path[length - 1] == '/')
        length--;
    if (length == 0)
        length = all; /* only slashes: kept as they are */
    memcpy(out, path, length);
    out[length] = '\0';
}

/* execve COMMAND, searched in the environment's PATH when it names no directory (as Python's
 * os.execvpe: the first error other than "not found" is the one reported). Returns the errno. */
static int exec_searching(char **command, char **environment)
{
    if (strchr(command[0], '/')) {
        execve(command[0], command, environment);
        return errno;
    }
    const char *search = "/bin:/usr/bin";
    for (char **pair = environment; *pair; pair++)
        if (strncmp(*pair, "PATH=", 5) == 0)
            search = *pair + 5;
    int saved = 0, last = ENOENT;
    const char *at = search;
    for (;;) {
        const char *end = strchrnul(at, ':');
        char candidate[PATH_MAX];
        size_t dir_len = (size_t)(end - at);
        int written = dir_len ? snprintf(candidate, sizeof candidate, "%.*s/%s", (int)dir_len, at, command[0])
                              : snprintf(candidate, sizeof candidate, "%s", command[0]);
        if (written > 0 && (size_t)written < sizeof candidate) {
            execve(candidate, command, environment);
            last = errno;
            if (last != ENOENT && last != ENOTDIR && !saved)
                saved = last;
        }
        if (!*end)
            break;
        at = end + 1;
    }
    return saved ? saved : last;
}

#define NONCE_BYTES 16
#define HEADER_BYTES (16 + NONCE_BYTES) /* helper.HEADER */
#define TRAILER_START "crucible:end:"  /* after a NUL byte */

struct program {
    const char *code_path;
    const unsigned char *marker;
    size_t marker_len;
    char **environment;
    char **command;
    const unsigned char *header;
    const char *workdir; /* serve's: chdir there first (launch's exec has its workdir already) */
    int new_session;     /* await's: the program leads a session of its own (see cmd_await) */
};

/* Read the rest of the payload (its filter into BPF, FILTER_LEN set) and write the files: the extra
 * files, the code, and the stdin bytes to STDIN_FILE next to the code (its path into STDIN_PATH,
 * PATH_MAX bytes; "" when there are none). Refused: launch_fail. */
static void write_payload(const struct program *p, unsigned char **bpf, size_t *filter_len, char *stdin_path)
{
    const unsigned char *header = p->header;
    size_t code_len = be32(header + 4), stdin_len = be32(header + 8);
    size_t files_len = be32(header + 12);
    *filter_len = be32(header);
    *bpf = read_exactly(*filter_len);
    unsigned char *code = read_exactly(code_len);
    unsigned char *input = read_exactly(stdin_len);

    char directory[PATH_MAX];
    dirname_of(p->code_path, directory);
    const char *base = p->code_path + strlen(directory);
    while (*base == '/')
        base++;
    struct stat info;
    if (lstat(directory, &info) != 0 && errno == ENOENT) { /* a later program of several, in a directory of its own */
        if (mkdir(directory, 0755) != 0)
            launch_fail(EXIT_CANNOT_RUN, "cannot make %s: %s", directory, strerror(errno));
    }
    int dir_fd = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir_fd < 0)
        launch_fail(EXIT_CANNOT_RUN, "%s is not a directory of the sandbox's own", directory);
    unsigned char *files = read_exactly(files_len);
    write_files(dir_fd, files, files_len);
    free(files);
    if (*base) /* a directory alone: the code file is there already (a compiled run) */
        write_new_file(dir_fd, base, code, code_len, 0444);
    free(code);
    stdin_path[0] = '\0';
    if (stdin_len) {
        write_new_file(dir_fd, STDIN_FILE, input, stdin_len, 0400);
        snprintf(stdin_path, PATH_MAX, "%s/%s", *directory ? directory : ".", STDIN_FILE);
    }
    free(input);
    close(dir_fd);
}

/* The signals a program starts with (as the interpreter-based launcher this replaces left them:
 * python3 ignores both at startup and exec keeps an ignored signal ignored): a write to a closed
 * pipe or past the fsize limit fails with EPIPE or EFBIG instead of killing the program; serve
 * ignores the cancel signals, the program gets them at their default. */
static void program_signals(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
}

/* What launch did before the trailer existed, in the process it runs in: read the rest of the
 * payload, write the files, set up stdin (fd 0: the stdin bytes as a read-only unlinked file, or
 * /dev/null), install the filter, write the marker (then one byte to STARTED_FD, when there is
 * one: the parent's sign that the program's output begins), exec. */
static _Noreturn void start_program(const struct program *p, int started_fd)
{
    if (p->workdir && chdir(p->workdir) != 0)
        launch_fail(EXIT_CANNOT_RUN, "cannot enter %s: %s", p->workdir, strerror(errno));
    if (p->new_session)
        setsid();
    unsigned char *bpf;
    size_t filter_len;
    char stdin_path[PATH_MAX];
    write_payload(p, &bpf, &filter_len, stdin_path);
    int fd = *stdin_path ? open(stdin_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && *stdin_path)
        unlink(stdin_path);
    if (fd < 0 || dup2(fd, 0) < 0)
        launch_fail(EXIT_CANNOT_RUN, "cannot set up the program's stdin: %s", strerror(errno));
    close(fd);
    if (filter_len)
        install_filter(bpf, filter_len);
    program_signals();
    write_all(2, p->marker, p->marker_len);
    write_all(1, p->marker, p->marker_len);
    if (started_fd >= 0)
        write_all(started_fd, "m", 1); /* close-on-exec: the parent then reads the end of the pipe */
    int error = exec_searching(p->command, p->environment);
    launch_fail(EXIT_CANNOT_RUN, "cannot run %s: %s", p->command[0], strerror(error));
    _exit(EXIT_CANNOT_RUN);
}

/* Does DIRECTORY (opened without following a link) hold no entry? Anything unclear is "no". */
static int is_empty(const char *directory)
{
    int fd = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    struct dirent *entry;
    int empty = 1;
    errno = 0;
    while (empty && (entry = readdir(dir)))
        if (strcmp(entry->d_name, ".") && strcmp(entry->d_name, ".."))
            empty = 0;
    if (errno)
        empty = 0;
    closedir(dir);
    return empty;
}

static int kill_left_behind(void);

/* The parent of a launch (or serve): wait for the program (with REAP, then kill every process it
 * left), then say how it ended in the trailer (REPORTED set when it did: the program started, as
 * one byte on STARTED_FD says, or STARTED_FD is -1);
 * returns its status, or -1 when it cannot be waited for. */
static int report_program(pid_t child, int started_fd, const unsigned char *nonce, const char *output_dir, int reap,
                          int *reported)
{
    char sign;
    ssize_t got = 1; /* no STARTED_FD: the program is known to have started (a prestarted one) */
    if (started_fd >= 0) {
        do
            got = read(started_fd, &sign, 1);
        while (got < 0 && errno == EINTR);
        close(started_fd);
    }
    int status;
    pid_t done;
    do
        done = waitpid(child, &status, 0);
    while (done < 0 && errno == EINTR);
    if (done < 0)
        return -1;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    *reported = got == 1;
    if (reap && kill_left_behind() != 0)
        *reported = 0; /* something it left survives: no trailer, the host learns the end from the exit */
    if (*reported) {
        char trailer[128] = {0}; /* NUL, TRAILER_START, the nonce in hex, ":STATUS:empty|files", NUL */
        size_t length = 1 + strlen(TRAILER_START);
        memcpy(trailer + 1, TRAILER_START, strlen(TRAILER_START));
        for (int i = 0; i < NONCE_BYTES; i++, length += 2)
            snprintf(trailer + length, 3, "%02x", nonce[i]);
        length += (size_t)snprintf(trailer + length, sizeof trailer - length - 1, ":%d:%s", code,
                                   is_empty(output_dir) ? "empty" : "files");
        trailer[length++] = '\0';
        write_all(1, trailer, length);
        write_all(2, trailer, length);
    }
    return code;
}

/* The launch arguments CODE_PATH MARKER_HEX OUTPUT_DIR N KEY=VALUE*N ARGV... into P (all but its
 * header) and OUTPUT_DIR; the marker is decoded into MARKER (256 bytes). Refused: launch_fail. */
static void parse_program(int argc, char **argv, struct program *p, unsigned char *marker, const char **output_dir)
{
    if (argc < 5)
        launch_fail(EXIT_CANNOT_RUN, "usage: launch CODE_PATH MARKER_HEX OUTPUT_DIR N KEY=VALUE... ARGV...");
    const char *code_path = argv[0], *marker_hex = argv[1];
    long long pairs = parse_count(argv[3]);
    char **rest = argv + 4; /* KEY=VALUE*N ARGV... */
    int rest_count = argc - 4;
    size_t marker_len = strlen(marker_hex) / 2;
    if (pairs < 0 || pairs >= rest_count || strlen(marker_hex) % 2 || marker_len > 256 ||
        strlen(code_path) >= PATH_MAX)
        launch_fail(EXIT_CANNOT_RUN, "the arguments are not acceptable");
    for (size_t i = 0; i < marker_len; i++) {
        int high = hex_digit(marker_hex[2 * i]), low = hex_digit(marker_hex[2 * i + 1]);
        if (high < 0 || low < 0)
            launch_fail(EXIT_CANNOT_RUN, "the arguments are not acceptable");
        marker[i] = (unsigned char)(high << 4 | low);
    }
    char **environment = calloc((size_t)pairs + 1, sizeof *environment);
    if (!environment)
        launch_fail(EXIT_CANNOT_RUN, "out of memory");
    for (long long i = 0; i < pairs; i++) {
        if (!strchr(rest[i], '='))
            launch_fail(EXIT_CANNOT_RUN, "the arguments are not acceptable");
        environment[i] = rest[i];
    }
    *p = (struct program){code_path, marker, marker_len, environment, rest + pairs, NULL, NULL, 0};
    *output_dir = argv[2];
}

/* Fork the program's process (its header read already); returns the child's pid to the parent with
 * STARTED_FD set (the pipe's read end), or -1 when there is no process to spare. */
static pid_t fork_program(const struct program *p, int *started_fd)
{
    sigset_t blocked, before;
    cancel_signals(&blocked);
    sigprocmask(SIG_BLOCK, &blocked, &before); /* until the parent ignores them */
    int started[2];
    pid_t child = -1;
    if (pipe2(started, O_CLOEXEC) == 0) {
        child = fork();
        if (child < 0) {
            close(started[0]);
            close(started[1]);
        }
    }
    if (child == 0) {
        close(started[0]);
        explicit_bzero((unsigned char *)p->header + 16, NONCE_BYTES); /* the child never needs it */
        sigprocmask(SIG_SETMASK, &before, NULL);
        start_program(p, started[1]); /* exec replaces the memory that holds the nonce */
    }
    if (child > 0) {
        close(started[1]);
        *started_fd = started[0];
        ignore_cancel_signals();
        ignore_signal(SIGPIPE); /* a stream the host closed: the trailer is lost, not this process */
    }
    sigprocmask(SIG_SETMASK, &before, NULL); /* one sent meanwhile was pending: now discarded */
    return child;
}

static int cmd_launch(int argc, char **argv)
{
    /* Nothing of the same user may read the nonce: not ptrace, not /proc/PID/mem. The child's exec
     * makes the program dumpable again, as usual. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct program program;
    unsigned char marker[256];
    const char *output_dir;
    parse_program(argc, argv, &program, marker, &output_dir);
    unsigned char *header = read_exactly(HEADER_BYTES);
    program.header = header;
    int started_fd;
    pid_t child = fork_program(&program, &started_fd);
    if (child < 0) /* no process to spare (the pids limit): the program runs without a trailer */
        start_program(&program, -1);
    close(0); /* the rest of the payload is the child's, and the program's stdin never this one's */
    int reported;
    int code = report_program(child, started_fd, header + 16, output_dir, 0, &reported);
    _exit(code < 0 ? EXIT_CANNOT_RUN : code);
}

/* ---- collect --------------------------------------------------------------------------------- */

#define MAX_ENTRIES 100000 /* directory entries looked at, in all */
#define MAX_DEPTH 15       /* directories below the root that are entered */
#define MAX_NAME_BYTES 255 /* a relative path longer than this is left out (streams.MAX_NAME_BYTES) */
#define COPY_CHUNK 65536

static unsigned char out_buffer[1 << 16];
static size_t out_used;

static void out_flush(void)
{
    if (out_used && write_all(1, out_buffer, out_used) != 0)
        _exit(1); /* the host stopped reading */
    out_used = 0;
}

static void out_write(const void *data, size_t size)
{
    if (size > sizeof out_buffer - out_used) {
        out_flush();
        if (size > sizeof out_buffer) {
            if (write_all(1, data, size) != 0)
                _exit(1);
            return;
        }
    }
    memcpy(out_buffer + out_used, data, size);
    out_used += size;
}

static void out_record(char kind, const char *name, size_t name_len, uint64_t size)
{
    unsigned char header[13];
    header[0] = (unsigned char)kind;
    for (int i = 0; i < 4; i++)
        header[1 + i] = (unsigned char)(name_len >> (8 * (3 - i)));
    for (int i = 0; i < 8; i++)
        header[5 + i] = (unsigned char)(size >> (8 * (7 - i)));
    out_write(header, sizeof header);
    out_write(name, name_len);
}

struct pending {
    char *relative; /* "" for the root, else "a/b" below it */
    int depth;
};

struct collector {
    int root_fd;
    long long max_files, max_bytes;
    long long files, total_bytes, entries_seen;
    struct pending *stack;
    size_t stack_used, stack_size;
};

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b); /* bytewise, as Python sorts bytes */
}

/* Open the directory RELATIVE below the root, one component at a time, never following a link. */
static int open_below(int root_fd, const char *relative)
{
    int fd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char part[NAME_MAX + 1];
    const char *at = relative;
    while (fd >= 0 && *at) {
        const char *end = strchrnul(at, '/');
        size_t length = (size_t)(end - at);
        if (length > NAME_MAX) {
            close(fd);
            return -1;
        }
        memcpy(part, at, length);
        part[length] = '\0';
        int next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        fd = next;
        at = *end ? end + 1 : end;
    }
    return fd;
}

/* The sorted names in the directory DIR_FD (at most MAX_ENTRIES), or 0 names when it cannot be read. */
static char **directory_names(int dir_fd, size_t *count)
{
    *count = 0;
    int fd = dup(dir_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    size_t size = 64;
    char **names = malloc(size * sizeof *names);
    struct dirent *entry;
    while (names && (entry = readdir(dir))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, ".."))
            continue;
        if (*count == size) {
            size *= 2;
            char **grown = realloc(names, size * sizeof *names);
            if (!grown)
                break;
            names = grown;
        }
        if (!(names[*count] = strdup(entry->d_name)))
            break;
        (*count)++;
    }
    closedir(dir);
    if (!names)
        return NULL;
    qsort(names, *count, sizeof *names, compare_names);
    return names;
}

/* Exactly SIZE bytes of the file FD (zeros in place of what it lost after the fstat). */
static void copy_file(int fd, uint64_t size)
{
    static unsigned char chunk[COPY_CHUNK];
    while (size) {
        size_t want = size < COPY_CHUNK ? (size_t)size : COPY_CHUNK;
        ssize_t got = read(fd, chunk, want);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            memset(chunk, 0, want);
            got = (ssize_t)want;
        }
        out_write(chunk, (size_t)got);
        size -= (uint64_t)got;
    }
}

/* One F record with the file's bytes, or an S record when it would pass the byte cap. */
static void send_file(struct collector *c, int dir_fd, const char *entry, const char *name, size_t name_len)
{
    int fd = openat(dir_fd, entry, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat info;
    if (fstat(fd, &info) == 0 && S_ISREG(info.st_mode)) {
        long long size = info.st_size;
        if (size > c->max_bytes - c->total_bytes) {
            out_record('S', name, name_len, (uint64_t)size);
        } else {
            out_record('F', name, name_len, (uint64_t)size);
            copy_file(fd, (uint64_t)size);
            c->total_bytes += size;
            c->files++;
        }
    }
    close(fd);
}

static void push(struct collector *c, char *relative, int depth)
{
    if (c->stack_used == c->stack_size) {
        c->stack_size = c->stack_size ? c->stack_size * 2 : 64;
        c->stack = realloc(c->stack, c->stack_size * sizeof *c->stack);
        if (!c->stack)
            _exit(1);
    }
    c->stack[c->stack_used++] = (struct pending){relative, depth};
}

/* Visit every entry of one directory; returns 0, or -1 when a cap is reached. */
static int visit_directory(struct collector *c, const char *relative, int depth)
{
    int dir_fd = *relative ? open_below(c->root_fd, relative) : dup(c->root_fd);
    if (dir_fd < 0)
        return 0;
    size_t count = 0;
    char **names = directory_names(dir_fd, &count);
    int result = 0;
    for (size_t i = 0; i < count; i++) {
        const char *entry = names[i];
        if (i >= MAX_ENTRIES || result)
            goto next;
        if (++c->entries_seen > MAX_ENTRIES) {
            result = -1;
            goto next;
        }
        struct stat info;
        if (fstatat(dir_fd, entry, &info, AT_SYMLINK_NOFOLLOW) != 0)
            goto next;
        size_t name_len = (*relative ? strlen(relative) + 1 : 0) + strlen(entry);
        char *name = malloc(name_len + 1);
        if (!name)
            _exit(1);
        snprintf(name, name_len + 1, "%s%s%s", relative, *relative ? "/" : "", entry);
        if (S_ISDIR(info.st_mode)) {
            if (depth < MAX_DEPTH) {
                push(c, name, depth + 1);
                name = NULL;
            }
        } else if (S_ISREG(info.st_mode)) {
            if (c->files >= c->max_files)
                result = -1;
            else if (name_len > MAX_NAME_BYTES)
                out_write("L", 1);
            else
                send_file(c, dir_fd, entry, name, name_len);
        }
        free(name);
    next:
        free(names[i]);
    }
    free(names);
    close(dir_fd);
    return result;
}

static int cmd_collect(int argc, char **argv)
{
    if (argc != 3) {
        say("crucible-collector", "usage: collect ROOT MAX_FILES MAX_BYTES");
        return 2;
    }
    struct collector c = {.max_files = parse_count(argv[1]), .max_bytes = parse_count(argv[2])};
    if (c.max_files < 0 || c.max_bytes < 0) {
        say("crucible-collector", "the caps are not numbers");
        return 2;
    }
    c.root_fd = open(argv[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c.root_fd >= 0) {
        push(&c, strdup(""), 0);
        while (c.stack_used) {
            struct pending next = c.stack[--c.stack_used];
            int capped = next.relative ? visit_directory(&c, next.relative, next.depth) : 0;
            free(next.relative);
            if (capped) {
                out_write("T", 1);
                break;
            }
        }
    }
    out_write("E", 1);
    out_flush();
    return 0;
}

/* ---- reap ------------------------------------------------------------------------------------ */

#define ROUNDS 50
#define PAUSE_NS 10000000L
#define MAX_REMOVE_DEPTH 256
#define REAPER "reaper"

struct process {
    int pid;
    unsigned long long started;
};

/* The start time (field 22 of /proc/PID/stat) of PID; 0 when it is gone, 1 when it is there. */
static int start_time(int pid, unsigned long long *started)
{
    char path[64], data[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t got = read(fd, data, sizeof data - 1);
    close(fd);
    if (got <= 0)
        return 0;
    data[got] = '\0';
    *started = ULLONG_MAX; /* unreadable: never taken for the idle process while another is there */
    char *at = strrchr(data, ')');
    if (!at)
        return 1;
    at++;
    for (int field = 0; field < 20 && at; field++) { /* after "pid (comm)": state is field 3, start time 22 */
        while (*at == ' ')
            at++;
        if (field == 19) {
            char *end;
            unsigned long long value = strtoull(at, &end, 10);
            if (end != at)
                *started = value;
            break;
        }
        at = strchr(at, ' ');
    }
    return 1;
}

/* Every process this process can see, but init and ME; COUNT set. NULL when they cannot all be listed. */
static struct process *processes(int me, size_t *count)
{
    *count = 0;
    DIR *proc = opendir("/proc");
    if (!proc)
        return NULL;
    size_t size = 64;
    struct process *found = malloc(size * sizeof *found);
    struct dirent *entry;
    while (found && (entry = readdir(proc))) {
        long long pid = parse_count(entry->d_name);
        if (pid <= 1 || pid == me || pid > INT_MAX)
            continue;
        unsigned long long started;
        if (!start_time((int)pid, &started))
            continue;
        if (*count == size) {
            size *= 2;
            struct process *grown = realloc(found, size * sizeof *found);
            if (!grown)
                free(found);
            found = grown;
            if (!found)
                break;
        }
        found[(*count)++] = (struct process){(int)pid, started};
    }
    closedir(proc);
    return found;
}

/* How many processes are left behind (all seen but the oldest, the idle main process); with KILL,
 * each of them gets SIGKILL. UNLISTED when the processes cannot be listed (never taken for none). */
#define UNLISTED ((size_t)-1)
static size_t left_behind(int kill_them)
{
    size_t count;
    struct process *found = processes(getpid(), &count);
    if (!found)
        return UNLISTED;
    size_t idle = 0;
    for (size_t i = 1; i < count; i++)
        if (found[i].started < found[idle].started ||
            (found[i].started == found[idle].started && found[i].pid < found[idle].pid))
            idle = i;
    if (kill_them)
        for (size_t i = 0; i < count; i++)
            if (i != idle)
                kill(found[i].pid, SIGKILL);
    free(found);
    return count ? count - 1 : 0;
}

/* SIGKILL what left_behind names until nothing is; 0, or -1 if something survives ROUNDS. */
static int kill_left_behind(void)
{
    struct timespec pause_for = {0, PAUSE_NS};
    for (int round = 0; round < ROUNDS; round++) {
        if (!left_behind(1))
            return 0;
        nanosleep(&pause_for, NULL);
    }
    return -1;
}

/* Remove everything in the directory DIR_FD, never following a link; -1 (errno set) on failure. */
static int empty_fd(int dir_fd, int depth)
{
    if (depth > MAX_REMOVE_DEPTH) {
        errno = ELOOP;
        return -1;
    }
    for (;;) {
        int fd = dup(dir_fd);
        DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
        if (!dir) {
            if (fd >= 0)
                close(fd);
            return -1;
        }
        rewinddir(dir);
        int removed = 0, failed = 0;
        struct dirent *entry;
        while ((entry = readdir(dir))) {
            if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, ".."))
                continue;
            if (unlinkat(dir_fd, entry->d_name, 0) == 0 || errno == ENOENT) {
                removed++;
                continue;
            }
            if (errno != EISDIR && errno != EPERM) {
                failed = errno;
                break;
            }
            int child = openat(dir_fd, entry->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child < 0) {
                failed = errno;
                break;
            }
            int emptied = empty_fd(child, depth + 1);
            failed = emptied ? errno : 0;
            close(child);
            if (failed)
                break;
            if (unlinkat(dir_fd, entry->d_name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
                failed = errno;
                break;
            }
            removed++;
        }
        closedir(dir);
        if (failed) {
            errno = failed;
            return -1;
        }
        if (!removed)
            return 0;
    }
}

static void append(char *text, size_t size, const char *format, ...)
{
    size_t used = strlen(text);
    if (used && used + 2 < size) {
        strcat(text, "; ");
        used += 2;
    }
    va_list args;
    va_start(args, format);
    vsnprintf(text + used, size - used, format, args);
    va_end(args);
}

/* The System V IPC objects left (they outlive their processes), appended to PROBLEMS. */
static void ipc_left(char *problems, size_t size)
{
    struct shm_info shm;
    struct seminfo sem;
    struct msginfo msg;
    union semun {
        int val;
        struct semid_ds *buf;
        unsigned short *array;
        struct seminfo *__buf;
    } sem_arg = {.__buf = &sem};
    if (shmctl(0, SHM_INFO, (struct shmid_ds *)&shm) < 0 || semctl(0, 0, SEM_INFO, sem_arg) < 0 ||
        msgctl(0, MSG_INFO, (struct msqid_ds *)&msg) < 0) {
        append(problems, size, "System V IPC cannot be inspected");
        return;
    }
    if (shm.used_ids)
        append(problems, size, "%d System V shared memory segments left", shm.used_ids);
    if (sem.semusz)
        append(problems, size, "%d System V semaphore sets left", sem.semusz);
    if (msg.msgpool)
        append(problems, size, "%d System V message queues left", msg.msgpool);
}

/* What keeps the sandbox from being clean, into PROBLEMS (empty when it is clean). */
static void unclean(int count, char **directories, char *problems, size_t size)
{
    problems[0] = '\0';
    size_t others = left_behind(0);
    if (others == UNLISTED)
        append(problems, size, "the processes cannot be listed");
    else if (others)
        append(problems, size, "%zu processes still alive", others);
    for (int i = 0; i < count; i++)
        if (!is_empty(directories[i]))
            append(problems, size, "%s is not empty", directories[i]);
    ipc_left(problems, size);
}

/* Kill what is left (all but init, the idle main process and this one), empty the COUNT DIRECTORIES
 * and verify the sandbox is clean: PROBLEMS empty, else why not.
 *
 * When the kill's last look at the processes found none left, that look is the check of the
 * processes, and each directory's last emptying pass (one that found nothing to remove) is its check:
 * no process of the sandbox is left to write in one after it, and this process starts none before
 * it replies. Looking again would cost a sandbox under gVisor about 36 system calls per reset. When
 * something was left, everything is looked at again. */
static void reset_sandbox(int count, char **directories, char *problems, size_t size)
{
    int none_left = kill_left_behind() == 0;
    for (int i = 0; i < count; i++) {
        int fd = open(directories[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || empty_fd(fd, 0) != 0) {
            problems[0] = '\0';
            append(problems, size, "cannot empty: %s: %s", directories[i], strerror(errno));
            if (fd >= 0)
                close(fd);
            return;
        }
        close(fd);
    }
    char found[2048];
    found[0] = '\0';
    if (none_left)
        ipc_left(found, sizeof found);
    else
        unclean(count, directories, found, sizeof found);
    problems[0] = '\0';
    if (found[0])
        append(problems, size, "not clean: %s", found);
}

static int cmd_reap(int argc, char **argv)
{
    if (argc == 0)
        return kill_left_behind() == 0 ? 0 : 1;
    if (strcmp(argv[0], "reset") != 0) {
        say(REAPER, "unknown mode");
        return 2;
    }
    char problems[2048];
    reset_sandbox(argc - 1, argv + 1, problems, sizeof problems);
    if (problems[0]) {
        say(REAPER, "%s", problems);
        return 2;
    }
    return 0;
}

/* ---- serve ----------------------------------------------------------------------------------- */

#define SERVER "crucible-server"
#define MAX_FRAME (256u << 20) /* a frame's body, at most */
#define MAX_FIELDS 4096        /* NUL-terminated strings in a frame's fields */
#define RESET_REPLY_START "crucible:reset:" /* after a NUL byte */

/* One frame [kind (1)][length (4)][body] from stdin: the body (KIND and SIZE set), or NULL when stdin
 * ended before it began. Anything else that is not a whole acceptable frame: launch_fail. */
static unsigned char *read_frame(char *kind, size_t *size)
{
    unsigned char head[5];
    size_t have = 0;
    while (have < sizeof head) {
        ssize_t got = read(0, head + have, sizeof head - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got == 0 && have == 0)
            return NULL;
        if (got <= 0)
            launch_fail(EXIT_PAYLOAD_SHORT, "a frame ended early");
        have += (size_t)got;
    }
    *kind = (char)head[0];
    *size = be32(head + 1);
    if (*size > MAX_FRAME || (*kind != 'L' && *kind != 'R' && *kind != 'P'))
        launch_fail(EXIT_CANNOT_RUN, "a frame is not acceptable");
    return read_exactly(*size);
}

/* The NUL-terminated strings of FIELDS (SIZE bytes, the last one a NUL) into a NULL-ended array. */
static char **split_fields(char *fields, size_t size, int *count)
{
    if (!size || fields[size - 1] != '\0')
        launch_fail(EXIT_CANNOT_RUN, "a frame's fields are not acceptable");
    char **list = calloc(MAX_FIELDS + 1, sizeof *list);
    if (!list)
        launch_fail(EXIT_CANNOT_RUN, "out of memory");
    *count = 0;
    for (size_t at = 0; at < size; at += strlen(fields + at) + 1) {
        if (*count == MAX_FIELDS)
            launch_fail(EXIT_CANNOT_RUN, "a frame's fields are not acceptable");
        list[(*count)++] = fields + at;
    }
    return list;
}

/* An L frame: [fields length (4)][WORKDIR, then launch's arguments, each NUL-terminated][payload],
 * into P (its header read: HEADER set, the rest of the payload left for the child in payload_left)
 * and OUTPUT_DIR, which point into BODY and the returned list of fields (to free). */
static char **take_launch_frame(unsigned char *body, size_t size, struct program *p, unsigned char *marker,
                                const char **output_dir, unsigned char **header)
{
    if (size < 4 || be32(body) > size - 4)
        launch_fail(EXIT_CANNOT_RUN, "a launch frame is not acceptable");
    size_t fields_len = be32(body);
    int count;
    char **fields = split_fields((char *)body + 4, fields_len, &count);
    if (count < 1 || strlen(fields[0]) >= PATH_MAX)
        launch_fail(EXIT_CANNOT_RUN, "a launch frame is not acceptable");
    parse_program(count - 1, fields + 1, p, marker, output_dir);
    payload_left = body + 4 + fields_len;
    payload_left_size = size - 4 - fields_len;
    *header = read_exactly(HEADER_BYTES);
    p->header = *header;
    p->workdir = fields[0];
    return fields;
}

/* The interpreter a P frame started ahead for the next program (see cmd_serve), or none (pid 0). */
static struct {
    pid_t pid;
    int go_fd;              /* the write end of the pipe that is its fd 0 until the go */
    unsigned char *body;    /* the P frame, which FIELDS and FILTER point into */
    char **fields;          /* the workdir and launch's arguments an L frame must repeat (its marker aside) */
    int count;
    const unsigned char *filter;
    size_t filter_len;
} ahead;
static int clean_reset; /* the last frame was an R whose reply was "ok": a P frame may follow */

/* Kill the interpreter started ahead, if any, and wait for it (nothing of it left, not even a zombie). */
static void discard_ahead(void)
{
    if (ahead.pid > 0) {
        kill(ahead.pid, SIGKILL);
        while (waitpid(ahead.pid, NULL, 0) < 0 && errno == EINTR)
            ;
        close(ahead.go_fd);
    }
    free(ahead.body);
    free(ahead.fields);
    memset(&ahead, 0, sizeof ahead);
}

/* A P frame: [fields length (4)][WORKDIR, then launch's arguments with an empty MARKER_HEX, each
 * NUL-terminated][argv length (4)][ARGV, each NUL-terminated][a seccomp filter]. Right after a
 * clean reset (else it is ignored), start ARGV ahead as launch's child would start the program: as
 * this user, in WORKDIR, with exactly the environment of the arguments, the filter installed, the
 * program's signals, this process's stdout and stderr, and as fd 0 a pipe, its only other fd. On it
 * comes the go (serve_launch_ahead): [f, the stdin file's path | n], NUL. ARGV is meant to block
 * until then (python3 -X crucible_prestart: sandbox/prestart/crucible_prestart.py). */
static void serve_prestart(unsigned char *body, size_t size)
{
    if (!clean_reset) {
        free(body);
        return;
    }
    clean_reset = 0;
    discard_ahead();
    if (size < 4 || be32(body) > size - 4)
        launch_fail(EXIT_CANNOT_RUN, "a prestart frame is not acceptable");
    size_t fields_len = be32(body), at = 4 + fields_len;
    if (size - at < 4 || be32(body + at) > size - at - 4)
        launch_fail(EXIT_CANNOT_RUN, "a prestart frame is not acceptable");
    size_t argv_len = be32(body + at);
    int count, argc;
    char **fields = split_fields((char *)body + 4, fields_len, &count);
    char **command = split_fields((char *)body + at + 4, argv_len, &argc);
    struct program program;
    unsigned char marker[256];
    const char *output_dir;
    if (count < 1 || strlen(fields[0]) >= PATH_MAX)
        launch_fail(EXIT_CANNOT_RUN, "a prestart frame is not acceptable");
    parse_program(count - 1, fields + 1, &program, marker, &output_dir);
    const unsigned char *filter = body + at + 4 + argv_len;
    size_t filter_len = size - at - 4 - argv_len;
    int go[2];
    pid_t child = -1;
    if (pipe2(go, O_CLOEXEC) == 0) {
        child = fork();
        if (child < 0) {
            close(go[0]);
            close(go[1]);
        }
    }
    if (child == 0) {
        if (dup2(go[0], 0) < 0 || chdir(fields[0]) != 0) /* dup2: fd 0 is not close-on-exec */
            _exit(EXIT_CANNOT_RUN);
        if (filter_len) {
            struct sock_fprog bpf = {.len = (unsigned short)(filter_len / sizeof(struct sock_filter)),
                                     .filter = (struct sock_filter *)filter};
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &bpf, 0, 0) != 0)
                _exit(EXIT_NO_FILTER);
        }
        program_signals();
        exec_searching(command, program.environment);
        _exit(EXIT_CANNOT_RUN); /* quietly: the next program then starts the usual way */
    }
    free(command);
    free(program.environment);
    if (child < 0) { /* no process to spare: the next program starts the usual way */
        free(fields);
        free(body);
        return;
    }
    close(go[0]);
    ahead.pid = child;
    ahead.go_fd = go[1];
    ahead.body = body;
    ahead.fields = fields;
    ahead.count = count;
    ahead.filter = filter;
    ahead.filter_len = filter_len;
}

/* Is the interpreter started ahead alive and started as the program of this L frame's FIELDS (COUNT
 * of them) would be: the same workdir and arguments (the marker aside) and the same FILTER? */
static int ahead_matches(char **fields, int count, const unsigned char *filter, size_t filter_len)
{
    if (ahead.pid <= 0 || count != ahead.count || filter_len != ahead.filter_len ||
        memcmp(filter, ahead.filter, filter_len) != 0)
        return 0;
    for (int i = 0; i < count; i++)
        if (i != 2 && strcmp(fields[i], ahead.fields[i]) != 0) /* fields[2]: the marker */
            return 0;
    return waitpid(ahead.pid, NULL, WNOHANG) == 0;
}

/* The program of an L frame on the interpreter started ahead (ahead_matches): this process writes
 * the files as launch's child would (its stdin bytes to a file the interpreter opens, unlinks and
 * makes its fd 0), the marker, then the go; returns the interpreter's pid (no longer "ahead"). */
static pid_t launch_ahead(const struct program *p)
{
    unsigned char *bpf;
    size_t filter_len;
    char go[PATH_MAX + 2];
    write_payload(p, &bpf, &filter_len, go + 1); /* a refusal: this process exits as the child would */
    free(bpf);
    go[0] = go[1] ? 'f' : 'n';
    write_all(2, p->marker, p->marker_len);
    write_all(1, p->marker, p->marker_len);
    /* A failed write (it died meanwhile, e.g. a cancel's SIGTERM) is its end: the trailer reports it. */
    write_all(ahead.go_fd, go, strlen(go) + 1);
    close(ahead.go_fd);
    pid_t child = ahead.pid;
    ahead.pid = 0;
    discard_ahead();
    return child;
}

/* An L frame (take_launch_frame): the program runs in a child as launch's child; this process
 * writes the trailer and goes on. */
static void serve_launch(unsigned char *body, size_t size)
{
    struct program program;
    unsigned char marker[256], *header;
    const char *output_dir;
    char **fields = take_launch_frame(body, size, &program, marker, &output_dir, &header);
    int count = 0, started_fd = -1;
    while (fields[count])
        count++;
    size_t filter_len = be32(header);
    pid_t child;
    clean_reset = 0;
    if (filter_len <= payload_left_size && ahead_matches(fields, count, payload_left, filter_len)) {
        child = launch_ahead(&program);
    } else {
        discard_ahead(); /* another program than the one it was started for (or it died): not used */
        child = fork_program(&program, &started_fd);
    }
    if (child == 0 || child < 0) /* (never 0: the child execs or exits) no process to spare: no trailer */
        launch_fail(EXIT_CANNOT_RUN, "cannot fork: %s", strerror(errno));
    payload_left = NULL;
    int reported;
    /* What the program left running is killed before its trailer: none of it is alive when the host,
     * having read the trailer, sends the next frame (under gVisor a process of the same user may
     * open this process's /proc/PID/fd/0, non-dumpable as it is). */
    int code = report_program(child, started_fd, header + 16, output_dir, 1, &reported);
    explicit_bzero(header, HEADER_BYTES);
    free(header);
    free(fields);
    if (code < 0)
        launch_fail(EXIT_CANNOT_RUN, "cannot wait for the program");
    if (!reported) /* it never started (its complaint is on stderr), or what it left survives: as launch
                    * without a trailer, exit with its status */
        _exit(code);
}

/* An R frame: [nonce (16)][DIR, NUL-terminated]*: reset the sandbox as reap reset does (this process
 * spared), then reply on stdout and stderr: NUL, RESET_REPLY_START, the nonce in hex, ":ok" or
 * ":not clean: ..." (the reason), NUL. */
static void serve_reset(unsigned char *body, size_t size)
{
    if (size <= NONCE_BYTES)
        launch_fail(EXIT_CANNOT_RUN, "a reset frame is not acceptable");
    discard_ahead();
    int count;
    char **directories = split_fields((char *)body + NONCE_BYTES, size - NONCE_BYTES, &count);
    char problems[2048];
    reset_sandbox(count, directories, problems, sizeof problems);
    free(directories);
    clean_reset = !problems[0];
    for (char *at = problems; *at; at++)
        if (*at == ':' || (unsigned char)*at < ' ')
            *at = ' '; /* the reply's reason holds no separator and no NUL */
    char reply[2200] = {0};
    size_t length = 1 + strlen(RESET_REPLY_START);
    memcpy(reply + 1, RESET_REPLY_START, strlen(RESET_REPLY_START));
    for (int i = 0; i < NONCE_BYTES; i++, length += 2)
        snprintf(reply + length, 3, "%02x", body[i]);
    length += (size_t)snprintf(reply + length, sizeof reply - length - 1, ":%s", problems[0] ? problems : "ok");
    reply[length++] = '\0';
    if (write_all(1, reply, length) != 0 || write_all(2, reply, length) != 0)
        _exit(EXIT_CANNOT_RUN);
    explicit_bzero(reply, sizeof reply);
}

/* One exec for every program of a reused sandbox: frames [kind (1)][length (4)][body] on stdin. */
static int cmd_serve(void)
{
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* its memory holds the nonces: as launch's parent */
    ignore_cancel_signals();
    ignore_signal(SIGPIPE);
    for (;;) {
        char kind;
        size_t size;
        unsigned char *body = read_frame(&kind, &size);
        if (!body)
            return 0; /* the host closed the stream */
        if (kind == 'P') { /* the body is kept (ahead.body) or freed there */
            serve_prestart(body, size);
            continue;
        }
        if (kind == 'L')
            serve_launch(body, size);
        else
            serve_reset(body, size);
        explicit_bzero(body, size);
        free(body);
    }
}

/* ---- await ----------------------------------------------------------------------------------- */

/* Read stdin to its end, discarding what comes (only the host's end of its stream counts). A read
 * that fails is no end: this process then idles (the host's removal ends the sandbox). */
static void wait_for_end_of_stdin(void)
{
    char sink[4096];
    for (;;) {
        ssize_t got = read(0, sink, sizeof sink);
        if (got == 0)
            return;
        if (got < 0 && errno != EINTR)
            cmd_idle();
    }
}

/* The main process of a fresh sandbox whose one program comes over the container's stdin (the host's
 * attach): one L frame, run as serve runs it; then, once the host has closed the stream, exit with
 * the program's status (the container stops by itself). */
static int cmd_await(void)
{
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* its memory will hold the nonce: as launch's parent */
    ignore_cancel_signals();
    ignore_signal(SIGPIPE);
    char kind;
    size_t size;
    unsigned char *body = read_frame(&kind, &size);
    if (!body) /* the stream ended before any program: nothing to run, stay as the idle process does */
        cmd_idle();
    if (kind != 'L')
        launch_fail(EXIT_CANNOT_RUN, "an await frame is not acceptable");
    struct program program;
    unsigned char marker[256], *header;
    const char *output_dir;
    take_launch_frame(body, size, &program, marker, &output_dir, &header);
    /* In a session of its own, the program's process group has no parent in its session from the
     * start, as under an exec'd launcher: killing its processes one by one (a stop's evidence) never
     * orphans it, which would wake its stopped processes with SIGHUP and SIGCONT. */
    program.new_session = 1;
    int started_fd;
    pid_t child = fork_program(&program, &started_fd);
    if (child < 0) /* no process to spare: as launch, the program runs in this process, no trailer */
        start_program(&program, -1);
    payload_left = NULL;
    int reported;
    int code = report_program(child, started_fd, header + 16, output_dir, 0, &reported);
    explicit_bzero(header, HEADER_BYTES);
    explicit_bzero(body, size);
    /* The host reads the sandbox's counters (its cgroup goes with the container) and, when the trailer
     * says "files", collects /output by exec before it closes the stream: until then this process stays. */
    if (reported)
        wait_for_end_of_stdin();
    _exit(code < 0 ? EXIT_CANNOT_RUN : code);
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *command = argc > 1 ? argv[1] : "";
    if (!strcmp(command, "idle"))
        cmd_idle();
    if (!strcmp(command, "term-all"))
        return cmd_term_all();
    if (!strcmp(command, "launch"))
        return cmd_launch(argc - 2, argv + 2);
    if (!strcmp(command, "collect"))
        return cmd_collect(argc - 2, argv + 2);
    if (!strcmp(command, "reap"))
        return cmd_reap(argc - 2, argv + 2);
    if (!strcmp(command, "serve") && argc == 2)
        return cmd_serve();
    if (!strcmp(command, "await") && argc == 2)
        return cmd_await();
    say("crucible-helper", "unknown subcommand (idle, term-all, launch, collect, reap, serve, await)");
    return 2;
}
