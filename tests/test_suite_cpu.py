"""benchmarks/suite_cpu.py: each process the suite starts is counted under what it is."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from suite_cpu import Process, _script, kind  # noqa: E402

PY = "/venv/bin/python"
TOP = 1  # the script's own pid
#: pid -> (ppid, forked, cpu, command line), as the probe logs them
PROCESSES = {
    10: Process(TOP, False, 10.0, f"{PY} -m pytest -n auto -q"),
    11: Process(10, False, 40.0, f"{PY} -u -c import sys;exec(eval(sys.stdin.readline()))"),
    12: Process(11, True, 0.1, f"{PY} -u -c import sys;exec(eval(sys.stdin.readline()))"),
    13: Process(11, False, 3.4, f"{PY} -c import forkserver; forkserver.serve()"),
    14: Process(13, True, 0.4, f"{PY} -c import forkserver; forkserver.serve()"),
    15: Process(14, True, 0.1, f"{PY} -c import forkserver; forkserver.serve()"),
    16: Process(11, False, 0.6, f"{PY} -u -c import sys;exec(eval(sys.stdin.readline()))"),
    17: Process(11, False, 0.9, f"{PY} -mpytest --basetemp=/tmp/pytest-of-root/pytest-3/t0 -p no:cacheprovider"),
    18: Process(11, False, 0.1, f"{PY} /tmp/pytest-of-root/pytest-3/t1/tools/lint_entry.py out/a.md"),
    19: Process(17, False, 0.6, f"{PY} -u -c import sys;exec(eval(sys.stdin.readline()))"),
}


def test_each_process_is_counted_under_what_it_is():
    kinds = {pid: kind(pid, PROCESSES, TOP) for pid in PROCESSES}
    assert kinds == {
        10: "the test process (xdist's controller)",
        11: "its xdist workers",
        12: "sending processes forked by the workers' in-process runs",
        13: "fork servers",
        14: "runs forked by the fork servers",
        15: "other forked processes (the sending processes of runs in a process of their own)",
        16: "xdist workers of the runs the tests start (-n 2)",
        17: "pytest in a fresh interpreter (runpytest_subprocess)",
        18: "other fresh interpreters (linters, scripts)",
        19: "xdist workers of the runs the tests start (-n 2)",
    }


def test_the_others_are_told_apart_by_the_script_they_run():
    assert _script(PROCESSES[18].cmdline) == "lint_entry.py"
    assert _script(f"{PY} -c import kept, edited") == "-c import"
    assert _script(f"{PY} -I -S lint.py out/a.md") == "lint.py"
    assert _script(f"{PY} /venv/bin/pymarkdown scan out") == "pymarkdown"
