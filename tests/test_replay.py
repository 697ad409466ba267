"""Recording and replay (issue #5, PRODUCT.md sections 7 and 10), end to end.

A run with a key records every reply into one vcrpy cassette per row, beside the plan
(``cassettes/plan/<filename>.yaml``). These tests record against the loopback
:class:`~fakeapi.FakeAnthropic`, then replay with the server stopped, no key and every socket
connection of the process refused, and compare what the two runs left behind.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from genhelpers import (
    API_KEY,
    AUTH_TOKEN,
    FAST_RETRY,
    PlanRow,
    Reply,
    bad_value,
    draft,
    fenced,
    given_a_check_that_reports_the_credentials,
    go_offline,
    requests_by_row,
    router,
    row_of,
    rows_for,
)
from harness import Project
from pytest_batchgen.planedit import read_notes


def notes_of(plan: bytes) -> dict[str, str]:
    return read_notes(plan.decode("utf-8"))


RECORDED = ["passes", "repaired", "fenced", "rate-limited", "stays-wrong", "down", "sonnet-row"]


def recorded_rows() -> list[PlanRow]:
    return rows_for(*RECORDED[:-1]) + rows_for(RECORDED[-1], model="sonnet")


def script_recorded(fake) -> None:
    r = router(fake)
    r.set("repaired.md", Reply.ok(bad_value("Repaired")), Reply.ok(draft("Repaired")))
    r.set("fenced.md", Reply.ok(fenced(draft("Fenced"))))
    r.set("rate-limited.md", Reply.rate_limited(retry_after=FAST_RETRY), Reply.ok(draft("Rate Limited")))
    r.set("stays-wrong.md", Reply.ok(bad_value("Stays Wrong")))
    r.set("down.md", Reply.error(500, message="the backend is down", retry_after=FAST_RETRY))


# -- replay reproduces the recorded run, offline ------------------------------------------------


def test_replay_offline_without_a_key_reproduces_the_recorded_run(project, fake, monkeypatch):
    # given: a run recorded with a key, each row ending another way
    rows = recorded_rows()
    project.write_rows(rows)
    script_recorded(fake)
    recorded = project.run()
    assert recorded.ret == pytest.ExitCode.TESTS_FAILED  # stays-wrong and down fail
    recorded_plan = (project.path / "plan.md").read_bytes()
    recorded_outputs = project.outputs()
    recorded_statuses = project.statuses()
    assert recorded_statuses == {f"{n}.md": "pending" if n in ("stays-wrong", "down") else "complete" for n in RECORDED}
    # a row whose API failed for good has nothing recorded: errors are never replayed
    assert sorted(project.cassettes()) == sorted(f"{n}.md.yaml" for n in RECORDED if n != "down")
    sent = len(fake.messages_requests())
    assert sent == 11  # passes 1, repaired 2, fenced 1, rate-limited 2, stays-wrong 2, down 2, sonnet 1

    # and the project put back as it was before that run, with no server, no key and no network
    attempts = go_offline(fake, monkeypatch)
    project.reset(rows)
    assert project.outputs() == {} and set(project.statuses().values()) == {"pending"}

    # when
    replayed = project.run("--batch-record-mode", "none")

    # then: nothing was sent, and the run left what the recorded run left
    assert attempts == []
    assert len(fake.messages_requests()) == sent
    assert replayed.ret == recorded.ret
    assert project.outputs() == recorded_outputs
    assert project.statuses() == recorded_statuses
    # but for the row whose API failed: it had nothing to record, and says so now
    replayed_notes, recorded_notes = project.notes(), notes_of(recorded_plan)
    assert replayed_notes.pop("down.md") != recorded_notes.pop("down.md")
    assert replayed_notes == recorded_notes
    assert replayed.outcomes() == recorded.outcomes()
    assert "the backend is down" in recorded.failure("down.md::generate")
    assert "no recording for this row" in replayed.failure("down.md::generate")


def test_the_key_reaches_no_file(project, fake):
    project.write_rows(recorded_rows())
    script_recorded(fake)

    result = project.run()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert all(e.api_key == API_KEY for e in fake.messages_requests())  # it was sent...
    files = project.snapshot()
    assert any(name.startswith("cassettes/") for name in files)
    leaks = [name for name, data in files.items() if API_KEY.encode() in data or b"TEST-KEY" in data]
    assert leaks == []  # ...and written nowhere
    for name in project.cassettes():
        text = (project.cassette_dir() / name).read_text(encoding="utf-8").lower()
        assert "authorization" not in text and "x-api-key" not in text


@pytest.mark.parametrize("credential", ["key", "auth-token"])
def test_a_credential_echoed_by_the_server_is_redacted_alike_in_the_output_and_its_recording(
    project, fake, monkeypatch, credential
):
    """A server or gateway that echoes the credential back, in a header's value or in the reply's
    text: the recording kept the header's value as it was (only header names were filtered),
    and the output held the credential where its recording had <redacted>, so a replay wrote
    another output than the live run."""
    secret = API_KEY
    if credential == "auth-token":  # (beside the key, which a run needs to call the API)
        monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", secret := AUTH_TOKEN)
    rows = rows_for("quorum")
    project.write_rows(rows)
    echoed = Reply.ok(draft("Quorum", extra=f"Echo: Bearer {secret}\n"), headers={"x-echo": f"Bearer {secret}"})
    router(fake).set("quorum.md", echoed)

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    live = project.output("quorum.md")
    assert "Echo: Bearer <redacted>" in live
    assert "- Bearer <redacted>" in project.cassette("quorum.md").read_text(encoding="utf-8")
    assert [name for name, data in project.snapshot().items() if secret.encode() in data] == []
    # and a replay of that recording writes the output the live run wrote
    fake.stop()
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    project.reset(rows)
    replayed = project.run("--batch-record-mode", "none")
    assert replayed.ret == 0, replayed.stdout.str()
    assert project.output("quorum.md") == live


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compressed_reply_is_recorded_decoded_and_a_key_echoed_in_it_is_redacted(project, fake, monkeypatch, coding):
    """A gateway or proxy that compresses (the SDK accepts ``gzip, deflate``): the recorder
    looked at the compressed bytes, so the reply was used (the row complete) but not recorded
    ("freshness: 1 unrecorded", paid again by the next run), and a key it echoed reached the
    output. It is recorded decoded, as vcrpy's ``decode_compressed_response`` records it: no
    ``content-encoding``, the body's own length."""
    rows = rows_for("quorum")
    project.write_rows(rows)
    echoed = Reply.ok(draft("Quorum", extra=f"Echo: Bearer {API_KEY}\n"), content_encoding=coding)
    router(fake).set("quorum.md", echoed)

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    (sent,) = fake.messages_requests()
    assert sent.response_headers is not None and sent.response_headers["content-encoding"] == coding
    live = project.output("quorum.md")
    assert "Echo: Bearer <redacted>" in live
    (interaction,) = project.interactions("quorum.md")
    response = interaction["response"]
    assert "content-encoding" not in response["headers"]
    body = response["body"]["string"]
    assert json.loads(body)["content"][0]["text"] == live
    assert response["headers"]["content-length"] == [str(len(body.encode("utf-8")))]
    assert [name for name, data in project.snapshot().items() if API_KEY.encode() in data] == []
    result.stdout.no_fnmatch_line("*unrecorded*")
    # and a replay of that recording writes the output the live run wrote
    fake.stop()
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    project.reset(rows)
    replayed = project.run("--batch-record-mode", "none")
    assert replayed.ret == 0, replayed.stdout.str()
    assert project.output("quorum.md") == live


def test_a_body_that_does_not_decode_fails_its_row_and_is_not_recorded(project, fake):
    """A reply that says ``content-encoding: gzip`` and is not: left to httpx2, which fails on
    it, as it did before the recorder decoded compressed replies; nothing is recorded."""
    project.write_rows(rows_for("quorum"))
    router(fake).set("quorum.md", Reply.raw(b"this is not gzip at all", headers={"content-encoding": "gzip"}))

    result = project.run()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "DecodingError" in result.failure("quorum.md::generate")
    assert not project.cassette("quorum.md").exists()


KEY_IN_A_FORM = """\
import os
from pytest_batchgen import ChecklistForm
def pytest_batchgen_checklist_forms():
    def env_check(ctx):  # a check that reports the environment it ran in
        return "env: ANTHROPIC_API_KEY=" + os.environ.get("ANTHROPIC_API_KEY", "")
    return [ChecklistForm(name="env", pattern=r"env check", check=env_check)]
"""

KEY_IN_A_TEST = """\
import os
def test_env(batch_output):
    assert not batch_output.text, "env: " + os.environ["ANTHROPIC_API_KEY"]
"""


def test_a_failure_message_holding_the_key_reaches_no_file(project, fake, monkeypatch):
    # a check of yours (or a custom test) may say anything: its message goes into the plan's
    # notes, the JSON report, the step summary and the CI annotations, but the key may not
    project.write_rows(rows_for("quorum"), ini_extra="batchgen_checks = checks/test_env.py\n")
    project.write("conftest.py", KEY_IN_A_FORM)
    project.write("checks/test_env.py", KEY_IN_A_TEST)
    project.edit("plan.md", "## Phase 1", "5. Env check\n\n## Phase 1")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.path / "step.md"))

    result = project.run("--batch-report", "report.json", "--batch-summary", "summary.md")

    outcomes = result.outcomes()
    assert outcomes["quorum.md::env"] == "failed" and outcomes["test_env[quorum.md]"] == "failed"
    files = project.snapshot()
    assert {"report.json", "summary.md", "step.md"} <= set(files)
    assert [name for name, data in files.items() if API_KEY.encode() in data] == []
    note = project.notes()["quorum.md"]
    assert "env: ANTHROPIC_API_KEY=<redacted>" in note and "AssertionError: env: <redacted>" in note
    annotations = [line for line in result.stdout.lines if line.startswith("::error")]
    assert any("<redacted>" in line for line in annotations)
    assert not any(API_KEY in line for line in annotations)


def test_a_failure_message_holding_the_key_reaches_no_repair_turn(project, fake, monkeypatch):
    # the repair turn quotes each failing check, and it is sent to the API: a cassette scrubbed
    # afterwards does not take the key back out of the request the model received
    given_a_check_that_reports_the_credentials(project, monkeypatch)

    result = project.run()

    assert result.outcomes()["quorum.md::env"] == "failed"
    bodies = [e.raw for e in fake.messages_requests()]
    assert len(bodies) == 2  # the draft and its repair
    assert [b for b in bodies if API_KEY.encode() in b or AUTH_TOKEN.encode() in b] == []
    repair = fake.messages_requests()[1].body["messages"][-1]["content"]
    assert "env: ANTHROPIC_API_KEY=<redacted> ANTHROPIC_AUTH_TOKEN=<redacted>" in repair


def test_no_cassette_holds_the_auth_token(project, fake, monkeypatch):
    # the cassettes were scrubbed of ANTHROPIC_API_KEY only: a reply quoting the token (or a
    # request that carried it) kept ANTHROPIC_AUTH_TOKEN in a file meant for the repository
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", AUTH_TOKEN)
    project.write_rows(rows_for("quorum"))
    router(fake).set("quorum.md", Reply.ok(draft("Quorum", extra=f"Token: {AUTH_TOKEN}\n")))

    result = project.run()

    assert result.ret == 0, result.stdout.str()

    text = project.cassette("quorum.md").read_text(encoding="utf-8")
    assert "Token: " in text and AUTH_TOKEN not in text


def test_a_cassette_records_what_the_request_said_not_which_machine_sent_it(project, fake):
    # the SDK sends ~17 headers; those describing the client (user agent, x-stainless-* with the
    # OS, architecture and versions, host and port, transport details) would make every
    # re-record on another machine a diff, and replay matches on method, path and body
    project.write_rows(rows_for("quorum"))

    assert project.run().ret == 0

    sent = fake.messages_requests()[0].headers
    # sent, but not recorded (the client asks for the raw reply: the SDK says so in a header too)
    assert {"x-stainless-os", "user-agent", "x-stainless-raw-response"} <= set(sent)
    (interaction,) = project.interactions("quorum.md")
    assert sorted(interaction["request"]["headers"]) == ["anthropic-version", "content-type"]
    assert interaction["request"]["headers"]["anthropic-version"] == [sent["anthropic-version"]]
    # and it replays
    project.reset(rows_for("quorum"))
    assert project.run("--batch-record-mode", "none").ret == 0
    assert len(fake.messages_requests()) == 1


# -- misses ---------------------------------------------------------------------------------


def change_reference(project: Project) -> None:
    project.edit("output/reference.md", "safely retry", "retry")


def change_content_rules(project: Project) -> None:
    project.edit("plan.md", "- category must be one of", "- Keep it short\n- category must be one of")


def change_title(project: Project) -> None:
    project.edit("plan.md", "| Quorum |", "| Quorum Systems |")


def change_model(project: Project) -> None:
    project.edit("plan.md", "| quorum.md | haiku |", "| quorum.md | opus |")


def drop_cassette(project: Project) -> None:
    project.cassette("quorum.md").unlink()


@pytest.mark.parametrize(
    ("change", "what"),
    [
        pytest.param(change_reference, "the format reference changed", id="format-reference"),
        pytest.param(change_content_rules, "the content rules changed", id="content-rules"),
        pytest.param(change_title, "the title changed", id="title"),
        pytest.param(change_model, "the model changed", id="model"),
        pytest.param(drop_cassette, "no recording for this row", id="no-cassette"),
    ],
)
def test_a_changed_prompt_misses_in_none_mode_naming_what_changed(project, fake, monkeypatch, change, what):
    rows = rows_for("quorum")
    project.write_rows(rows)
    assert project.run().ret == 0
    attempts = go_offline(fake, monkeypatch)
    project.reset(rows)
    change(project)

    result = project.run("--batch-record-mode", "none")

    assert attempts == []  # a miss never calls the network
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.outcomes()["quorum.md::generate"] == "failed"
    message = result.failure("quorum.md::generate")
    assert what in message
    assert "--batch-record-mode all 'plan.md::quorum.md'" in message
    assert "pytest --batch-plan plan.md" in message
    assert not (project.path / "output" / "quorum.md").exists()
    assert project.statuses() == {"quorum.md": "pending"}
    assert what in project.notes()["quorum.md"]


def test_the_printed_rerecord_command_runs_as_printed_from_a_subfolder(project, fake, monkeypatch):
    # pytest reads a node id on the command line from the current folder: the command printed
    # from a subfolder named the plan from the rootdir, and run as printed it failed with
    # "file or directory not found: plan.md::quorum.md"
    import shlex

    rows = rows_for("quorum")
    project.write_rows(rows)
    (project.path / "docs").mkdir()
    monkeypatch.chdir(project.path / "docs")
    monkeypatch.delenv("ANTHROPIC_API_KEY")  # no key: this run may not record, and says how to

    missed = project.pytest("--batch-plan", "../plan.md", "--batch-record-mode", "none")

    message = missed.failure("quorum.md::generate")
    command = message[message.index("pytest --batch-plan") :].splitlines()[0]
    assert command == "pytest --batch-plan ../plan.md --batch-record-mode all '../plan.md::quorum.md'"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    again = project.pytest(*shlex.split(command)[1:])
    assert again.ret == 0, again.stdout.str() + again.stderr.str()
    assert project.statuses() == {"quorum.md": "complete"}


def test_a_changed_format_reference_replays_for_no_row(project, fake, monkeypatch):
    rows = rows_for("quorum", "backpressure", "fencing-token")
    project.write_rows(rows)
    assert project.run().ret == 0
    before = project.cassettes()
    attempts = go_offline(fake, monkeypatch)
    project.reset(rows)
    change_reference(project)

    result = project.run("--batch-record-mode", "none")

    assert attempts == []
    assert {result.outcomes()[f"{r.filename}::generate"] for r in rows} == {"failed"}
    for row in rows:
        message = result.failure(f"{row.filename}::generate")
        assert "format reference" in message and f"'plan.md::{row.filename}'" in message
    assert project.cassettes() == before  # none mode writes no cassette
    assert project.outputs() == {}


# -- record modes ---------------------------------------------------------------------------


def test_an_auth_token_without_a_key_generates_by_default(project, fake, monkeypatch):
    # the SDK authenticates with ANTHROPIC_AUTH_TOKEN when there is no key, but the default
    # record mode looked at the key alone: the run was 'none' and every row failed as a miss
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "sk-ant-token-for-this-test")
    project.write_rows(rows_for("quorum"))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    assert [row_of(e) for e in fake.messages_requests()] == ["quorum.md"]
    assert project.statuses() == {"quorum.md": "complete"}
    assert b"sk-ant-token-for-this-test" not in b"".join(project.cassettes().values())


def test_new_episodes_records_only_the_rows_without_a_recording(project, fake, monkeypatch):
    first = rows_for("quorum", "backpressure")
    project.write_rows(first)
    router(fake).set("backpressure.md", Reply.ok(bad_value("Backpressure")), Reply.ok(draft("Backpressure")))
    assert project.run().ret == 0
    before = project.cassettes()
    fake.reset_log()

    # a new row, and the old rows to generate again (their outputs are gone)
    rows = first + rows_for("fencing-token")
    project.reset(rows)
    result = project.run()  # key set, CI unset: the default mode is new_episodes

    assert result.ret == 0, result.stdout.str()
    assert list(requests_by_row(fake)) == ["fencing-token.md"]
    assert set(project.statuses().values()) == {"complete"}
    after = project.cassettes()
    assert {k: after[k] for k in before} == before
    assert [row_of(b) for b in project.cassette_bodies("fencing-token.md")] == ["fencing-token.md"]
    assert project.output("backpressure.md") == draft("Backpressure")

    # in CI the default is none: a row without a recording fails and nothing is sent
    fake.reset_log()
    monkeypatch.setenv("CI", "true")
    rows = rows + rows_for("vector-clock")
    project.reset(rows)
    result = project.run()
    assert fake.messages_requests() == []
    assert project.statuses()["vector-clock.md"] == "pending"
    assert project.statuses()["fencing-token.md"] == "complete"
    assert "no recording for this row" in result.failure("vector-clock.md::generate")


def test_rerecording_one_row_leaves_the_other_cassettes_byte_for_byte(project, fake):
    rows = rows_for("quorum", "backpressure", "fencing-token")
    project.write_rows(rows)
    router(fake).set("backpressure.md", Reply.ok(bad_value("Backpressure")), Reply.ok(draft("Backpressure")))
    assert project.run().ret == 0
    before = project.cassettes()
    assert len(project.cassette_bodies("backpressure.md")) == 2  # the draft and its repair

    fake.reset_log()
    router(fake).set("backpressure.md", Reply.ok(draft("Backpressure", category="C")))
    project.reset(rows)
    result = project.run("--batch-record-mode", "all", "-k", "backpressure.md")

    assert result.ret == 0, result.stdout.str()
    assert list(requests_by_row(fake)) == ["backpressure.md"]
    assert len(fake.messages_requests()) == 1
    after = project.cassettes()
    assert after["quorum.md.yaml"] == before["quorum.md.yaml"]
    assert after["fencing-token.md.yaml"] == before["fencing-token.md.yaml"]
    assert after["backpressure.md.yaml"] != before["backpressure.md.yaml"]
    # the stale interactions (the old draft and its repair) are gone; only the new one is left
    bodies = project.cassette_bodies("backpressure.md")
    assert len(bodies) == 1 and len(bodies[0]["messages"]) == 1
    text = project.cassette("backpressure.md").read_text(encoding="utf-8")
    assert "category: Z" not in text and "category: C" in text
    assert project.statuses() == {
        "quorum.md": "pending",  # not selected: not run, not recorded
        "backpressure.md": "complete",
        "fencing-token.md": "pending",
    }

    # and the whole plan still replays offline, with the re-recorded row's new reply
    fake.stop()
    project.reset(rows)
    result = project.run("--batch-record-mode", "none")
    assert result.ret == 0, result.stdout.str()
    new_output = project.output("backpressure.md")
    assert new_output == draft("Backpressure", category="C")


def test_once_mode_records_new_rows_and_never_extends_a_recording(project, fake):
    rows = rows_for("quorum")
    project.write_rows(rows)
    router(fake).set("quorum.md", Reply.ok(draft("Quorum")))
    assert project.run("--batch-record-mode", "once").ret == 0
    before = project.cassettes()
    fake.reset_log()

    # the recorded row's prompt changes: once mode may not add to an existing cassette
    rows = [PlanRow("Quorum Systems", "quorum.md")] + rows_for("backpressure")
    project.reset(rows)
    result = project.run("--batch-record-mode", "once")

    assert list(requests_by_row(fake)) == ["backpressure.md"]
    assert "the title changed" in result.failure("quorum.md::generate")
    assert project.cassettes()["quorum.md.yaml"] == before["quorum.md.yaml"]
    assert project.statuses() == {"quorum.md": "pending", "backpressure.md": "complete"}


@pytest.mark.parametrize("mode", ["once", "new_episodes"])
def test_recorded_rows_replay_without_a_key_in_every_mode_that_may_replay(project, fake, monkeypatch, mode):
    rows = rows_for("quorum")
    project.write_rows(rows)
    assert project.run().ret == 0
    attempts = go_offline(fake, monkeypatch)
    rows = rows + rows_for("backpressure")  # a row with no recording
    project.reset(rows)

    result = project.run("--batch-record-mode", mode)

    assert attempts == []
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "pending"}
    assert project.output("quorum.md") == draft("Quorum")
    # the row that needs a live call fails clearly, naming the missing key, and sends nothing
    message = result.failure("backpressure.md::generate")
    assert "ANTHROPIC_API_KEY" in message
    assert "TypeError" not in message
    assert not project.cassette("backpressure.md").exists()


# -- concurrency --------------------------------------------------------------------------------


def test_concurrent_rows_record_to_and_replay_from_their_own_cassettes(project, fake, monkeypatch):
    names = ["a-one", "b-two", "c-three", "d-four", "e-five", "f-six"]
    rows = rows_for(*names)
    project.write_rows(rows)
    for n, name in enumerate(names):
        title = name.replace("-", " ").title()
        # staggered, overlapping replies; every other row needs a repair
        first = Reply.ok(bad_value(title) if n % 2 else draft(title), delay=0.1 + 0.05 * (5 - n))
        router(fake).set(f"{name}.md", first, Reply.ok(draft(title), delay=0.05 * n))

    recorded = project.run("--batch-concurrency", "6")

    assert recorded.ret == 0, recorded.stdout.str()
    assert fake.max_in_flight == 6  # they did overlap
    recorded_outputs = project.outputs()
    for name in names:
        bodies = project.cassette_bodies(f"{name}.md")
        assert [row_of(b) for b in bodies] == [f"{name}.md"] * len(bodies)
        assert len(bodies) == (2 if names.index(name) % 2 else 1)
        text = project.cassette(f"{name}.md").read_text(encoding="utf-8")
        others = [n for n in names if n != name]
        assert not any(f"output/{o}.md" in text for o in others)

    attempts = go_offline(fake, monkeypatch)
    project.reset(rows)
    replayed = project.run("--batch-record-mode", "none", "--batch-concurrency", "6")

    assert attempts == []
    assert replayed.ret == 0, replayed.stdout.str()
    assert project.outputs() == recorded_outputs
    assert set(project.statuses().values()) == {"complete"}


# -- a crash ------------------------------------------------------------------------------------


def title_of(name: str) -> str:
    return name.replace("-", " ").title()


def test_kill_9_mid_run_then_rerun_pays_for_no_reply_twice(project, fake, forks):
    project.forks = forks  # the killed run is a process of its own, forked (see forkserver.py)
    # given: two rows answered at once and two whose replies take 30 s
    fast, slow = ["fast-one", "fast-two"], ["slow-one", "slow-two"]
    project.write_rows(rows_for(*fast, *slow))
    original_plan = (project.path / "plan.md").read_bytes()
    for name in slow:
        router(fake).set(f"{name}.md", Reply.ok(draft(title_of(name)), delay=30))

    # when: the run is killed once the fast replies are recorded and the slow ones are in flight
    returncode = run_and_kill_9(
        project,
        ready=lambda: all(project.cassette(f"{n}.md").exists() for n in fast) and fake.in_flight == len(slow),
    )

    # then: the plan is intact, every output is either absent or whole, only replies are recorded
    assert returncode == -signal.SIGKILL
    assert (project.path / "plan.md").read_bytes() == original_plan
    assert set(project.statuses().values()) == {"pending"}
    assert_whole_or_absent(project, fast, slow)
    assert {row_of(e) for e in fake.messages_requests()} == {f"{n}.md" for n in fast + slow}
    assert not any(project.cassette(f"{n}.md").exists() for n in slow)  # no reply, no recording
    for name in fast:
        assert [row_of(b) for b in project.cassette_bodies(f"{name}.md")] == [f"{name}.md"]

    # when it runs again, the slow rows answering at once now (and the second fast row's output
    # gone, so that it must come back from its cassette, not from a kept output)
    (project.path / "output" / "fast-two.md").unlink(missing_ok=True)
    fake.reset_log()
    for name in slow:
        router(fake).set(f"{name}.md", Reply.ok(draft(title_of(name))))
    result = project.run()

    # then: the fast rows' replies are not paid for again
    assert result.ret == 0, result.stdout.str()
    assert sorted(row_of(e) for e in fake.messages_requests()) == ["slow-one.md", "slow-two.md"]
    assert set(project.statuses().values()) == {"complete"}
    for name in fast + slow:
        assert project.output(f"{name}.md") == draft(title_of(name))


def run_and_kill_9(project: Project, ready: Callable[[], bool]) -> int:
    """Run pytest on the project's plan in a process of its own; SIGKILL it once ``ready()``
    holds (and the dispatcher had 0.1 s to write what it received). Returns its exit code."""
    proc = project.start("--batch-plan", project.plan, "-q", output=False)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ready():
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the fast rows' replies were never recorded")
        time.sleep(0.1)  # let the dispatcher write what it received
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    return proc.returncode


def assert_whole_or_absent(project: Project, fast: list[str], slow: list[str]) -> None:
    """After a crash: a fast row's output is absent or its whole draft, a slow row's is absent,
    and nothing else (no temporary file) is left in the output folder."""
    left = {p.name: p.read_text(encoding="utf-8") for p in (project.path / "output").iterdir()}
    for name in fast + slow:
        if f"{name}.md" in left:
            assert left[f"{name}.md"] == draft(title_of(name))
    assert not any(f"{n}.md" in left for n in slow)
    stray = [p.name for p in (project.path / "output").iterdir() if not p.name.startswith(".")]
    assert set(stray) <= {"reference.md", "fast-one.md", "fast-two.md"}


def test_rerecording_a_complete_row_keeps_its_passing_output_until_a_new_draft_passes(project, fake):
    rows = rows_for("quorum", "backpressure")
    project.write_rows(rows)
    assert project.run().ret == 0
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}
    good = project.output("quorum.md")

    # a re-record whose every draft fails: the passing output is not replaced
    fake.reset_log()
    router(fake).set("quorum.md", Reply.ok(bad_value("Quorum")))
    result = project.run("--batch-record-mode", "all", "plan.md::quorum.md")
    assert list(requests_by_row(fake)) == ["quorum.md"]
    assert project.output("quorum.md") == good
    kept_draft = project.path / "output" / ".batchgen-drafts" / "quorum.md"
    assert kept_draft.read_text(encoding="utf-8") == bad_value("Quorum")
    assert result.ret == 0  # the output that is checked still passes
    assert project.statuses()["quorum.md"] == "complete"

    # a re-record whose draft passes replaces the output, and the draft folder is cleaned up
    router(fake).set("quorum.md", Reply.ok(draft("Quorum", category="B")))
    result = project.run("--batch-record-mode", "all", "plan.md::quorum.md")
    assert result.ret == 0, result.stdout.str()
    assert project.output("quorum.md") == draft("Quorum", category="B")
    assert not (project.path / "output" / ".batchgen-drafts").exists()
    assert "category: B" in project.cassette("quorum.md").read_text(encoding="utf-8")


def test_a_transient_error_is_not_recorded_so_the_next_run_tries_again(project, fake):
    project.write_rows(rows_for("flaky"))
    router(fake).set("flaky.md", Reply.overloaded(retry_after=FAST_RETRY))
    first = project.run()
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    assert not project.cassette("flaky.md").exists()  # nothing but errors came back

    fake.reset_log()
    router(fake).set("flaky.md", Reply.ok(draft("Flaky")))
    second = project.run()
    assert second.ret == 0, second.stdout.str()
    assert len(fake.messages_requests()) == 1  # sent again, not replayed from a recorded 529
    assert project.statuses() == {"flaky.md": "complete"}
