"""The sending process (issue 12): a live run's requests go out from a forked child.

Most generation tests of the suite run this way already (it is the default wherever it
applies), so they show that a run gives the same statuses, notes, outputs and recordings from a
child as from a thread. These tests are about the child itself: when the plugin forks and says
so, what the pytest process no longer imports, that every check (a linter, a user's form) runs
in the pytest process once per version of a file, Ctrl-C, ``kill -9``, a child that crashes or
dies, and that no process is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from fakeapi import Reply
from genhelpers import (
    IMPORT_PROBE,
    LINT_SCRIPT,
    REFUSE_WRITES_IN,
    PlanRow,
    draft,
    lint_bad,
    missing_section,
    requests_by_row,
    router,
    row_of,
    rows_for,
)
from pytest_batchgen import sender
from pytest_batchgen.settings import Role, Settings

FORKED = "batchgen: requests are sent from a process of their own (pid *)"

#: the generation tests' linter, counting its runs: one line per file it was given
COUNTING_LINT = LINT_SCRIPT.replace(
    "path = sys.argv[1]\n",
    "path = sys.argv[1]\n"
    "import os\n"
    "with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lint.log'), 'a') as log:\n"
    "    log.write(path + '\\n')\n",
)


def children_of(pid: int) -> set[int]:
    """The processes ``pid`` started and has not reaped (Linux' /proc), zombies included."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


needs_proc = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(), reason="needs /proc/<pid>/task/*/children"
)


# -- when the plugin forks, and that it says so ----------------------------------------------


#: what the pytest process has imported by the time it forks (the child's first request waits
#: for the imports before the fork and the SDK's after it): filelock, which only the plan's and
#: the tracking file's edits need, took 17 ms
FORK_PROBE = (
    IMPORT_PROBE
    + """
import os
_forks = []
def _at_fork():
    if not _forks:
        print("AT FORK:", ",".join(m for m in ("filelock",) if m in sys.modules) or "none", flush=True)
    _forks.append(1)
os.register_at_fork(before=_at_fork)
"""
)


def test_a_live_run_sends_from_a_child_and_its_pytest_process_never_loads_the_sdk(project, fake):
    """The point of the child: the pytest process runs tests and never imports the SDK, httpx2
    or vcrpy (the probe can tell: with the thread it loads all three, see test_perf.py); and it
    forks the child before it imports what only the end of the run needs."""
    project.write_rows(rows_for("alpha", "beta"))
    project.write("conftest.py", FORK_PROBE)

    forked = project.run("-s", subprocess=True)

    out = forked.stdout.str()
    assert forked.ret == 0, out
    forked.stdout.fnmatch_lines([FORKED])
    assert "HEAVY: none" in out
    assert "AT FORK: none" in out
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete"}
    assert project.output("beta.md") == draft("Beta")
    assert [row_of(b) for b in project.cassette_bodies("alpha.md")] == ["alpha.md"]


def _rewriting() -> bool:
    from _pytest.assertion.rewrite import AssertionRewritingHook

    return any(isinstance(finder, AssertionRewritingHook) for finder in sys.meta_path)


def test_the_sending_process_imports_without_pytests_assertion_rewriting(project, fake, monkeypatch):
    """The child imports the SDK as a plain interpreter would: pytest's rewriting hook looked at
    every module of it first (10% of the import's instructions). The pytest process keeps it, for
    the tests and conftests it runs."""
    from pytest_batchgen import preload

    log = project.path / "rewriting.log"
    run_here = preload.Preloader.run_here

    def recording_run_here(self):  # in the child (the fork inherits the patch)
        log.write_text(f"importing the SDK: {_rewriting()}\n")
        return run_here(self)

    monkeypatch.setattr(preload.Preloader, "run_here", recording_run_here)
    project.write_rows(rows_for("alpha"))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([FORKED])
    assert log.read_text() == "importing the SDK: False\n"
    assert _rewriting()  # this process: untouched


def test_the_header_says_why_a_run_keeps_the_thread_and_a_bad_sender_is_a_usage_error(project, fake):
    project.write_rows(rows_for("alpha"))
    assert "batchgen: requests" not in project.run("--batch-validate-only").stdout.str()
    replay = project.run("--batch-record-mode", "none")
    replay.stdout.fnmatch_lines(
        ["batchgen: record mode none: nothing is sent; the rows are replayed from a process of their own (pid *)"]
    )
    inline = project.run("--batch-record-mode", "none", "-o", "batchgen_sender=thread")
    inline.stdout.fnmatch_lines(
        [
            "batchgen: record mode none: nothing is sent; each row is replayed when its first test runs "
            "(batchgen_sender = thread)"
        ]
    )
    result = project.run("-o", "batchgen_sender=fork")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option batchgen_sender = 'fork' is not one of: process, thread*"])


def run_settings(**kw) -> Settings:
    base = {"plans": ("plan.md",), "rootdir": Path("."), "invocation_dir": Path("."), "role": Role.PLAIN}
    return Settings(**{**base, "record_mode": "new_episodes", **kw})


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ({}, None),
        ({"sender": "thread"}, "batchgen_sender = thread"),
        ({"role": Role.CONTROLLER}, "pytest-xdist: the workers run the tests"),
        ({"api": "batches"}, "Message Batches"),
        ({"record_mode": "none"}, None),  # a replay forks too: the child reads and writes ahead
    ],
)
def test_why_a_run_keeps_the_thread(given, why):
    assert sender.why_not(run_settings(**given)) == why


def test_no_fork_on_macos_windows_or_with_threads_on_python_3_12(monkeypatch):
    def where(platform: str, version: tuple[int, int]) -> str | None:
        monkeypatch.setattr(sender, "sys", types.SimpleNamespace(platform=platform, version_info=version))
        return sender.why_not(run_settings())

    assert where("darwin", (3, 11)) == "no safe fork on darwin"
    assert where("linux", (3, 11)) is None
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert where("linux", (3, 12)) == "other threads are running"
        assert where("linux", (3, 11)) is None  # 3.11 forks with threads without a warning
    finally:
        stop.set()
        other.join()
    monkeypatch.delattr(os, "fork")
    assert where("linux", (3, 11)) == "no safe fork on linux"


# -- every check runs once per version of a file, in the pytest process ---------------------

#: a user's checklist form (quick: it reads nothing but the parse) that logs which process and
#: thread checked which file
LOGGING_FORM = """
import os, threading
from pytest_batchgen import ChecklistForm

def pytest_batchgen_checklist_forms():
    def logged(ctx):
        with open(os.path.join(os.path.dirname(__file__), "checks.log"), "a") as log:
            log.write(f"{os.getpid()} {threading.current_thread().name} {ctx.path.name}\\n")
        return None
    return [ChecklistForm(name="logged", pattern=r"checked where it is logged", check=logged, quick=True)]
"""


def test_a_live_runs_drafts_and_recordings_are_written_by_the_pytest_process_and_a_replays_by_the_child(
    project, fake, monkeypatch
):
    """Issue 12: the process the run waits for writes nothing it need not. In a live run that
    is the sending process (it sends, parses and records every reply), so the pytest process
    writes each draft it is asked to check, a repair's draft included, and before it the reply's
    recording, which the child hands over with the draft; a reply whose draft is not checked (cut
    off at max_tokens, its partial draft in the drafts folder) is recorded and written by the
    child, as before. In a replay the pytest
    process (it runs every item) is the one waited for, so the child writes. Whichever process
    writes a file fsyncs it (its ``sync_deferred``, before the plan says the row is complete)."""
    from genhelpers import go_offline
    from pytest_batchgen import fsutil

    fsutil.sync_deferred()  # what earlier tests in this process left (a fork would inherit it)
    log = project.path / "written-by.log"
    synced = project.path / "synced-by.log"
    real, real_fsync = fsutil._create_temporary, fsutil._fsync
    watched = {"output", ".batchgen-drafts", "plan"}  # output/*.md, its drafts, cassettes/plan/*.yaml

    def spy(path):
        made = real(path)  # first: a write into a folder not made yet tries once before making it
        if path.parent.name in watched:
            with log.open("a") as out:
                out.write(f"{path.name} {os.getpid()}\n")
        return made

    def fsync_spy(path):
        if path.parent.name in watched and path.suffix in (".md", ".yaml"):
            with synced.open("a") as out:
                out.write(f"{path.name} {os.getpid()}\n")
        return real_fsync(path)

    monkeypatch.setattr(fsutil, "_create_temporary", spy)  # the fork inherits them
    monkeypatch.setattr(fsutil, "_fsync", fsync_spy)
    rows = rows_for("a-one", "b-two", "c-cut")
    project.write_rows(rows)
    router(fake).set("b-two.md", Reply.ok(missing_section("B Two")), Reply.ok(draft("B Two")))  # repaired once
    router(fake).set("c-cut.md", Reply.truncated(draft("C Cut")[:40]))

    def writes(path: Path = log) -> list[str]:
        return sorted(line.split()[0] for line in path.read_text().splitlines())

    def writers(path: Path = log) -> list[tuple[str, bool]]:
        lines = path.read_text().splitlines()
        path.unlink()
        return sorted({(name, int(pid) == os.getpid()) for name, pid in (line.split() for line in lines)})

    live = project.run()
    assert live.ret == 1, live.stdout.str()  # c-cut was cut off
    live.stdout.fnmatch_lines([FORKED])
    # b-two's recording is written twice: with its first reply, then with both
    assert writes() == ["a-one.md", "a-one.md.yaml", "b-two.md", "b-two.md", "b-two.md.yaml", "b-two.md.yaml"] + [
        "c-cut.md",
        "c-cut.md.yaml",
    ]
    expected = [
        ("a-one.md", True),
        ("a-one.md.yaml", True),
        ("b-two.md", True),
        ("b-two.md.yaml", True),
        ("c-cut.md", False),
        ("c-cut.md.yaml", False),
    ]
    assert writers() == writers(synced) == expected
    go_offline(fake, monkeypatch)
    project.reset(rows[:2])
    assert project.run("--batch-record-mode", "none").ret == 0
    assert writes() == ["a-one.md", "b-two.md", "b-two.md"]  # no recording is written in a replay
    assert writers() == writers(synced) == [("a-one.md", False), ("b-two.md", False)]
    assert project.statuses() == {"a-one.md": "complete", "b-two.md": "complete"}


def test_a_recording_the_pytest_process_cannot_write_ends_the_row_as_in_the_child(project, fake):
    """The recording handed over with a draft: when the pytest process cannot write it, the row
    ends as it does when the sending process cannot (a reply paid for, its text kept, the fix
    named), and the draft is not checked; the other rows go on."""
    project.write_rows(rows_for("one", "two"))
    router(fake).set("one.md", Reply.ok(draft("One")))
    project.write(
        "conftest.py",
        REFUSE_WRITES_IN.format(folder=str(project.cassette_dir().resolve()))
        + "\nimport os\nPARENT = os.getpid()\n_refused = refused\n"
        "def refused(path):\n"
        "    return _refused(path) if os.getpid() == PARENT and path.name.startswith('one') else real(path)\n"
        "fsutil._create_temporary = refused\n",
    )
    result = project.run("--batch-report", "report.json")
    result.stdout.fnmatch_lines([FORKED])
    message = (
        "the reply could not be recorded in cassettes/plan/one.md.yaml: Permission denied; "
        "make cassettes/plan/ writable, then run again; its text is kept in output/one.md"
    )
    row = {r["filename"]: r for r in json.loads(project.read("report.json"))["plans"][0]["rows"]}
    assert row["one.md"]["generation"]["error"] == message
    assert row["one.md"]["attempts"][0]["usage"]["output_tokens"] > 0  # paid for: counted
    assert message in result.failure("one.md::generate")
    assert project.output("one.md") == draft("One")
    assert not (project.cassette_dir() / "one.md.yaml").exists()
    assert (project.cassette_dir() / "two.md.yaml").exists()
    assert project.statuses() == {"one.md": "pending", "two.md": "complete"}


@pytest.mark.parametrize("linter", [True, False], ids=["with-a-linter", "quick-checks-only"])
@pytest.mark.parametrize("where", ["process", "thread"])
def test_every_check_runs_in_the_pytest_process_once_per_version_of_a_file(project, fake, where, linter):
    """The child writes each draft and asks the pytest process for its verdict (to repair it):
    a user's form and the linter run there, once per draft, and the check items reuse those
    verdicts, as one process's cache did. Quick checks are answered on the thread that reads
    the child's messages; a checklist with a linter on a pool, several drafts at once."""
    rows = [PlanRow("Reference", "reference.md", "haiku", "complete"), *rows_for("good", "fixed", "kept")]
    project.write_rows(rows, ini_extra=f"batchgen_sender = {where}\n")
    project.edit(project.plan, "4. Linter passes", "5. Checked where it is logged\n4. Linter passes")
    if linter:
        project.write("lint.py", COUNTING_LINT)
    else:
        project.edit(project.plan, "4. Linter passes", "<!-- 4. Linter passes")
        project.edit(project.plan, "{path}`\n", "{path}` -->\n")
    project.write("conftest.py", LOGGING_FORM)
    project.write("output/kept.md", draft("Kept"))  # pending, but its output already passes
    first = lint_bad("Fixed") if linter else missing_section("Fixed")
    router(fake).set("fixed.md", Reply.ok(first), Reply.ok(draft("Fixed")))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    assert set(project.statuses().values()) == {"complete"}
    assert sorted(requests_by_row(fake)) == ["fixed.md", "good.md"]  # kept.md was not sent
    # once per version: the reference, good's draft, fixed's two drafts, kept's output
    once = ["fixed.md", "fixed.md", "good.md", "kept.md", "reference.md"]
    if linter:
        assert sorted(Path(line).name for line in project.read("lint.log").splitlines()) == once
    logged = [line.split() for line in project.read("checks.log").splitlines()]
    assert sorted(name for _, _, name in logged) == once
    assert {pid for pid, _, _ in logged} == {str(os.getpid())}  # this test's process ran pytest in-process
    if where == "process":
        drafts = {thread for _, thread, name in logged if name in ("good.md", "fixed.md")}
        if linter:
            assert all(t.startswith("batchgen-checks") for t in drafts), drafts
        else:
            assert drafts == {"batchgen-sender-results"}


# -- the child's end: crashes, Ctrl-C, kill -9, nothing left behind ----------------------------


@needs_proc
def test_in_process_runs_leave_no_process_behind(project, fake):
    before = children_of(os.getpid())
    project.write_rows(rows_for("alpha", "beta"))
    result = project.run()
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([FORKED])
    assert children_of(os.getpid()) == before

    # forked, then nothing to send: every pending row deselected (the child is stopped)
    project.reset(rows_for("alpha", "beta"))
    fake.reset_log()
    result = project.run("-k", "not alpha and not beta")
    result.stdout.fnmatch_lines([FORKED])
    assert fake.messages_requests() == []
    assert children_of(os.getpid()) == before


def test_a_sending_process_that_crashes_fails_its_rows_with_the_error(project, fake, monkeypatch):
    from pytest_batchgen import generation

    def broken(*args, **kwargs):
        raise RuntimeError("the dispatcher could not be made")

    monkeypatch.setattr(generation, "make_dispatcher", broken)  # the fork inherits it
    project.write_rows(rows_for("alpha", "beta"))

    result = project.run()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    message = result.failure("alpha.md::generate")
    assert "the sending process failed" in message and "RuntimeError: the dispatcher could not be made" in message
    assert "the dispatcher could not be made" in result.failure("beta.md::generate")
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "pending"}
    assert fake.messages_requests() == []


def test_a_sending_process_that_dies_fails_its_rows_and_the_run_ends(project, fake, monkeypatch):
    from pytest_batchgen import generation

    monkeypatch.setattr(generation, "make_dispatcher", lambda *a, **k: os._exit(3))
    project.write_rows(rows_for("alpha"))

    result = project.run()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "the sending process ended (exit status 3) before this row's result" in result.failure("alpha.md::generate")
    assert project.notes()["alpha.md"]  # the row's note says it failed to generate


def wait_until(condition, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@needs_proc
@pytest.mark.parametrize("where", ["process", "thread"])
def test_ctrl_c_sends_nothing_more_and_records_the_replies_in_flight(project, fake, forks, where):
    """As a terminal does, Ctrl-C reaches the pytest process and the sending process (one
    process group). The child ignores it; the parent tells it to send nothing more. The two
    replies in flight are paid for: they are recorded, and the next run replays them."""
    project.forks = forks
    names = ["a-one", "b-two", "c-three", "d-four"]
    project.write_rows(rows_for(*names), ini_extra=f"batchgen_sender = {where}\n")
    for name in names[:2]:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title()), delay=1.5))

    proc = project.start("--batch-plan", project.plan, "--batch-concurrency", "2", "-q")
    wait_until(lambda: fake.in_flight == 2, "two requests in flight")
    kids = children_of(proc.pid)
    assert len(kids) == (1 if where == "process" else 0), kids
    for pid in [proc.pid, *kids]:
        os.kill(pid, signal.SIGINT)
    assert proc.wait(timeout=60) == pytest.ExitCode.INTERRUPTED, proc.output()

    assert sorted({row_of(e) for e in fake.messages_requests()}) == ["a-one.md", "b-two.md"]
    for name in names[:2]:
        assert [row_of(b) for b in project.cassette_bodies(f"{name}.md")] == [f"{name}.md"]
    assert not any(alive(pid) for pid in kids)

    fake.reset_log()
    result = project.run()
    assert result.ret == 0, result.stdout.str()
    assert sorted(row_of(e) for e in fake.messages_requests()) == ["c-three.md", "d-four.md"]
    assert set(project.statuses().values()) == {"complete"}


@needs_proc
@pytest.mark.parametrize("where", ["process", "thread"])
def test_ctrl_c_ends_a_refused_request_waiting_for_its_retry(project, fake, forks, where):
    """A request refused with a 429 waits for the SDK's retry (here a retry-after of 30 s). That
    retry would be a new request: after Ctrl-C it is neither sent nor waited for, while the
    reply in flight is still kept."""
    project.forks = forks
    project.write_rows(rows_for("a-one", "b-two"), ini_extra=f"batchgen_sender = {where}\n")
    router(fake).set("a-one.md", Reply.rate_limited(retry_after=30), Reply.ok(draft("A One")))
    router(fake).set("b-two.md", Reply.ok(draft("B Two"), delay=1.5))

    proc = project.start("--batch-plan", project.plan, "--batch-concurrency", "2", "-q")
    wait_until(lambda: [e.status for e in fake.messages_requests()].count(429) == 1, "the 429")
    wait_until(lambda: fake.in_flight == 1, "b-two in flight")
    for pid in [proc.pid, *children_of(proc.pid)]:
        os.kill(pid, signal.SIGINT)
    assert proc.wait(timeout=60) == pytest.ExitCode.INTERRUPTED, proc.output()

    assert [e.status for e in requests_by_row(fake)["a-one.md"]] == [429]
    assert [row_of(b) for b in project.cassette_bodies("b-two.md")] == ["b-two.md"]
    assert not project.cassette("a-one.md").exists()
    # nothing was recorded into the plan, and the summary says so (not "pending -> complete")
    out, _ = proc.output()
    assert "plan.md: plan unchanged (interrupted: the next run keeps the outputs" in out, out
    assert "pending -> complete" not in out and "0 complete" in out, out


@needs_proc
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_9_of_pytest_ends_the_sending_process_at_once(project, fake, forks, sig):
    """A child that outlived its parent would write outputs and recordings under a run started
    again: it exits when the pipe closes, and what was in flight is abandoned, as a thread's
    would be."""
    project.forks = forks
    project.write_rows(rows_for("slow-one", "slow-two"))
    for name in ("slow-one", "slow-two"):
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title()), delay=2))

    proc = project.start("--batch-plan", project.plan, "-q", output=False)
    wait_until(lambda: fake.in_flight == 2, "two requests in flight")
    (child,) = children_of(proc.pid)
    proc.send_signal(sig)  # SIGTERM (what `timeout` sends) ends pytest as kill -9 does
    assert proc.wait(timeout=10) == -sig
    killed = time.monotonic()
    wait_until(lambda: not alive(child), "the sending process to exit", seconds=1.5)
    time.sleep(max(0.0, killed + 2.5 - time.monotonic()))  # past the replies' delay: nothing is written
    assert not any(project.cassette(f"{n}.md").exists() for n in ("slow-one", "slow-two"))
    assert not (project.path / "output" / "slow-one.md").exists()
    assert set(project.statuses().values()) == {"pending"}
