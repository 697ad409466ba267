"""A reply that did not finish never becomes a row's output.

A reply cut off at ``max_tokens`` (or by the context window, or ended by a stop reason that
does not say it is finished) fails the row's ``generate`` item as truncated and is not checked.
Its partial text used to be written to the row's output file: the row stayed pending, but the
next run (or ``--batch-validate-only``) checked that file like any output, and a cut-off text
that happened to pass every checklist line made the row complete, a known-unfinished reply
shipped with exit 0. The partial text now goes to the plan's drafts folder
(``output/.batchgen-drafts/``), for you to read, and the output keeps what it held before.
Each test here failed on the code before the fix.
"""

from __future__ import annotations

import json

import pytest

from genhelpers import REFUSE_WRITES_IN, RULE_NAMES, Reply, bad_value, draft, go_offline, router, rows_for

#: how a run sends its requests: the Messages API from a process of its own (the default where
#: it forks) or from a thread of the pytest process, or Message Batches
SENDERS = [
    pytest.param(("messages", "process"), id="messages-process"),
    pytest.param(("messages", "thread"), id="messages-thread"),
    pytest.param(("batches", "process"), id="batches"),
]

DRAFT = "output/.batchgen-drafts/cut.md"


def given_rows(project, how: tuple[str, str], *names: str) -> tuple[str, ...]:
    """The rows, sent as ``how`` says; the options each run of them takes."""
    api, sender = how
    project.write_rows(rows_for(*names), ini_extra=f"batchgen_sender = {sender}\n")
    return ("--batch-api", api, "--batch-report", "report.json")


def stop_reasons(project, filename: str) -> list[str | None]:
    """The stop reason of each attempt the last run's report lists for a row."""
    report = json.loads((project.path / "report.json").read_text(encoding="utf-8"))
    row = next(r for p in report["plans"] for r in p["rows"] if r["filename"] == filename)
    return [a["stop_reason"] for a in row["attempts"]]


@pytest.mark.parametrize("how", SENDERS)
def test_a_cut_off_reply_that_passes_every_check_is_never_the_output_nor_complete(project, fake, how):
    # given: a reply cut off at max_tokens whose text would pass every check
    options = given_rows(project, how, "cut", "fine")
    router(fake).set("cut.md", Reply.truncated(draft("Cut")), Reply.ok(draft("Cut")))

    # when
    first = project.run(*options)

    # then: the row failed as truncated, its partial draft waits in the drafts folder, no output
    assert first.ret == pytest.ExitCode.TESTS_FAILED, first.stdout.str()
    failure = first.failure("cut.md::generate")
    assert "truncated: the reply was cut off at max_tokens" in failure
    assert f"the partial draft is in {DRAFT}" in failure
    assert not (project.path / "output" / "cut.md").exists()
    assert (project.path / DRAFT).read_text(encoding="utf-8") == draft("Cut")
    assert project.statuses() == {"cut.md": "pending", "fine.md": "complete"}
    assert f"the partial draft is in {DRAFT}" in project.notes()["cut.md"]
    # its checks had no output to judge: skipped, saying why, not failed on a missing file
    skipped = first.skip_reasons()
    assert {f"cut.md::{name}" for name in RULE_NAMES} <= set(skipped)
    assert "not checked: generation wrote no output (truncated: " in skipped["cut.md::sections"]

    # when: the outputs are validated without a model call
    validated = project.run("--batch-validate-only")

    # then: the row has no output to validate, and stays pending
    assert "pending row without an output (output/cut.md)" in validated.skip_reasons()["cut.md::sections"]
    assert project.statuses() == {"cut.md": "pending", "fine.md": "complete"}

    # when: an ordinary run again, with max_tokens raised as the message says (the same request
    # would replay the recorded truncation)
    second = project.run(*options, "-o", "batchgen_max_tokens=16000")

    # then: the row is generated again, its finished draft is the output, the partial one goes
    assert second.ret == pytest.ExitCode.OK, second.stdout.str()
    assert stop_reasons(project, "cut.md") == ["end_turn"]
    assert project.output("cut.md") == draft("Cut")
    assert not (project.path / DRAFT).exists()
    assert project.statuses() == {"cut.md": "complete", "fine.md": "complete"}


@pytest.mark.parametrize("how", SENDERS)
def test_a_cut_off_repair_leaves_the_first_attempts_draft_in_the_output(project, fake, how):
    # given: a first draft that fails a check, and a repair that is cut off (and would pass)
    options = given_rows(project, how, "cut")
    router(fake).set("cut.md", Reply.ok(bad_value("Cut")), Reply.truncated(draft("Cut")))

    # when
    result = project.run(*options)

    # then: the output is the first attempt's draft, the cut-off repair waits in the drafts folder
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert stop_reasons(project, "cut.md") == ["end_turn", "max_tokens"]
    assert project.output("cut.md") == bad_value("Cut")
    assert (project.path / DRAFT).read_text(encoding="utf-8") == draft("Cut")
    assert f"the partial draft is in {DRAFT}" in result.failure("cut.md::generate")
    # the checks judged the output on disk: the first draft's failure, not the partial draft
    assert "category is 'Z'" in result.failure("cut.md::category-value")
    assert project.statuses() == {"cut.md": "pending"}

    # and a validate-only run finds the same output failing, not the partial draft passing
    assert project.run("--batch-validate-only").ret == pytest.ExitCode.TESTS_FAILED
    assert project.statuses() == {"cut.md": "pending"}


@pytest.mark.parametrize("sender", ["process", "thread"])
def test_a_replayed_cut_off_reply_goes_to_the_drafts_folder_too(project, fake, monkeypatch, sender):
    # given: a cut-off reply recorded, then the project as before that run, offline
    rows = rows_for("cut")
    project.write_rows(rows, ini_extra=f"batchgen_sender = {sender}\n")
    router(fake).set("cut.md", Reply.truncated(draft("Cut")))
    assert project.run().ret == pytest.ExitCode.TESTS_FAILED
    assert project.cassette("cut.md").exists()
    go_offline(fake, monkeypatch)
    project.reset(rows)
    assert not (project.path / DRAFT).exists()

    # when: the recording is replayed
    replayed = project.run("--batch-record-mode", "none")

    # then: it is the same truncation, its partial draft aside, no output, the row pending
    assert replayed.ret == pytest.ExitCode.TESTS_FAILED, replayed.stdout.str()
    assert f"the partial draft is in {DRAFT}" in replayed.failure("cut.md::generate")
    assert not (project.path / "output" / "cut.md").exists()
    assert (project.path / DRAFT).read_text(encoding="utf-8") == draft("Cut")
    assert project.statuses() == {"cut.md": "pending"}


@pytest.mark.parametrize("how", SENDERS)
def test_a_cut_off_reply_that_cannot_be_recorded_keeps_its_text_in_the_drafts_folder(project, fake, how):
    # given: a cut-off reply that would pass, and its recording cannot be written
    options = given_rows(project, how, "cut")
    router(fake).set("cut.md", Reply.truncated(draft("Cut")))
    refuse = REFUSE_WRITES_IN.replace(
        "if path.parent.resolve() == FOLDER:", "if path.parent.resolve() == FOLDER and path.name == 'cut.md.yaml':"
    )  # (only the row's recording: the batch journal beside it is written)
    project.write("conftest.py", refuse.format(folder=str(project.cassette_dir().resolve())))

    # when
    result = project.run(*options)

    # then: the paid-for text is kept, aside: no output for a later run to take for a finished one
    failure = result.failure("cut.md::generate")
    assert "the reply could not be recorded in cassettes/plan/cut.md.yaml: Permission denied" in failure
    assert f"its text is kept in {DRAFT}" in failure
    assert not (project.path / "output" / "cut.md").exists()
    assert (project.path / DRAFT).read_text(encoding="utf-8") == draft("Cut")
    assert "not checked: generation wrote no output (error: " in result.skip_reasons()["cut.md::sections"]
    assert project.statuses() == {"cut.md": "pending"}

    # and a validate-only run has no output to mark complete
    (project.path / "conftest.py").unlink()
    project.run("--batch-validate-only")
    assert project.statuses() == {"cut.md": "pending"}


def test_an_output_finished_by_hand_after_a_cut_off_reply_is_fresh_not_stale(project, fake):
    """Review round: the partial draft now waits in the drafts folder, where freshness took any
    waiting file for the failed draft of today's prompt: an output written by hand beside it
    (the partial text finished, say) was called stale ("the draft of today's prompt failed its
    checks"), and ``--batch-fail-stale`` failed it. A hand edit never makes a row stale; a cut-off
    reply is no draft that could have replaced the output."""
    options = given_rows(project, ("messages", "thread"), "cut", "fine")
    router(fake).set("cut.md", Reply.truncated(draft("Cut")))
    first = project.run(*options)
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    assert (project.path / DRAFT).exists()

    # when: the user finishes the output by hand, and the outputs are gated on freshness
    (project.path / "output" / "cut.md").write_text(draft("Cut by hand"), encoding="utf-8")
    gate = project.run("--batch-validate-only", "--batch-fail-stale")

    # then
    out = gate.stdout.str()
    assert gate.ret == 0, out
    assert "stale" not in out.split("pytest-batchgen: freshness")[-1], out


REFUSE_SECOND_RECORDING = """
import errno
from pathlib import Path
from pytest_batchgen import fsutil

real = fsutil._create_temporary
FOLDER = Path({folder!r})
seen = []

def refused(path):
    if path.parent.resolve() == FOLDER and path.name == "cut.md.yaml":
        seen.append(path)
        if len(seen) > 1:
            tmp = path.with_name("." + path.name + fsutil.TMP_MARK + "0123abcd")
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    return real(path)

fsutil._create_temporary = refused

def pytest_unconfigure(config):
    fsutil._create_temporary = real
"""


@pytest.mark.parametrize(
    "repair",
    [pytest.param(Reply.refused(), id="refused"), pytest.param(Reply.truncated(""), id="cut-off-empty")],
)
def test_an_unrecorded_repair_that_kept_no_text_names_no_file_it_was_kept_in(project, fake, repair):
    """Review round: a repair whose recording could not be written and whose own text was not
    kept (a refusal, an empty cut-off reply) said "its text is kept in
    output/.batchgen-drafts/cut.md", a file never written, because an earlier attempt had
    written the output (``result.wrote``). The batch path already went by what this reply kept."""
    options = given_rows(project, ("messages", "thread"), "cut")
    router(fake).set("cut.md", Reply.ok(bad_value("Cut")), repair)
    project.write("conftest.py", REFUSE_SECOND_RECORDING.format(folder=str(project.cassette_dir().resolve())))

    result = project.run(*options)

    failure = result.failure("cut.md::generate")
    assert "the reply could not be recorded in cassettes/plan/cut.md.yaml: Permission denied" in failure
    assert "its text is kept in" not in failure
    assert not (project.path / DRAFT).exists()
    assert project.output("cut.md") == bad_value("Cut")  # the first attempt's draft, as it was
