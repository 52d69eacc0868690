"""The adversarial cases for compiled code (C, and Go where its image is built): a compiled program
runs natively from the exec-allowed /build, and nothing else changes. Run under gVisor and runc
(``make test``) and through warm pools (its name starts with test_adversarial_)."""

from __future__ import annotations

import uuid

import pytest

from apps.sandboxing import catalog
from apps.sandboxing.image import current_image
from apps.sandboxing.outcomes import Outcome
from apps.sandboxing.tests.conftest import execute
from apps.sandboxing.tests.test_adversarial_resources import assert_host_unaffected, host_processes_containing

pytestmark = pytest.mark.docker

EACCES = 13


def run_c(code: str, **limits):
    limits.setdefault("memory_mb", 384)
    limits.setdefault("timeout_s", 10)
    return execute(code, runtime=catalog.runtime("c"), **limits)


def test_a_fork_bomb_in_c_hits_the_pids_limit_and_the_host_is_unaffected():
    code = "#include <unistd.h>\nint main(void) { for (;;) fork(); }\n"
    run = run_c(code, timeout_s=3, pids=32, memory_mb=512)
    assert run.result.outcome in (Outcome.EXITED, Outcome.TIMED_OUT)
    assert run.result.compile_ms is not None  # it compiled: the bomb itself ran
    assert_host_unaffected()


def test_a_memory_bomb_in_go_is_oom_killed_and_the_host_is_unaffected():
    assert current_image(catalog.definition("go").image) is not None, "scripts/setup.sh builds the go runtime"
    code = (
        "package main\n\nfunc main() {\n\tvar keep [][]byte\n\tfor {\n\t\tb := make([]byte, 8<<20)\n"
        "\t\tfor i := 0; i < len(b); i += 4096 {\n\t\t\tb[i] = 1\n\t\t}\n\t\tkeep = append(keep, b)\n\t}\n}\n"
    )
    run = execute(code, runtime=catalog.runtime("go"), memory_mb=384, timeout_s=20)
    assert run.result.outcome is Outcome.OOM_KILLED
    assert_host_unaffected()


# Copies its own binary into each directory and tries to run the copy: "DIR ERRNO" (0: it ran).
EXEC_ELSEWHERE = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
static int copy_to(const char *path) {
    char buf[65536]; ssize_t n; int in = open("/proc/self/exe", O_RDONLY), out;
    if (in < 0) return -1;
    out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (out < 0) return errno;
    while ((n = read(in, buf, sizeof buf)) > 0) if (write(out, buf, n) != n) return errno;
    close(in); close(out); chmod(path, 0755);
    return 0;
}
int main(int argc, char **argv) {
    const char *dirs[] = {"/tmp", "/sandbox", "/output", "/dev/shm", "/build"};
    if (argc > 1) return 0;
    for (int i = 0; i < 5; i++) {
        char path[64]; int status, copied;
        snprintf(path, sizeof path, "%s/copy%d", dirs[i], i);
        copied = copy_to(path);
        if (copied) { printf("%s copy-failed %d\n", dirs[i], copied); continue; }
        pid_t pid = fork();
        if (pid == 0) { char *args[] = {path, "again", NULL}; execv(path, args); _exit(100 + errno); }
        waitpid(pid, &status, 0);
        printf("%s %d\n", dirs[i], WEXITSTATUS(status) >= 100 ? WEXITSTATUS(status) - 100 : 0);
    }
    return 0;
}
"""


def test_an_executable_written_to_tmp_or_any_scratch_place_but_build_cannot_be_run():
    run = run_c(EXEC_ELSEWHERE)
    assert run.result.exit_code == 0, run.stderr
    assert run.text.splitlines() == [
        f"/tmp {EACCES}",
        f"/sandbox {EACCES}",
        f"/output {EACCES}",
        f"/dev/shm {EACCES}",
        "/build 0",  # the one exec-allowed place: what the compiler built runs from there
    ]


def test_a_binary_that_forks_detaches_and_ignores_sigterm_does_not_survive_the_run():
    token = f"crucible-survivor-{uuid.uuid4().hex}"
    code = (
        "#include <signal.h>\n#include <stdio.h>\n#include <unistd.h>\n"
        "int main(int argc, char **argv) {\n"
        "    if (argc > 1) { signal(SIGTERM, SIG_IGN); for (;;) sleep(1); }\n"
        "    if (fork() == 0) { setsid(); if (fork() == 0) {\n"
        f'        char *args[] = {{"/build/main", "{token}", NULL}}; execv(args[0], args); }}\n'
        "        _exit(0); }\n"
        '    puts("parent done");\n    return 0;\n}\n'
    )
    run = run_c(code)
    assert (run.result.outcome, run.result.exit_code) == (Outcome.EXITED, 0)  # at the parent's exit
    assert run.stdout == b"parent done\n"
    assert host_processes_containing(token) == []
