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
