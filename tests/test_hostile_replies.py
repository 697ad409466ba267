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
