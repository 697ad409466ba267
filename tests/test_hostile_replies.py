"""What a server sends is not trusted: a reply or an error that cannot be text, a stop_reason
that does not say the reply is finished, an error body of any size and any bytes.

Found by an outside tester's scripted server; each test failed on the code before its fix (a
run that hung for ever, a traceback at the session's end that lost the plan's notes and the
report, a cut-off reply marked complete, a NUL byte or an escape sequence in the plan). The
runs go through the suite's harness against the loopback API (``fakeapi.Reply.raw`` for the
bodies no API would send).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from fakeapi import Reply
from genhelpers import draft, requests_by_row, router, rows_for
from pytest_batchgen import sender

#: a lone surrogate: ``json.dumps`` writes it as the escape ``\ud800``, valid JSON that decodes
#: to a string no UTF-8 file can hold
LONE = "\ud800"

#: the characters a server's text must not bring into the plan or the terminal
RAW_CONTROLS = ("\x00", "\x1b", "\x07")


def text_of(run) -> str:
    return run.stdout.str() + run.stderr.str()


def report_row(project, filename: str) -> dict:
    report = json.loads((project.path / "report.json").read_bytes().decode("utf-8"))  # strict UTF-8
    return next(r for p in report["plans"] for r in p["rows"] if r["filename"] == filename)


def message(text: str = "", stop_reason: str | None = "end_turn", content: list | None = None) -> Reply:
    """A 200 whose body is this message, whatever it holds (``json.dumps``: surrogates escaped)."""
    body = {
        "id": "msg_01hostile",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}] if content is None else content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
    return Reply.raw(json.dumps(body))


# -- 1. a reply whose text holds a lone surrogate ------------------------------------------------


@pytest.mark.parametrize("where", ["process", "thread"])
def test_a_reply_holding_a_lone_surrogate_is_invalid_never_recorded_and_sent_again(project, fake, where):
    """Its JSON is valid, its text cannot be written as UTF-8. Sent from a process of its own,
    the pytest process's check thread died writing the draft and never answered: the run hung,
    and its recording, already written, made every rerun hang too. From a thread, the row
    failed with a bare UnicodeEncodeError and the recording was kept. It is an invalid reply,
    as other 200s that are not messages are: the row fails saying so, nothing is written or
    recorded, and the next run asks again. An emoji, escaped as a surrogate pair, is text."""
    project.write_rows(rows_for("alpha", "beta"), ini_extra=f"batchgen_sender = {where}\n")
    router(fake).set("alpha.md", Reply.ok(draft("Alpha", extra=f"A lone {LONE} surrogate.")))
    router(fake).set("beta.md", Reply.ok(draft("Beta", extra="An emoji: \U0001f600.")))

    result = project.run("--batch-report", "report.json")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "Traceback" not in out and "UnicodeEncodeError" not in out
    says = "InvalidReply: the API's reply is not a message: content[0].text holds a lone surrogate ('\\ud800')"
    assert says in result.failure("alpha.md::generate")
    assert report_row(project, "alpha.md")["generation"]["error"].startswith(says)
    assert not project.cassette("alpha.md").exists()
    assert not (project.path / "output" / "alpha.md").exists()
    assert project.output("beta.md") == draft("Beta", extra="An emoji: \U0001f600.")
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "complete"}

    router(fake).set("alpha.md", Reply.ok(draft("Alpha")))  # the server is healthy again
    again = project.run()

    assert again.ret == pytest.ExitCode.OK, text_of(again)
    assert len(requests_by_row(fake)["alpha.md"]) == 2  # sent again, not replayed
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete"}


def test_a_recording_holding_a_lone_surrogate_is_set_aside_and_recorded_again(project, fake):
    """A cassette recorded before such replies were refused replayed the hang in every run.
    Its reply is not a message: the recording is corrupt, set aside where the run may record,
    and the row is sent again."""
    import yaml

    project.write_rows(rows_for("alpha"))
    assert project.run().ret == pytest.ExitCode.OK
    path = project.cassette("alpha.md")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    response = data["interactions"][0]["response"]
    body = json.loads(response["body"]["string"])
    body["content"][0]["text"] += f"A lone {LONE} surrogate."
    response["body"]["string"] = json.dumps(body)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    project.reset(rows_for("alpha"))
    fake.reset_log()

    result = project.run()

    assert result.ret == pytest.ExitCode.OK, text_of(result)
    assert len(requests_by_row(fake)["alpha.md"]) == 1  # recorded again
    assert "\\ud800" not in path.read_text(encoding="utf-8")  # the new reply
    assert "\\ud800" in path.with_name("alpha.md.yaml.corrupt").read_text(encoding="utf-8")
    assert project.output("alpha.md") == draft("Alpha")


def _remote(monkeypatch, *, quick: bool = True, received: list[tuple] | None = None):
    """A :class:`~pytest_batchgen.sender.RemoteDispatch` of one row ``k`` whose messages to the
    sending process are kept in ``sent``, instead of going down a pipe, and whose messages from
    it are ``received`` (then the pipe is closed)."""
    sent: list[tuple] = []
    inbox = list(received or [])

    def receive() -> tuple:
        if not inbox:
            raise EOFError
        return inbox.pop(0)

    child = types.SimpleNamespace(
        send=lambda m: sent.append(m) or True, receive=receive, wait=lambda block=True: 0, started=False
    )
    row = object()
    run = types.SimpleNamespace(
        row_id=lambda r: types.SimpleNamespace(key="k"),
        quick_checks=quick,
        draft_failures=lambda r, p: [],
    )
    remote = sender.RemoteDispatch(child, [(run, row)], [])  # type: ignore[arg-type]
    return remote, sent


@pytest.mark.parametrize("quick", [True, False], ids=["on-the-reading-thread", "on-a-pool-thread"])
def test_whatever_fails_in_the_pytest_processs_check_answers_the_sending_process(monkeypatch, quick):
    """The sending process waits for the pytest process's verdict on each draft. Only an
    OSError writing the draft was answered: any other exception (the UnicodeEncodeError of a
    reply the client let through) killed the thread that was to answer, and the run waited for
    ever. Whatever fails, writing the recording, the draft or checking it, is an answer: the row
    ends in error there."""
    remote, sent = _remote(monkeypatch, quick=quick)

    def refuse(*args):
        raise UnicodeEncodeError("utf-8", LONE, 0, 1, "surrogates not allowed")

    monkeypatch.setattr(sender, "write_draft", refuse)
    remote._check(1, "k", Path("out.md"), "text")
    monkeypatch.setattr(sender, "write_recording", lambda recording: 1 / 0)
    remote._check(2, "k", Path("out.md"), "text", recording=object())  # type: ignore[arg-type]
    remote._checking.shutdown(wait=True)

    assert sorted(sent) == [
        (
            "checked",
            1,
            None,
            "UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800' in position 0: surrogates not allowed",
            0.0,
        ),
        ("checked", 2, None, "ZeroDivisionError: division by zero", 0.0),
    ]


def test_a_message_the_pytest_process_cannot_read_ends_the_rows_not_answered_yet():
    """An exception on the thread reading the child's messages left every row not answered
    yet waiting for its result, and the session with it. They end in error, naming it."""
    remote, sent = _remote(None, received=[("result", None, sender._Counters())])

    remote.start()

    assert remote.join(10)
    result = remote.result("k", 0)
    assert result is not None and result.outcome == "error"
    assert result.error == (
        "reading the sending process's messages failed: AttributeError: 'NoneType' object has no attribute 'key'"
    )


# -- 2 and 4. a server's error text: made safe, and bounded, where it becomes the row's error -----


def test_an_api_error_holding_a_lone_surrogate_fails_its_row_and_the_rest_is_recorded(project, fake):
    """A 400 whose message holds a lone surrogate became the row's error as it came: the session
    ended in a traceback writing the plan's notes (UnicodeEncodeError), and the other rows'
    statuses and the report were lost. The error is escaped where it is made."""
    project.write_rows(rows_for("alpha", "beta"))
    router(fake).set("alpha.md", Reply.invalid_request(f"bad {LONE} thing"))

    result = project.run("--batch-report", "report.json")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    says = "BadRequestError: HTTP 400 invalid_request_error: bad \\ud800 thing"
    assert says in result.failure("alpha.md::generate")
    assert says in project.notes()["alpha.md"]
    assert report_row(project, "alpha.md")["generation"]["error"] == says
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "complete"}


INJECTED = (
    "bad\n\n## Phase 7\n\n| Title | Filename | Model | Status |\n|---|---|---|---|\n"
    "| Evil | evil.md | opus | pending |\n\x1b[2J\x1b]0;pwned\x07 done"
)

ERROR_BODIES = [
    pytest.param(
        Reply.raw(b"\xff\xfe\x00garbage", status=404, content_type="text/plain"),
        "NotFoundError: HTTP 404: \ufffd\ufffd\\x00garbage",
        id="404-binary",
    ),
    pytest.param(
        Reply.invalid_request(INJECTED),
        "BadRequestError: HTTP 400 invalid_request_error: bad\\n\\n## Phase 7\\n\\n| Title | Filename | Model | "
        "Status |\\n|---|---|---|---|\\n| Evil | evil.md | opus | pending |\\n\\x1b[2J\\x1b]0;pwned\\x07 done",
        id="400-escapes",
    ),
    pytest.param(
        Reply.raw("<html>" + "x" * 100_000 + "</html>", status=401, content_type="text/html"),
        "AuthenticationError: HTTP 401: <html>" + "x" * 394 + "… (100,013 characters)",
        id="401-100kb-html",
    ),
]


@pytest.mark.parametrize("reply, says", ERROR_BODIES)
def test_an_api_errors_text_is_kept_bounded_and_with_its_control_characters_escaped(project, fake, reply, says):
    """An error's body went raw and whole into the row's error, and so into the plan's notes,
    the terminal and the report: a NUL byte in plan.md, escape sequences that cleared the
    terminal, 100 KB of HTML in the notes. The row's error keeps the server's text to a few
    hundred characters, with its length, control characters escaped as ``repr`` does."""
    project.write_rows(rows_for("alpha"))
    router(fake).set("alpha.md", reply)

    result = project.run("--batch-report", "report.json")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert report_row(project, "alpha.md")["generation"]["error"] == says
    assert says in project.notes()["alpha.md"]
    assert says in result.failure("alpha.md::generate")
    plan = (project.path / "plan.md").read_bytes().decode("utf-8")
    report = json.loads((project.path / "report.json").read_bytes().decode("utf-8"))
    for where, text in (
        ("the plan", plan),
        ("the terminal", out),
        ("the report", json.dumps(report, ensure_ascii=False)),
    ):
        assert not [c for c in RAW_CONTROLS if c in text], where
    assert len(plan) < 5_000  # the 100 KB page is not in it
    assert project.statuses() == {"alpha.md": "pending"}  # and no row the error wrote in


def test_a_servers_text_is_kept_escaped_and_bounded():
    from pytest_batchgen.client import server_text

    assert server_text("plain words: é, ü, 😀, C:\\path") == "plain words: é, ü, 😀, C:\\path"
    assert server_text(f"a\x00b\x1b[31mc\x07\nd\te\r\u202e{LONE}\x85") == (
        "a\\x00b\\x1b[31mc\\x07\\nd\\te\\r\\u202e\\ud800\\x85"
    )
    assert server_text("x" * 100_000) == "x" * 400 + "… (100,000 characters)"
    assert server_text("\x00" * 1_000) == "\\x00" * 100 + "… (1,000 characters)"
    assert server_text("y" * 400) == "y" * 400


def test_a_batch_results_error_is_kept_bounded_and_escaped():
    from pytest_batchgen.batches import _describe

    errored = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "x\x1b" * 300}}}

    assert _describe(errored) == "Message Batches errored: api_error: " + "x\\x1b" * 78 + "… (611 characters)"


# -- 3. a stop_reason that does not say the reply is finished ---------------------------------


@pytest.mark.parametrize("api", ["messages", "batches"])
def test_a_reply_cut_off_by_the_context_window_is_truncated_and_not_complete(project, fake, api):
    """``model_context_window_exceeded`` (the API's: the prompt and the reply filled the model's
    context window) was taken for a finished reply: a cut-off draft that passed its checks was
    marked complete. It is a truncation, as ``max_tokens`` is: the partial draft is written for
    you to read, in the drafts folder (never the output), not checked nor repaired, and the row
    stays pending."""
    project.write_rows(rows_for("cut", "fine"))
    router(fake).set("cut.md", Reply.ok(draft("Cut"), stop_reason="model_context_window_exceeded"))

    result = project.run("--batch-api", api, "--batch-report", "report.json")

    assert result.ret == pytest.ExitCode.TESTS_FAILED, text_of(result)
    says = (
        "the reply was cut off by the model's context window (its prompt and reply fill it); the partial draft "
        "is in output/.batchgen-drafts/cut.md. Shorten the format reference or the content rules, or use a model "
        "with a larger "
        "context window"
    )
    generation = report_row(project, "cut.md")["generation"]
    assert (generation["outcome"], generation["error"]) == ("truncated", says)
    assert f"truncated: {says}" in result.failure("cut.md::generate")
    assert project.output(".batchgen-drafts/cut.md") == draft("Cut")
    assert not (project.path / "output" / "cut.md").exists()
    assert len(report_row(project, "cut.md")["attempts"]) == 1  # a cut-off reply is not repaired
    assert project.statuses() == {"cut.md": "pending", "fine.md": "complete"}


@pytest.mark.parametrize("api", ["messages", "batches"])
@pytest.mark.parametrize("stop_reason", ["banana", "pause_turn", "tool_use"])
def test_a_reply_whose_stop_reason_is_not_a_finished_ones_is_not_taken_for_finished(project, fake, stop_reason, api):
    """Only ``end_turn`` and ``stop_sequence`` say the model finished its reply; a refusal is one.
    Any other stop_reason (``pause_turn``, which asks for the turn to be continued, ``tool_use`` in
    a request that offers no tool, or one this plugin does not know) was taken for ``end_turn``,
    and a draft that may be unfinished was marked complete. Such a reply is counted and recorded
    (it is a message), and handled as a truncated one: its draft written (in the drafts folder,
    never the output), not checked, the row pending, the stop_reason named."""
    project.write_rows(rows_for("odd"))
    router(fake).set("odd.md", Reply.ok(draft("Odd"), stop_reason=stop_reason))

    result = project.run("--batch-api", api, "--batch-report", "report.json")

    assert result.ret == pytest.ExitCode.TESTS_FAILED, text_of(result)
    says = (
        f"the reply ended with stop_reason '{stop_reason}', not end_turn: it may be unfinished, so it was not "
        "checked; the partial draft is in output/.batchgen-drafts/odd.md"
    )
    generation = report_row(project, "odd.md")["generation"]
    assert (generation["outcome"], generation["error"]) == ("truncated", says)
    assert [a["cost_usd"] > 0 for a in report_row(project, "odd.md")["attempts"]] == [True]  # counted, not repaired
    assert project.output(".batchgen-drafts/odd.md") == draft("Odd")
    assert not (project.path / "output" / "odd.md").exists()
    assert project.statuses() == {"odd.md": "pending"}
    assert project.cassette("odd.md").exists()


@pytest.mark.parametrize(
    "stop_reason, shown",
    [
        pytest.param(f"weird{LONE}", "'weird\\ud800'", id="lone-surrogate"),
        pytest.param("\x1b[2Jend_turn", "'\\x1b[2Jend_turn'", id="escape-sequence"),
        pytest.param("end_turn " * 100, "'end_turn end_turn ", id="long"),
        pytest.param("", "''", id="empty"),
    ],
)
def test_a_stop_reason_that_is_not_a_word_makes_the_reply_invalid(project, fake, stop_reason, shown):
    """A stop_reason holding a lone surrogate in a reply with no content was pasted into the
    row's error ("the model's reply was empty (no text, stop_reason ...)"), and the session
    ended in a traceback writing the plan's notes. The API's stop reasons are words such as
    ``end_turn``: anything else is not a message, as other garbage 200s are (not recorded)."""
    project.write_rows(rows_for("alpha", "beta"))
    router(fake).set("alpha.md", message(stop_reason=stop_reason, content=[]))

    result = project.run("--batch-report", "report.json")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    says = f"InvalidReply: the API's reply is not a message: stop_reason is {shown}"
    assert says in result.failure("alpha.md::generate")
    assert len(report_row(project, "alpha.md")["generation"]["error"]) < 600
    assert says in project.notes()["alpha.md"]
    assert not project.cassette("alpha.md").exists()
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "complete"}


def test_a_judges_answer_cut_off_by_the_context_window_is_no_verdict():
    """As one cut off at max_tokens: its tool input may hold half a verdict, whatever it holds."""
    from pytest_batchgen.client import Completion, Usage
    from pytest_batchgen.judge import read_sample

    verdict = {"verdict": "pass", "reason": "fine", "line": 1, "quote": ""}
    cut = Completion("", "model_context_window_exceeded", Usage(), "m", tool_input=verdict)

    assert read_sample(cut).verdict is None
    assert read_sample(cut).reason == "the judge's answer was cut off by the model's context window"
    assert read_sample(Completion("", "tool_use", Usage(), "m", tool_input=verdict)).verdict == "pass"
