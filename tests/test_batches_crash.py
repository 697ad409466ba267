"""Message Batches: nothing lost, nothing paid twice (issue 13), with ``kill -9`` at every step.

Each scenario runs pytest in a fresh interpreter whose project ``conftest.py`` kills the
process with SIGKILL at one point of a batch run (:data:`KILL_CONFTEST`), then runs it again
to the end. The loopback server counts what it received: after the rerun every row is
complete, each distinct request of a row was sent in exactly one batch (no duplicate create,
no request sent twice) and nothing went through the per-request endpoint.

Those processes are forked from a process that has imported pytest, the SDK and the plugin
(``forkserver.py``): each is still a process of its own, killed and started as a user's would
be, without the seconds of imports a fresh interpreter spends twice a test.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
import yaml  # noqa: F401  (in-process runs: see tests/test_init.py)
from fakeapi import FakeAnthropic, Reply
from genhelpers import bad_value, draft, router, row_of, rows_for

BATCH_INI = "batchgen_batch_poll_start = 0.01\nbatchgen_batch_poll_max = 0.05\n"

#: the project's conftest: SIGKILL at the point named by BATCHGEN_KILL_AT (test-only fault injection)
KILL_CONFTEST = '''
import os, signal

POINT = os.environ.get("BATCHGEN_KILL_AT", "")


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def after(n, fn, before=False, partial=False):
    """Wrap fn: die on its n-th call (before or after running it; partial: write half a temp file)."""
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n and before:
            die()
        if calls[0] == n and partial:
            path, data = args[0], args[1]
            data = data.encode() if isinstance(data, str) else data
            with open(str(path) + ".partial.tmp", "wb") as fh:
                fh.write(data[: len(data) // 2])
            die()
        out = fn(*args, **kwargs)
        if calls[0] == n and not before:
            die()
        return out

    return wrapped


if POINT:
    from anthropic.resources.messages.batches import Batches
    import pytest_batchgen.batches as batches
    import pytest_batchgen.planedit as planedit
    import pytest_batchgen.recording as recording

    if POINT == "before-create":
        Batches.create = after(1, Batches.create, before=True)
    elif POINT == "after-create":
        Batches.create = after(1, Batches.create)
    elif POINT == "polling":
        Batches.retrieve = after(2, Batches.retrieve)
    elif POINT == "results-stream":
        batches.BatchDispatcher._settle = after(2, batches.BatchDispatcher._settle, before=True)
    elif POINT == "cassette-write":
        recording.atomic_write = after(2, recording.atomic_write, partial=True)
    elif POINT == "plan-update":
        planedit.atomic_write = after(1, planedit.atomic_write, partial=True)
'''

KILL_POINTS = ["before-create", "after-create", "polling", "results-stream", "cassette-write", "plan-update"]


@pytest.fixture
def project(project, forks):
    """The project, its subprocess runs forked (see the module docstring)."""
    project.forks = forks
    return project


def sent_requests(fake: FakeAnthropic) -> Counter:
    """How many times each distinct request of each row reached the server in a batch."""
    return Counter(
        (row_of(r["params"]), json.dumps(r["params"], sort_keys=True))
        for b in fake.batches.values()
        for r in b.requests
    )


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_then_rerun_finishes_every_row_sending_nothing_twice(project, fake, monkeypatch, point):
    # given: three rows, one repaired in a second batch; batches end on the third poll
    rows = rows_for("quorum", "backpressure", "gossip")
    project.write_rows(rows, ini_extra=BATCH_INI)
    project.write("conftest.py", KILL_CONFTEST)
    router(fake).set("backpressure.md", Reply.ok(bad_value("Backpressure")), Reply.ok(draft("Backpressure")))
    fake.batch_polls_until_ended = 3

    # when: the run is killed at the point
    monkeypatch.setenv("BATCHGEN_KILL_AT", point)
    killed = project.run("--batch-api", "batches", subprocess=True)
    assert killed.ret == -signal.SIGKILL, killed.stdout.str()

    # and run again to the end
    monkeypatch.delenv("BATCHGEN_KILL_AT")
    result = project.run("--batch-api", "batches", subprocess=True)

    # then: every row is done; each request was sent in one batch only; none went one by one
    assert result.ret == 0, result.stdout.str()
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete", "gossip.md": "complete"}
    for row in rows:
        assert project.output(row.filename) == draft(row.title)
    sent = sent_requests(fake)
    assert sorted(sent.values()) == [1, 1, 1, 1], sent  # 3 first requests and 1 repair, once each
    assert len(fake.batches) <= 2 + (point == "results-stream")  # a create per round, never one twice
    assert fake.messages_requests() == []
    # and every reply is in its row's cassette once, the journal is empty
    assert [len(project.cassette_bodies(r.filename)) for r in rows] == [1, 2, 1]
    assert not (project.cassette_dir() / "batches-journal.json").exists()


def _interrupt_while_polling(project, fake, *args: str) -> str:
    """Start a batch run, press Ctrl-C once its batch was created; its output."""
    proc = project.start("--batch-plan", project.plan, "--batch-api", "batches", *args)
    while not fake.batches and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # polling now
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)  # a run that ignored the signal fails here, not after 300 s
    out, _ = proc.communicate()
    return out


@pytest.mark.parametrize("cancel", [False, True])
def test_ctrl_c_keeps_the_batch_and_the_journal_and_says_how_to_resume(project, fake, cancel):
    # given: a batch that does not end while the run waits
    rows = rows_for("quorum", "backpressure")
    project.write_rows(rows, ini_extra=BATCH_INI)
    fake.batch_polls_until_ended = 10**9

    # when: Ctrl-C while polling (with or without --batch-cancel)
    out = _interrupt_while_polling(project, fake, *(["--batch-cancel"] if cancel else []))

    # then: the batch is kept (canceled only when asked), the journal names it, the resume command is shown
    (batch,) = fake.batches.values()
    assert (batch.cancel_initiated_at is not None) == cancel
    journal = json.loads((project.cassette_dir() / "batches-journal.json").read_text())
    assert [b["id"] for b in journal["batches"]] == [batch.id]
    assert "--batch-plan plan.md --batch-api batches" in out, out
    assert ("canceled 1 Message Batch" in out) == cancel, out

    # and a rerun collects it without creating another batch
    fake.batch_polls_until_ended = 0
    batch.polls_until_ended = batch.polls + 1
    result = project.run("--batch-api", "batches", subprocess=True)
    if not cancel:
        assert result.ret == 0, result.stdout.str()
        assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}
        assert len(fake.batches) == 1
    else:  # canceled results are sent again in the next round, as the attempts allow
        assert len(fake.batches) == 2
        assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}


def test_a_batch_past_its_retention_is_a_clear_error_and_leaves_the_journal(project, fake):
    # given: a run interrupted while its batch ran, whose batch is then gone from the API
    project.write_rows(rows_for("quorum"), ini_extra=BATCH_INI)
    fake.batch_polls_until_ended = 10**9
    _interrupt_while_polling(project, fake)
    (batch,) = fake.batches.values()
    batch.deleted = True
    journal_file = project.cassette_dir() / "batches-journal.json"
    journal = json.loads(journal_file.read_text())
    journal["batches"][0]["created"] = "2026-01-01T00:00:00+00:00"  # long past the 29 days
    journal_file.write_text(json.dumps(journal))

    # when
    result = project.run("--batch-api", "batches", subprocess=True)

    # then: the row fails naming the batch, why, and what happens next; the journal no longer lists it
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            f"*Message Batch {batch.id}*is no longer on the API: its results were kept 29 days and are gone*next run sends this row again*"
        ]
    )
    assert not (project.cassette_dir() / "batches-journal.json").exists()
    assert len(fake.batches) == 1


def test_a_run_of_some_rows_collects_them_from_a_journal_batch_and_keeps_the_others(project, fake):
    # given: a batch of three rows left running by an interrupted run
    project.write_rows(rows_for("quorum", "backpressure", "gossip"), ini_extra=BATCH_INI)
    fake.batch_polls_until_ended = 10**9
    _interrupt_while_polling(project, fake)
    (batch,) = fake.batches.values()
    batch.polls_until_ended = batch.polls + 1  # it ends at the next poll
    journal_file = project.cassette_dir() / "batches-journal.json"

    # when: a run of one row collects it
    project.run("--batch-api", "batches", "-k", "quorum", subprocess=True)

    # then: that row is done; the journal keeps the batch for the two others
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "pending", "gossip.md": "pending"}
    (entry,) = json.loads(journal_file.read_text())["batches"]
    assert entry["id"] == batch.id
    assert sorted(r["row"] for r in entry["requests"].values()) == ["backpressure.md", "gossip.md"]

    # and a run of every row collects the others from the same batch: no second batch
    result = project.run("--batch-api", "batches", subprocess=True)
    assert result.ret == 0, result.stdout.str()
    assert set(project.statuses().values()) == {"complete"}
    assert len(fake.batches) == 1 and not journal_file.exists()


def test_requests_the_plan_no_longer_sends_leave_the_journal_and_the_summary_says_so(project, fake):
    # given: a batch of two rows left running, then a content rule edited: neither request is
    # what the plan sends now, and a row removed from the plan is out of it too
    project.write_rows(rows_for("quorum", "backpressure", "gossip"), ini_extra=BATCH_INI)
    fake.batch_polls_until_ended = 10**9
    _interrupt_while_polling(project, fake)
    (old,) = fake.batches.values()
    project.edit("plan.md", "- category must be one of: A, B, C", "- category must be one of: A, B, C (in capitals)")
    project.edit("plan.md", "| Gossip | gossip.md | haiku | pending |\n", "")
    fake.batch_polls_until_ended = 0
    journal_file = project.cassette_dir() / "batches-journal.json"

    # when
    result = project.run("--batch-api", "batches", subprocess=True)

    # then: today's requests went in a new batch and completed; the old entry is gone, and said
    assert result.ret == 0, result.stdout.str()
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}
    assert len(fake.batches) == 2
    assert not journal_file.exists()
    result.stdout.fnmatch_lines(
        [
            f"dropped from the batch journal the requests the plan no longer sends, in {old.id} (backpressure.md, gossip.md, quorum.md)*"
        ]
    )


def test_a_row_whose_output_passed_before_the_crash_leaves_no_journal_entry_behind(project, fake):
    # given: a batch of two rows left running, and one row's output written meanwhile (it passes)
    project.write_rows(rows_for("quorum", "backpressure"), ini_extra=BATCH_INI)
    fake.batch_polls_until_ended = 10**9
    _interrupt_while_polling(project, fake)
    (batch,) = fake.batches.values()
    batch.polls_until_ended = batch.polls + 1
    project.write("output/quorum.md", draft("Quorum"))

    # when
    result = project.run("--batch-api", "batches", subprocess=True)

    # then: the other row is collected from the batch, and the journal is empty
    assert result.ret == 0, result.stdout.str()
    assert set(project.statuses().values()) == {"complete"}
    assert len(fake.batches) == 1
    assert not (project.cassette_dir() / "batches-journal.json").exists()


#: the project's conftest: each run waits, once it has read the journal, until two runs have read it
#: (two runs started at once, made deterministic: neither has written its batch yet when both load)
LOADED_TOGETHER_CONFTEST = """
import os, pathlib, time
from pytest_batchgen import journal

FOLDER = os.environ.get("BATCHGEN_LOADED_IN", "")

if FOLDER:
    load = journal.Journal.load.__func__

    def load_together(cls, path, *args, **kwargs):
        loaded = load(cls, path, *args, **kwargs)
        pathlib.Path(FOLDER, str(os.getpid())).touch()
        deadline = time.monotonic() + 30
        while len(os.listdir(FOLDER)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return loaded

    journal.Journal.load = classmethod(load_together)
"""


def test_two_runs_of_one_plan_at_once_each_keep_their_batch_in_the_journal(project, fake, monkeypatch, tmp_path):
    # given: two runs of one plan started at once, on different rows, whose batches do not end yet
    project.write_rows(rows_for("quorum", "backpressure"), ini_extra=BATCH_INI)
    project.write("conftest.py", LOADED_TOGETHER_CONFTEST)
    (tmp_path / "loaded").mkdir()
    monkeypatch.setenv("BATCHGEN_LOADED_IN", str(tmp_path / "loaded"))
    fake.batch_polls_until_ended = 10**9
    journal_file = project.cassette_dir() / "batches-journal.json"
    a = project.start("--batch-plan", project.plan, "--batch-api", "batches", "-k", "quorum")
    b = project.start("--batch-plan", project.plan, "--batch-api", "batches", "-k", "backpressure")
    while len(fake.batches) < 2 and a.poll() is None and b.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # both polling
    assert len(fake.batches) == 2
    # the journal lists both batches (it listed the one written last)
    journal = json.loads(journal_file.read_text())
    assert sorted(r["row"] for e in journal["batches"] for r in e["requests"].values()) == [
        "backpressure.md",
        "quorum.md",
    ]
    (batch_a,) = [x for x in fake.batches.values() if x.requests[0]["custom_id"].startswith("quorum_md-")]
    (batch_b,) = [x for x in fake.batches.values() if x is not batch_a]

    # when: A is stopped with Ctrl-C, and B's batch ends so that B finishes
    a.send_signal(signal.SIGINT)
    a.wait(timeout=60)
    a.communicate()
    batch_b.polls_until_ended = batch_b.polls + 1
    assert b.wait(timeout=60) == 0, b.communicate()[0]
    b.communicate()

    # then: the journal still lists A's batch (B deleted the journal: A's resume paid for quorum twice)
    journal = json.loads(journal_file.read_text())
    assert [(e["id"], [r["row"] for r in e["requests"].values()]) for e in journal["batches"]] == [
        (batch_a.id, ["quorum.md"])
    ]
    # and A's resume collects it: no third batch
    monkeypatch.delenv("BATCHGEN_LOADED_IN")
    batch_a.polls_until_ended = batch_a.polls + 1
    result = project.run("--batch-api", "batches", "-k", "quorum", subprocess=True)
    assert result.ret == 0, result.stdout.str()
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}
    assert len(fake.batches) == 2 and not journal_file.exists()


# -- runs of one plan at once: each entry has an owner, a live run's are left alone -------------


def _journal_lists(journal_file, batch_id: str) -> bool:
    try:
        return batch_id in {b["id"] for b in json.loads(journal_file.read_text())["batches"]}
    except (OSError, ValueError):
        return False


def test_a_run_started_while_another_is_live_leaves_its_rows_and_its_batch_alone(project, fake, monkeypatch):
    # given: run A of the plan, polling its batch (which does not end yet)
    project.write_rows(rows_for("quorum", "backpressure"), ini_extra=BATCH_INI)
    fake.batch_polls_until_ended = 10**9
    journal_file = project.cassette_dir() / "batches-journal.json"
    a = project.start("--batch-plan", project.plan, "--batch-api", "batches")
    while not fake.batches and a.poll() is None:
        time.sleep(0.02)
    (batch,) = fake.batches.values()
    while not _journal_lists(journal_file, batch.id) and a.poll() is None:
        time.sleep(0.02)

    # when: run B of the same rows starts (its own key, to tell its requests) with --batch-cancel,
    # and is stopped with Ctrl-C if it waits for a batch
    monkeypatch.setenv("ANTHROPIC_API_KEY", "second-run-key")
    b = project.start("--batch-plan", project.plan, "--batch-api", "batches", "--batch-cancel")

    def b_requests() -> list:
        return [r for r in list(fake.requests) if r.api_key == "second-run-key"]

    while b.poll() is None and not b_requests():
        time.sleep(0.02)
    if b.poll() is None:
        b.send_signal(signal.SIGINT)
    b.wait(timeout=60)
    out_b = b.communicate()[0]

    # then: B treated A's batch as A's: it did not cancel it (it did: A's batch was B's "leftover"),
    # polled and sent nothing, and said why its rows were skipped
    assert batch.cancel_initiated_at is None, out_b
    assert b_requests() == [] and len(fake.batches) == 1, out_b
    assert b.returncode == 0, out_b
    assert f"2 row(s) of plan.md skipped: another run of the plan is generating them (pid {a.pid} on " in out_b, out_b
    assert "run again once it has finished to check the row" in out_b, out_b
    # and A, alone, collects its batch and finishes every row
    batch.polls_until_ended = batch.polls + 1
    assert a.wait(timeout=60) == 0, a.communicate()[0]
    a.communicate()
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}
    assert len(fake.batches) == 1 and not journal_file.exists()
    assert [len(project.cassette_bodies(name)) for name in ("quorum.md", "backpressure.md")] == [1, 1]


def test_two_runs_of_the_same_rows_started_at_once_send_them_once(project, fake, monkeypatch, tmp_path):
    # given: two runs of the same rows started at once: both read the journal while it was empty
    project.write_rows(rows_for("quorum", "backpressure"), ini_extra=BATCH_INI)
    project.write("conftest.py", LOADED_TOGETHER_CONFTEST)
    (tmp_path / "loaded").mkdir()
    monkeypatch.setenv("BATCHGEN_LOADED_IN", str(tmp_path / "loaded"))
    fake.batch_polls_until_ended = 3
    runs = [project.start("--batch-plan", project.plan, "--batch-api", "batches") for _ in range(2)]

    # when both end
    outs = []
    for run in runs:
        assert run.wait(timeout=60) == 0, run.communicate()[0]
        outs.append(run.communicate()[0])

    # then: one run sent the rows, in one batch; the other sent nothing (both sent a batch: paid twice)
    assert len(fake.batches) == 1, outs
    assert sorted(sent_requests(fake).values()) == [1, 1]
    assert sum("another run of the plan is generating them" in out for out in outs) == 1, outs
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}
    assert not (project.cassette_dir() / "batches-journal.json").exists()


def test_a_run_leaves_the_requests_of_rows_another_live_run_generates_in_that_runs_batch(project, fake):
    # given: a batch of two rows whose run died, and a live run C (a process that is alive)
    # now owning the record and generating one of the rows, backpressure
    import subprocess

    from pytest_batchgen import journal as journal_module

    project.write_rows(rows_for("quorum", "backpressure"), ini_extra=BATCH_INI)
    fake.batch_polls_until_ended = 10**9
    journal_file = project.cassette_dir() / "batches-journal.json"
    a = project.start("--batch-plan", project.plan, "--batch-api", "batches", output=False)
    while not fake.batches and a.poll() is None:
        time.sleep(0.02)
    (batch,) = fake.batches.values()
    while not _journal_lists(journal_file, batch.id) and a.poll() is None:
        time.sleep(0.02)
    a.kill()
    a.wait()
    holder = subprocess.Popen(["sleep", "600"])
    try:
        data = json.loads(journal_file.read_text())
        (record,) = data["runs"]
        record["owner"]["pid"] = holder.pid
        record["owner"]["started"] = journal_module._proc_stat(holder.pid)[1]
        record["rows"] = ["backpressure.md"]
        journal_file.write_text(json.dumps(data))
        batch.polls_until_ended = batch.polls + 1

        # when: run B of both rows skips backpressure (C's) and files quorum from C's batch
        result = project.run("--batch-api", "batches")

        # then: C's entry keeps backpressure's request (B collected it, so once C was gone the
        # next run sent backpressure again: paid twice)
        assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "pending"}, result.stdout.str()
        entries = json.loads(journal_file.read_text())["batches"]
        assert [[r["row"] for r in e["requests"].values()] for e in entries] == [["backpressure.md"]]
    finally:
        holder.kill()
        holder.wait()
