"""What a Message Batches server sends is not trusted either (``--batch-api batches``).

Found by an outside tester's hostile server (``FakeAnthropic.batch_tamper`` rewrites the answers
of the batch endpoints); each test failed on the code before its fix (except where a case says
it passed already): a ``results_url`` on another host got the API key, and its 404 made the run
forget a paid batch; one line of a results stream that was not a result, or a poll answered
with HTML, a list or counts that are not numbers, stopped the dispatcher (every pending row
failed with a bare ``JSONDecodeError``, ``TypeError`` or ``AttributeError``); an unknown
status, a results read that always failed, or a ``retry-after`` of days, held the run for ever;
a batch id with path characters ended in the SDK's ``ValueError``; an error body's escape
sequence reached the terminal. Found in the review round after: a ``results_url`` that
``urllib`` cannot split, a results body its ``Content-Encoding`` cannot decode, and JSON nested
past the recursion limit (in a poll or a results line) still stopped the dispatcher; a batch id
with a final newline passed the id check, was polled, and its 404 made the run forget the batch.

Tried and fine before: results for an unknown custom_id or a custom_id twice (the first is
filed, the others counted as orphans), a missing result (sent again), ``errored``, ``expired``
and ``canceled`` results with odd or missing error bodies, a message without content, with only
non-text blocks, with a lone surrogate or cut off at ``max_tokens`` (none marked complete).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

import yaml  # noqa: F401  (in-process runs: see tests/test_init.py)
from fakeapi import Batch, FakeAnthropic
from genhelpers import rows_for
from pytest_batchgen.journal import custom_id

BATCH_INI = "batchgen_batch_poll_start = 0.01\nbatchgen_batch_poll_max = 0.05\n"
JOURNAL = "batches-journal.json"

Answer = tuple[int, dict[str, str], bytes]


def text_of(run) -> str:
    return run.stdout.str() + run.stderr.str()


def results_lines(rewrite: Callable[[list[bytes]], bytes]) -> Callable[[str, Batch, Answer], Answer]:
    """A server whose results stream is ``rewrite`` of the good lines (each ending in a newline)."""

    def tamper(kind: str, batch: Batch, answer: Answer) -> Answer:
        if kind != "results":
            return answer
        status, headers, _ = answer
        return status, headers, rewrite([json.dumps(r).encode() + b"\n" for r in batch.results])

    return tamper


def polls(rewrite: Callable[[dict], object]) -> Callable[[str, Batch, Answer], Answer]:
    """A server whose answer to a poll is ``rewrite`` of the batch object (bytes as they are)."""

    def tamper(kind: str, batch: Batch, answer: Answer) -> Answer:
        if kind != "retrieve":
            return answer
        status, headers, body = answer
        out = rewrite(json.loads(body))
        return status, headers, out if isinstance(out, bytes) else json.dumps(out).encode()

    return tamper


def journal_rows(project) -> list[str]:
    path = project.cassette_dir() / JOURNAL
    if not path.exists():
        return []
    return sorted(r["row"] for b in json.loads(path.read_text())["batches"] for r in b["requests"].values())


# -- 1. a results_url on another host ---------------------------------------------------------------


def test_a_results_url_on_another_host_is_never_followed_and_the_results_are_read_from_the_api(project, fake):
    """The SDK followed it with the API key; the other host's 404 then read as "the batch was
    deleted": the run forgot the paid batch and the next run sent (and paid for) every row again.
    The results are read at the API's own path instead, as behind a gateway, whose answers name
    the API's host."""
    project.write_rows(rows_for("alpha", "beta"), ini_extra=BATCH_INI)
    with FakeAnthropic() as elsewhere:

        def moved(batch: dict) -> dict:
            url = batch["results_url"]
            return {**batch, "results_url": url and url.replace(fake.base_url, elsewhere.base_url)}

        fake.batch_tamper = polls(moved)
        result = project.run("--batch-api", "batches")

        assert elsewhere.requests == []  # nothing, and so no key, went to the other host
    out = text_of(result)
    assert result.ret == 0, out
    assert len(fake.batches) == 1
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete"}
    assert journal_rows(project) == []  # collected: nothing left for a rerun to pay for again


# -- 2. results streams with lines that are not results ---------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(b"{not json\n", id="malformed"),
        pytest.param(b"\n", id="empty"),
        pytest.param(b"[1, 2]\n", id="not-an-object"),
        pytest.param(b'{"custom_id": "ALPHA", "result": "boom"}\n', id="result-not-an-object"),
        pytest.param(b'{"custom_id": 7, "result": {}}\n', id="custom-id-not-a-string"),
        pytest.param(b"\xff\xfe\n", id="not-utf8"),
        pytest.param(b"[" * 100_000 + b"\n", id="nested-past-the-recursion-limit"),  # review round
    ],
)
def test_a_results_line_that_is_not_a_result_is_skipped_and_the_others_are_filed(project, fake, junk):
    """It stopped the dispatcher: the rows after it failed with ``batch dispatcher stopped:
    JSONDecodeError`` (or ``AttributeError``), and so did every other batch's rows."""
    project.write_rows(rows_for("alpha", "beta", "gamma"), ini_extra=BATCH_INI)
    junk = junk.replace(b"ALPHA", custom_id("alpha.md", set()).encode())  # a request of the batch
    fake.batch_tamper = results_lines(lambda good: junk + b"".join(good))

    result = project.run("--batch-api", "batches")

    out = text_of(result)
    assert result.ret == 0, out
    assert "dispatcher stopped" not in out and "Traceback" not in out
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete", "gamma.md": "complete"}
    assert len(fake.batches) == 1  # nothing sent again
    assert journal_rows(project) == []


def test_a_truncated_last_results_line_is_no_result_its_row_is_sent_again(project, fake):
    """The last line cut short: ``JSONDecodeError`` stopped the dispatcher and failed that row."""
    project.write_rows(rows_for("alpha", "beta"), ini_extra=BATCH_INI)
    cut = {"done": False}

    def truncate(good: list[bytes]) -> bytes:
        if cut["done"]:  # the batch of the resent request: whole
            return b"".join(good)
        cut["done"] = True
        return b"".join(good)[:-40]

    fake.batch_tamper = results_lines(truncate)

    result = project.run("--batch-api", "batches")

    out = text_of(result)
    assert result.ret == 0, out
    assert "dispatcher stopped" not in out and "Traceback" not in out
    assert [len(b.requests) for b in fake.batches.values()] == [2, 1]  # only the cut-off row again
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete"}
    assert journal_rows(project) == []


def test_a_results_stream_that_always_fails_ends_its_rows_and_keeps_the_batch(project, fake):
    """A good poll before each failed read reset the count of failures: the batch was polled
    and its results asked for again and again, for ever (the run hung until Ctrl-C)."""
    project.write_rows(rows_for("alpha"), ini_extra=BATCH_INI)

    def broken(kind: str, batch: Batch, answer: Answer) -> Answer:
        if kind != "results":
            return answer
        body = {"type": "error", "error": {"type": "api_error", "message": "results unavailable"}}
        return 500, {"content-type": "application/json"}, json.dumps(body).encode()

    fake.batch_tamper = broken

    result = project.run("--batch-api", "batches")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    failure = result.failure("alpha.md::generate")
    assert "reading the results of batch msgbatch_" in failure and "failed 5 times" in failure
    assert "it stays in the journal, rerun to collect it" in failure
    assert journal_rows(project) == ["alpha.md"]


# -- 3. polls answered with something that is not a batch -------------------------------------------


@pytest.mark.parametrize(
    "rewrite, says",
    [
        pytest.param(lambda b: b"<html><body>\x1b[31mBad gateway</body></html>", "it is not JSON", id="html"),
        pytest.param(lambda b: b"{garbage", "it is not JSON", id="garbage-json"),
        pytest.param(lambda b: [1, 2], "it is a JSON list, not an object", id="a-list"),
        pytest.param(
            lambda b: {**b, "request_counts": {"processing": "many"}},
            "its request_counts.processing is 'many', not a count",
            id="counts-not-numbers",
        ),
        pytest.param(
            lambda b: {**b, "processing_status": "\x1b[2Jdone"},
            "its processing_status '\\x1b[2Jdone' is none of in_progress, canceling, ended",
            id="unknown-status",
        ),
        pytest.param(lambda b: b"[" * 100_000, "it is not JSON", id="nested-past-the-recursion-limit"),  # review round
    ],
)
def test_a_poll_answer_that_is_not_a_batch_fails_its_rows_and_keeps_the_batch(project, fake, rewrite, says):
    """HTML, a list or string counts stopped the dispatcher with a bare AttributeError or
    TypeError; an unknown status was polled for ever. Now each is a failed poll: after
    MAX_POLL_FAILURES in a row the batch's rows fail saying why, the batch stays in the journal,
    and a rerun collects it (nothing paid twice)."""
    project.write_rows(rows_for("alpha", "beta"), ini_extra=BATCH_INI)
    fake.batch_tamper = polls(rewrite)

    result = project.run("--batch-api", "batches")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "dispatcher stopped" not in out and "Traceback" not in out and "\x1b" not in out
    failure = result.failure("beta.md::generate")
    assert "the answer is not a Message Batch: " + says in failure
    assert "it stays in the journal, rerun to collect it" in failure
    assert "\x1b" not in project.read("plan.md")
    assert journal_rows(project) == ["alpha.md", "beta.md"]

    fake.batch_tamper = None
    assert project.run("--batch-api", "batches").ret == 0
    assert len(fake.batches) == 1
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete"}


# -- 4. a batch id with path characters ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../v1/messages",
        "msgbatch_1?x=1 y",
        "msgbatch_\x1b[31m",
        "msgbatch_1\n",  # review round: the id check's ``$`` let a final newline through
    ],
)
def test_a_batch_id_that_is_not_one_is_never_put_in_a_url(project, fake, bad_id):
    """``../`` ended the run in the SDK's ValueError (the dispatcher stopped); ``?`` and a space
    went into the URL and the journal as they came. The create's answer is not a batch: its
    rows fail saying so; its entry stays in the journal without an id, for the next run to look
    for the batch before sending anything again."""
    project.write_rows(rows_for("alpha"), ini_extra=BATCH_INI)

    def renamed(kind: str, batch: Batch, answer: Answer) -> Answer:
        if kind != "create":
            return answer
        status, headers, body = answer
        return status, headers, json.dumps({**json.loads(body), "id": bad_id}).encode()

    fake.batch_tamper = renamed

    result = project.run("--batch-api", "batches")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "dispatcher stopped" not in out and "Traceback" not in out and "\x1b" not in out
    failure = result.failure("alpha.md::generate")
    assert "is not a Message Batch id" in failure
    assert [r.method for r in fake.requests] == ["POST"]  # no poll of a made-up path
    journal = json.loads((project.cassette_dir() / JOURNAL).read_text())
    assert [b["id"] for b in journal["batches"]] == [None]
    assert "\x1b" not in project.read("plan.md")


# -- 5. an error's text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, status, says",
    [
        pytest.param("retrieve", 529, "polling batch msgbatch_", id="poll"),
        pytest.param("results", 500, "reading the results of batch msgbatch_", id="results"),
        pytest.param("create", 400, "creating the Message Batch failed", id="create"),
    ],
)
def test_an_error_answer_reaches_the_terminal_and_the_plan_escaped(project, fake, kind, status, says):
    """An error body's message went into the row's error as it came: its escape sequence reached
    the terminal (and a NUL the plan's notes), unlike the messages path's errors."""
    project.write_rows(rows_for("alpha"), ini_extra=BATCH_INI)
    message = "\x1b[31mbusy\x00\x07"
    body = {"type": "error", "error": {"type": "overloaded_error", "message": message}}

    def failing(k: str, batch: Batch, answer: Answer) -> Answer:
        if k != kind:
            return answer
        return status, {"content-type": "application/json", "retry-after": "0.01"}, json.dumps(body).encode()

    fake.batch_tamper = failing

    result = project.run("--batch-api", "batches")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    failure = result.failure("alpha.md::generate")
    assert says in failure and "\\x1b[31mbusy\\x00\\x07" in failure
    for raw in ("\x1b", "\x00", "\x07"):
        assert raw not in out and raw not in failure
        assert raw not in project.read("plan.md")


# -- 6. a retry-after of days ----------------------------------------------------------------------

#: a project conftest that makes the cap on a retry-after 1 s, not a minute (as in test_pacing)
SHORT_RETRY_AFTER_CAP = """
from pytest_batchgen import pacing
pacing.RETRY_AFTER_CAP = 1.0
"""


def test_a_poll_refused_with_a_retry_after_of_days_waits_only_the_cap(project, fake, forks):
    """The batch client's SDK slept for whatever a 429's ``retry-after`` asked (999999 s: the
    run hung, polling nothing, until Ctrl-C); the messages path holds it to the pacer's cap, and
    so does the batch client now. (Run in a process of its own: a run that stalls is killed.)"""
    project.write_rows(rows_for("alpha"), ini_extra=BATCH_INI)
    project.write("conftest.py", SHORT_RETRY_AFTER_CAP)
    refused = {"n": 0}

    def once(kind: str, batch: Batch, answer: Answer) -> Answer:
        if kind != "retrieve" or refused["n"]:
            return answer
        refused["n"] += 1
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
        return 429, {"content-type": "application/json", "retry-after": "999999"}, json.dumps(body).encode()

    fake.batch_tamper = once
    project.forks = forks

    run = project.start("--batch-plan", project.plan, "--batch-api", "batches")
    try:
        ret = run.wait(timeout=120)
    except (TimeoutError, subprocess.TimeoutExpired):
        run.kill()
        pytest.fail("the run was still waiting after 120 s on a retry-after of 999999 s")
    out = run.communicate()[0]

    assert ret == 0, out
    assert refused["n"] == 1
    assert project.statuses() == {"alpha.md": "complete"}


# -- a results_url that is no URL (review round) ----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:notaport/results", id="port-not-a-number"),
        pytest.param("http://127.0.0.1:99999/results", id="port-out-of-range"),
        pytest.param("http://[::1/results", id="bad-ipv6-host"),
    ],
)
def test_a_results_url_that_urllib_cannot_split_is_read_at_the_api_path(project, fake, url):
    """``urlsplit(...).port`` raised ``ValueError`` out of the results reader: the dispatcher
    stopped and every pending row failed. A URL that cannot be read is no URL on the API's host:
    the results are read at the API's own path, as for a URL elsewhere."""
    project.write_rows(rows_for("alpha", "beta"), ini_extra=BATCH_INI)
    fake.batch_tamper = polls(lambda batch: {**batch, "results_url": batch["results_url"] and url})

    result = project.run("--batch-api", "batches")

    out = text_of(result)
    assert result.ret == 0, out
    assert "dispatcher stopped" not in out and "Traceback" not in out
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete"}
    assert journal_rows(project) == []


def test_a_results_stream_whose_encoding_cannot_be_decoded_is_a_failed_read(project, fake):
    """A results stream saying ``Content-Encoding: gzip`` over bytes that are not gzip raised
    httpx's ``DecodingError`` while it was read (no ``TransportError``, nor an SDK error: the
    stream is read after the SDK returned it), and the dispatcher stopped with every pending row
    of every plan. It is a failed read like a broken stream: the batch stays in the journal."""
    project.write_rows(rows_for("alpha", "beta"), ini_extra=BATCH_INI)

    def garbled(kind: str, batch: Batch, answer: Answer) -> Answer:
        if kind != "results":
            return answer
        status, headers, _ = answer
        return status, {**headers, "content-encoding": "gzip"}, b"this is not gzip\n" * 4

    fake.batch_tamper = garbled

    result = project.run("--batch-api", "batches")

    out = text_of(result)
    assert "dispatcher stopped" not in out and "Traceback" not in out
    assert "failed 5 times" in out
    assert journal_rows(project) == ["alpha.md", "beta.md"]  # kept for a rerun to collect
    fake.batch_tamper = None
    again = project.run("--batch-api", "batches")
    assert again.ret == 0, text_of(again)
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete"}
    assert len(fake.batches) == 1  # collected, not sent again
