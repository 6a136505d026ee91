"""Spawn a command, wait for it, write its wall time and rusage as JSON.

    python -I -S bench/_launch.py REPORT.json -- COMMAND [ARGS...]

Why a launcher: on Linux a child's peak RSS (ru_maxrss) starts at its parent's
RSS when it is forked, and exec keeps that maximum. Measured straight from the
runner, every sender would show at least the runner's RSS. This launcher stays
tiny (no site, four stdlib modules, about 8 MiB), so the floor it leaves is
far below any Python sender's own peak. It exits with the command's status
(128 + N when killed by signal N).
"""

import json
import os
import sys
import time


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.stderr.write("usage: _launch.py REPORT.json -- COMMAND [ARGS...]\n")
        return 2
    report, argv = sys.argv[1], sys.argv[3:]
    start = time.perf_counter()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ)
    except OSError as exc:
        sys.stderr.write(f"cannot run {argv[0]}: {exc}\n")
        return 127
    _, status, usage = os.wait4(pid, 0)
    end = time.perf_counter()
    code = os.waitstatus_to_exitcode(status)
    with open(report, "w") as fh:
        json.dump(
            {
                "exit_code": code,
                "wall_s": end - start,
                "cpu_user_s": usage.ru_utime,
                "cpu_sys_s": usage.ru_stime,
                "peak_rss_kib": usage.ru_maxrss,
            },
            fh,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
