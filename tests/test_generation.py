"""Generation (issue #4, PRODUCT.md sections 5, 6 and 10), end to end through pytester.

Every run here is a real pytest session in-process: the plugin dispatches the pending rows
through the real anthropic SDK to a loopback :class:`~fakeapi.FakeAnthropic`, checks each draft
with the compiled checklist, repairs, and records statuses and notes in the plan. Assertions
are on what a user sees: the plan's statuses and notes, the output files, the exit code, the
items' outcomes, and what the server received.
"""

from __future__ import annotations

import time

import pytest

from fakeapi import Logged
from genhelpers import (
    API_KEY,
    CONTENT_RULES,
    FAST_RETRY,
    FORMAT_REFERENCE,
    REFERENCE_MARKER,
    RULE_NAMES,
    PlanRow,
    Reply,
    bad_value,
    draft,
    fenced,
    few_tags,
    lint_bad,
    missing_section,
    requests_by_row,
    router,
    row_of,
    rows_for,
    rows_plan_text,
)
from harness import Project, Run
# -- rows that pass; what every prompt holds ----------------------------------------------------


def test_passing_rows_become_complete_and_every_prompt_holds_its_parts(project, fake):
    # given: a complete row (the format reference itself) and pending rows of two models
    rows = [
        PlanRow("Reference", "reference.md", "haiku", "complete"),
        *rows_for("quorum", "backpressure"),
        *rows_for("cap-theorem", "lamport-clock", model="sonnet"),
    ]
    project.write_rows(rows, ini_extra="batchgen_max_tokens = 1234\n")

    # when
    result = project.run()

    # then: every row is complete with its draft, the complete row was validated and never sent
    assert result.ret == 0, result.stdout.str()
    assert project.statuses() == {
        "reference.md": "complete",
        "quorum.md": "complete",
        "backpressure.md": "complete",
        "cap-theorem.md": "complete",
        "lamport-clock.md": "complete",
    }
    assert project.notes() == {}
    for row in rows[1:]:
        assert project.output(row.filename) == draft(row.title)
    assert project.output("reference.md") == FORMAT_REFERENCE
    outcomes = result.outcomes()
    assert outcomes["quorum.md::generate"] == "passed"
    assert "reference.md::generate" not in outcomes
    assert {outcomes[f"cap-theorem.md::{name}"] for name in RULE_NAMES} == {"passed"}
    # and each pending row was sent once, with the shared prefix and its own part
    by_row = requests_by_row(fake)
    assert sorted(by_row) == ["backpressure.md", "cap-theorem.md", "lamport-clock.md", "quorum.md"]
    assert all(len(reqs) == 1 for reqs in by_row.values())
    by_name = {r.filename: r for r in rows}
    systems = {filename: assert_prompt_parts(entry, by_name[filename]) for filename, (entry,) in by_row.items()}
    assert_one_prefix_per_model(by_row, systems)


def assert_prompt_parts(entry: Logged, row: PlanRow) -> str:
    """One request holds the model, max_tokens, the cached shared prefix and the row's own
    part, with the key; returns its system text."""
    body = entry.body
    # the model: a Haiku id for haiku rows, a Sonnet id for sonnet rows
    family = "haiku" if row.model == "haiku" else "sonnet"
    assert family in body["model"], (row.filename, body["model"])
    assert body["max_tokens"] == 1234
    # the shared prefix: one system text block, marked for caching
    assert len(body["system"]) == 1
    block = body["system"][0]
    assert block["type"] == "text"
    assert block["cache_control"] == {"type": "ephemeral"}
    system = block["text"]
    assert FORMAT_REFERENCE.rstrip() in system  # the reference's full text, not its path
    assert '<format_reference path="output/reference.md">' in system
    rules_block = system.split("<content_rules>", 1)[1].split("</content_rules>", 1)[0]
    for rule in CONTENT_RULES:
        assert rule in rules_block
    assert "code fence" in system  # the instruction to answer with the file only
    # the row-specific part: one user message with the title and the output path
    assert [m["role"] for m in body["messages"]] == ["user"]
    user = body["messages"][0]["content"]
    assert f"<title>{row.title}</title>" in user
    assert f"<output_path>output/{row.filename}</output_path>" in user
    assert row.title not in system and row.filename not in system
    assert entry.api_key == API_KEY
    return system


def assert_one_prefix_per_model(by_row: dict[str, list[Logged]], systems: dict[str, str]) -> None:
    """The prefix is byte-identical across the rows of a model (and here across models too:
    one plan, one prefix)."""
    prefixes: dict[str, set[str]] = {}
    for filename, (entry,) in by_row.items():
        prefixes.setdefault(entry.body["model"], set()).add(systems[filename])
    assert len(prefixes) == 2
    assert all(len(texts) == 1 for texts in prefixes.values())
    assert len(set().union(*prefixes.values())) == 1


def test_shared_prefix_is_written_to_the_cache_once_then_read(project, fake):
    # the fake caches the prefix up to each cache_control block, keyed by model and bytes: only
    # a byte-identical, marked prefix is read back (the usage is in the recorded replies)
    project.write_rows(rows_for("quorum", "backpressure", "fencing-token"))

    result = project.run("--batch-concurrency", "1")

    assert result.ret == 0, result.stdout.str()
    order = [row_of(e) for e in fake.messages_requests()]
    usage = {name: project.cassette_usage(name)[0] for name in order}
    first, *rest = order
    assert usage[first]["cache_creation_input_tokens"] > 0
    assert usage[first]["cache_read_input_tokens"] == 0
    for name in rest:
        assert usage[name]["cache_creation_input_tokens"] == 0
        assert usage[name]["cache_read_input_tokens"] == usage[first]["cache_creation_input_tokens"]


# -- every way a row can end, in one batch ------------------------------------------------------

MIXED = [
    "passes",
    "wrong-value",
    "missing-section",
    "few-tags",
    "lint-fails",
    "repaired",
    "fenced",
    "truncated",
    "refused",
    "rate-limited",
    "overloaded",
    "server-error",
    "down",
]


def script_mixed(fake) -> None:
    r = router(fake)
    title = {name: name.replace("-", " ").title() for name in MIXED}
    r.set("wrong-value.md", Reply.ok(bad_value(title["wrong-value"])))
    r.set("missing-section.md", Reply.ok(missing_section(title["missing-section"])))
    r.set("few-tags.md", Reply.ok(few_tags(title["few-tags"])))
    r.set("lint-fails.md", Reply.ok(lint_bad(title["lint-fails"])))
    r.set("repaired.md", Reply.ok(bad_value(title["repaired"])), Reply.ok(draft(title["repaired"])))
    r.set("fenced.md", Reply.ok(fenced(draft(title["fenced"]))))
    r.set("truncated.md", Reply.truncated(draft(title["truncated"])[:40]))
    r.set("refused.md", Reply.refused())
    r.set("rate-limited.md", Reply.rate_limited(retry_after=FAST_RETRY), Reply.ok(draft(title["rate-limited"])))
    r.set("overloaded.md", Reply.overloaded(retry_after=FAST_RETRY), Reply.ok(draft(title["overloaded"])))
    r.set("server-error.md", Reply.server_error(retry_after=FAST_RETRY), Reply.ok(draft(title["server-error"])))
    r.set("down.md", Reply.error(500, message="upstream exploded (code 4711)", retry_after=FAST_RETRY))


#: the rows of MIXED that end complete (a good draft at once, after a repair or after retries)
MIXED_COMPLETE = ("passes", "repaired", "fenced", "rate-limited", "overloaded", "server-error")


def test_mixed_batch_ends_with_exact_statuses_notes_and_a_failing_exit_code(project, fake):
    # given: one row for every way a row can end
    project.write_rows(rows_for(*MIXED))
    script_mixed(fake)
    before = project.read()

    # when
    result = project.run()

    # then
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert project.statuses() == {f"{name}.md": "complete" if name in MIXED_COMPLETE else "pending" for name in MIXED}
    assert_mixed_notes(project.notes())
    assert_mixed_items(result)
    assert_mixed_requests(fake)
    assert_mixed_outputs(project)
    # only statuses and the notes section changed in the plan
    after = project.read()
    assert after.split("## Batchgen Notes")[0].replace("| complete |", "| pending |").rstrip() == before.rstrip()


def assert_mixed_notes(found: dict[str, str]) -> None:
    """A note for each row that is not complete, naming what failed."""
    assert set(found) == {f"{name}.md" for name in MIXED if name not in MIXED_COMPLETE}

    # failing checks, even after the repair: each note names the check, where, and what it found
    assert found["wrong-value.md"] == (
        "1 check failed\n- category-value (plan line 16): output/wrong-value.md:3: "
        "category is 'Z', expected one of: A, B, C"
    )
    assert found["missing-section.md"] == (
        "1 check failed\n- sections (plan line 17): output/missing-section.md: "
        "missing section 'Related Terms' (level-2 headings found: 'Definition', 'Details')"
    )
    assert found["few-tags.md"] == (
        "1 check failed\n- front-matter (plan line 15): output/few-tags.md:4: "
        "front matter: tags has 1 non-blank item (['alpha']), expected at least 2"
    )
    assert found["lint-fails.md"].startswith(
        "1 check failed\n- lint (plan line 18): output/lint-fails.md:19: linter exited 1: "
    )
    # generation failures: the note's first entry is the generate item's, saying why
    generate = {name: found[f"{name}.md"].split("\n")[1] for name in ("truncated", "refused", "down")}
    assert generate["truncated"].startswith("- generate: truncated: the reply was cut off at max_tokens")
    assert generate["refused"] == "- generate: refused: the model refused to write this output"
    assert generate["down"] == (
        "- generate: error: InternalServerError: HTTP 500 api_error: upstream exploded (code 4711)"
    )


def assert_mixed_items(result: Run) -> None:
    """Every item of a complete row passed; each other row failed the item that says why."""
    result.assert_items(
        {f"{name}.md::{item}": "passed" for name in MIXED_COMPLETE for item in ("generate", *RULE_NAMES)}
    )
    result.assert_items(
        {f"{name}.md::generate": "passed" for name in ("wrong-value", "missing-section", "few-tags", "lint-fails")}
    )
    result.assert_items(
        {
            "wrong-value.md::category-value": "failed",
            "wrong-value.md::sections": "passed",
            "missing-section.md::sections": "failed",
            "few-tags.md::front-matter": "failed",
            "lint-fails.md::lint": "failed",
            "lint-fails.md::front-matter": "passed",
        }
    )
    result.assert_items({f"{name}.md::generate": "failed" for name in ("truncated", "refused", "down")})
    assert "truncated" in result.failure("truncated.md::generate")
    assert "refused" in result.failure("refused.md::generate")
    down = result.failure("down.md::generate")
    assert "InternalServerError" in down and "HTTP 500" in down and "upstream exploded (code 4711)" in down


def assert_mixed_requests(fake) -> None:
    """The server's side: a repair for every failed draft, the SDK's retries for 429/529/500."""
    counts = {name: len(reqs) for name, reqs in requests_by_row(fake).items()}
    assert counts == {
        "passes.md": 1,
        "wrong-value.md": 2,
        "missing-section.md": 2,
        "few-tags.md": 2,
        "lint-fails.md": 2,
        "repaired.md": 2,
        "fenced.md": 1,
        "truncated.md": 1,  # a truncated reply is not repaired
        "refused.md": 1,
        "rate-limited.md": 2,
        "overloaded.md": 2,
        "server-error.md": 2,
        "down.md": 2,  # the first try and batchgen_max_retries = 1 retry
    }
    statuses_seen = {
        name: [e.status for e in reqs]
        for name, reqs in requests_by_row(fake).items()
        if name in ("rate-limited.md", "overloaded.md", "server-error.md", "down.md")
    }
    assert statuses_seen == {
        "rate-limited.md": [429, 200],
        "overloaded.md": [529, 200],
        "server-error.md": [500, 200],
        "down.md": [500, 500],
    }


def assert_mixed_outputs(project: Project) -> None:
    """The outputs: unwrapped, readable failed drafts, nothing for a refusal or a dead API."""
    assert project.output("fenced.md") == draft("Fenced")
    assert project.output("repaired.md") == draft("Repaired")
    assert project.output("wrong-value.md") == bad_value("Wrong Value")
    # a cut-off reply's partial draft waits in the drafts folder: it is no output
    assert project.output(".batchgen-drafts/truncated.md") == draft("Truncated")[:40] + "\n"
    assert not (project.path / "output" / "truncated.md").exists()
    assert not (project.path / "output" / "refused.md").exists()
    assert not (project.path / "output" / "down.md").exists()


def test_fail_for_good_does_not_stop_the_others(project, fake):
    rows = rows_for("down", "slow-a", "slow-b", "slow-c")
    project.write_rows(rows, max_retries=2)
    router(fake).set("down.md", Reply.error(503, "api_error", "service unavailable right now", retry_after=FAST_RETRY))
    for name in ("slow-a", "slow-b", "slow-c"):
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title()), delay=0.2))

    result = project.run("--batch-concurrency", "2")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert project.statuses() == {
        "down.md": "pending",
        "slow-a.md": "complete",
        "slow-b.md": "complete",
        "slow-c.md": "complete",
    }
    by_row = requests_by_row(fake)
    assert [e.status for e in by_row["down.md"]] == [503, 503, 503]  # 1 + batchgen_max_retries
    report = result.failure("down.md::generate")
    assert "ServiceUnavailableError" in report and "HTTP 503" in report
    assert "service unavailable right now" in report
    assert list(project.notes()) == ["down.md"]


# -- repair ---------------------------------------------------------------------------------


def test_repair_continues_the_conversation_with_the_draft_and_the_failures(project, fake):
    project.write_rows(rows_for("quorum", "fencing-token"))
    first = bad_value("Quorum")
    two_problems = draft("Fencing Token", tags="[alpha]", sections=("Definition", "Details"))
    router(fake).set("quorum.md", Reply.ok(first), Reply.ok(draft("Quorum")))
    router(fake).set("fencing-token.md", Reply.ok(two_problems), Reply.ok(draft("Fencing Token")))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    assert project.statuses() == {"quorum.md": "complete", "fencing-token.md": "complete"}
    by_row = requests_by_row(fake)
    ask, repair = by_row["quorum.md"]
    # same system prefix, same first user turn, then the draft and the failures
    assert repair.body["system"] == ask.body["system"]
    assert repair.body["model"] == ask.body["model"]
    assert repair.body["messages"][0] == ask.body["messages"][0]
    assert [m["role"] for m in repair.body["messages"]] == ["user", "assistant", "user"]
    assert repair.body["messages"][1]["content"].strip() == first.strip()
    turn = repair.body["messages"][2]["content"]
    assert "category is one of the three values listed in Content Rules" in turn  # the check
    assert "category is 'Z', expected one of: A, B, C" in turn  # the value found and the allowed ones
    assert "sections present" not in turn and "Linter passes" not in turn  # only the failing checks
    # two failing checks: both listed, each with its own message
    turn = by_row["fencing-token.md"][1].body["messages"][2]["content"]
    assert "missing section 'Related Terms'" in turn
    assert "tags has 1 non-blank item" in turn
    assert by_row["fencing-token.md"][1].body["messages"][1]["content"].strip() == two_problems.strip()


def test_a_linter_failure_is_repaired_with_the_linter_s_output(project, fake):
    # "linter exited 1" alone does not tell the model what to fix; its output does
    project.write_rows(rows_for("quorum"))
    router(fake).set("quorum.md", Reply.ok(lint_bad("Quorum")), Reply.ok(draft("Quorum")))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    ask, repair = fake.messages_requests()
    turn = repair.body["messages"][2]["content"]
    assert "Linter passes" in turn and "linter exited 1" in turn
    assert "output/quorum.md:19: X001 forbidden marker LINT-BAD" in turn
    assert project.statuses() == {"quorum.md": "complete"}


@pytest.mark.parametrize("attempts", [1, 3])
def test_max_attempts_bounds_the_requests_of_a_row_that_keeps_failing(project, fake, attempts):
    project.write_rows(rows_for("quorum"))
    router(fake).set("quorum.md", Reply.ok(bad_value("Quorum")))

    result = project.run("--batch-max-attempts", str(attempts))

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    requests = fake.messages_requests()
    assert len(requests) == attempts
    # each repair continues the same conversation: user, (assistant, user) per earlier attempt
    assert [len(e.body["messages"]) for e in requests] == [1 + 2 * n for n in range(attempts)]
    assert project.statuses() == {"quorum.md": "pending"}
    assert "category is 'Z'" in project.notes()["quorum.md"]


def test_api_errors_are_never_pasted_into_a_repair(project, fake):
    project.write_rows(rows_for("quorum"))
    secret_error = "database shard 7 on fire, request req_SHOULD_NOT_LEAK"
    router(fake).set(
        "quorum.md",
        Reply.error(500, message=secret_error, retry_after=FAST_RETRY),
        Reply.ok(bad_value("Quorum")),
        Reply.ok(draft("Quorum")),
    )

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    first, retry, repair = fake.messages_requests()
    assert first.status == 500 and retry.status == 200 and repair.status == 200
    assert retry.raw == first.raw  # the SDK's retry resends the same request
    assert len(repair.body["messages"]) == 3
    sent = repair.raw.decode("utf-8")
    for leak in ("shard 7", "SHOULD_NOT_LEAK", "api_error", "InternalServerError", "HTTP 500"):
        assert leak not in sent
    assert "category is 'Z'" in repair.body["messages"][2]["content"]
    assert project.statuses() == {"quorum.md": "complete"}


# -- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda t: fenced(t, "markdown"), id="markdown"),
        pytest.param(lambda t: fenced(t, ""), id="bare"),
        pytest.param(lambda t: "\n" + fenced(t, "md") + "\n\n", id="padded"),
        pytest.param(lambda t: "~~~markdown\n" + t + "~~~", id="tildes"),
    ],
)
def test_a_reply_fenced_whole_is_unwrapped(project, fake, wrap):
    project.write_rows(rows_for("quorum"))
    router(fake).set("quorum.md", Reply.ok(wrap(draft("Quorum"))))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    assert project.output("quorum.md") == draft("Quorum")
    assert len(fake.messages_requests()) == 1  # passed at once: no repair was needed


def test_a_reply_with_an_inner_fence_is_kept_as_it_is(project, fake):
    project.write_rows(rows_for("quorum"))
    text = draft("Quorum", extra="```python\nprint(1)\n```\n")
    router(fake).set("quorum.md", Reply.ok(text))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    assert project.output("quorum.md") == text


def test_truncated_and_refused_replies_fail_generation_and_are_not_repaired(project, fake):
    project.write_rows(rows_for("truncated", "refused", "fine"))
    router(fake).set("truncated.md", Reply.truncated(draft("Truncated")))  # complete-looking, but cut off
    router(fake).set("refused.md", Reply.refused("I can't help with that."))

    result = project.run()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.outcomes()
    assert outcomes["truncated.md::generate"] == "failed"
    assert outcomes["refused.md::generate"] == "failed"
    assert outcomes["fine.md::generate"] == "passed"
    truncated = result.failure("truncated.md::generate")
    assert "truncated" in truncated and "max_tokens" in truncated
    assert "refused" in result.failure("refused.md::generate")
    # a truncated draft stays readable, in the drafts folder (never the output); a refusal's text
    # is not an output
    assert project.output(".batchgen-drafts/truncated.md") == draft("Truncated")
    assert "the partial draft is in output/.batchgen-drafts/truncated.md" in truncated
    assert not (project.path / "output" / "truncated.md").exists()
    assert not (project.path / "output" / "refused.md").exists()
    # even though every check passes on the cut-off draft, the row is not complete
    assert project.statuses() == {"truncated.md": "pending", "refused.md": "pending", "fine.md": "complete"}
    assert len(requests_by_row(fake)["truncated.md"]) == 1
    assert len(requests_by_row(fake)["refused.md"]) == 1


def test_retries_429_529_and_500_then_succeed(project, fake):
    project.write_rows(rows_for("rate-limited", "overloaded", "server-error"), max_retries=3)
    router(fake).set(
        "rate-limited.md",
        Reply.rate_limited(retry_after=FAST_RETRY),
        Reply.rate_limited(retry_after=FAST_RETRY),
        Reply.ok(draft("Rate Limited")),
    )
    router(fake).set("overloaded.md", Reply.overloaded(retry_after=FAST_RETRY), Reply.ok(draft("Overloaded")))
    router(fake).set("server-error.md", Reply.server_error(retry_after=FAST_RETRY), Reply.ok(draft("Server Error")))

    started = time.monotonic()
    result = project.run()
    elapsed = time.monotonic() - started

    assert result.ret == 0, result.stdout.str()
    assert set(project.statuses().values()) == {"complete"}
    by_row = requests_by_row(fake)
    assert [e.status for e in by_row["rate-limited.md"]] == [429, 429, 200]
    assert [e.status for e in by_row["overloaded.md"]] == [529, 200]
    assert [e.status for e in by_row["server-error.md"]] == [500, 200]
    assert [e.headers.get("x-stainless-retry-count") for e in by_row["rate-limited.md"]] == ["0", "1", "2"]
    assert elapsed < 10  # retry-after (10 ms) was honoured, not a long backoff
    assert project.notes() == {}


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "expected"), [(3, 3), (8, 6)])
def test_requests_in_flight_never_exceed_the_concurrency_and_reach_it(project, fake, concurrency, expected):
    # vcrpy is loaded in this process first: a run imports it once its first request is out (a
    # third of a second, recording.load_vcrpy_soon), which this test of the waves is not about
    import vcr  # noqa: F401

    names = ["a-one", "b-two", "c-three", "d-four", "e-five", "f-six"]
    project.write_rows(rows_for(*names))
    for name in names:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title()), delay=0.3))

    result = project.run("--batch-concurrency", str(concurrency))

    assert result.ret == 0, result.stdout.str()
    requests = fake.messages_requests()
    assert len(requests) == 6
    assert fake.max_in_flight == expected
    # the server was busy for ceil(rows / concurrency) waves, far from rows x latency (the
    # upper bound is the serial time: a tighter one failed on a loaded machine, 0.96 s for 0.6)
    assert fake.wait_idle()
    busy = max(e.finished for e in requests) - min(e.started for e in requests)
    waves = -(-6 // concurrency)
    assert waves * 0.3 <= busy < len(names) * 0.3
    assert set(project.statuses().values()) == {"complete"}


def test_a_concurrency_above_httpxs_default_pool_is_reached(project, fake):
    # the plugin builds its own HTTP transport, and httpx's default pool holds 100 connections:
    # --batch-concurrency 110 had 100 requests in flight and 10 waiting for a connection
    names = [f"row-{i:03d}" for i in range(110)]
    project.write_rows(rows_for(*names))
    fake.latency = 2.0  # every request is out long before the first reply

    result = project.run("--batch-concurrency", "110")

    assert result.ret == 0, result.stdout.str()[-3000:]
    assert len(fake.messages_requests()) == 110
    assert fake.max_in_flight == 110
    assert set(project.statuses().values()) == {"complete"}


def test_a_check_that_raises_is_not_a_repair_reason(project, fake):
    # a bug in a user's form: no new draft can fix it, so no repair is paid for; the row fails
    # and its item names the error
    project.write_rows(rows_for("alpha", "beta"))
    project.write(
        "conftest.py",
        "from pytest_batchgen import ChecklistForm\n"
        "def pytest_batchgen_checklist_forms():\n"
        "    def buggy(ctx):\n"
        "        return ctx.doc.metadata['no-such-key']\n"
        "    return [ChecklistForm(name='buggy', pattern=r'buggy check', check=buggy)]\n",
    )
    project.edit("plan.md", "## Phase 1", "5. Buggy check\n\n## Phase 1")

    result = project.run()

    assert len(fake.messages_requests()) == 2  # one request a row: no repair turn
    assert result.outcomes()["alpha.md::buggy"] == "failed"
    assert "KeyError: 'no-such-key'" in result.failure("alpha.md::buggy")  # the user's own traceback
    assert result.outcomes()["alpha.md::front-matter"] == "passed"
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "pending"}
    # the note names the checklist line, as for any check's failure
    line = next(n for n, text in enumerate(project.read().splitlines(), 1) if "Buggy check" in text)
    assert f"- buggy (plan line {line}): output/alpha.md: KeyError" in project.notes()["alpha.md"]


def test_the_connection_pool_is_the_sdks_raised_to_the_concurrency():
    import httpx2

    from pytest_batchgen.client import connection_limits

    sdk = httpx2.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=7.0)
    assert connection_limits(sdk, 8) == sdk
    raised = connection_limits(sdk, 1500)
    assert (raised.max_connections, raised.max_keepalive_connections, raised.keepalive_expiry) == (1500, 1500, 7.0)
    unbounded = connection_limits(httpx2.Limits(max_connections=None, max_keepalive_connections=20), 64)
    assert (unbounded.max_connections, unbounded.max_keepalive_connections) == (None, 64)


def test_rows_are_all_dispatched_before_the_first_check_runs(project, fake):
    # the slow row comes first in the plan; the others must not wait for its items to finish
    project.write_rows(rows_for("slow", "b-fast", "c-fast"))
    router(fake).set("slow.md", Reply.ok(draft("Slow"), delay=2.0))

    result = project.run("--batch-concurrency", "3")

    assert result.ret == 0, result.stdout.str()
    fake.wait_idle()
    requests = fake.messages_requests()
    assert len(requests) == 3
    slow = next(e for e in requests if "slow.md" in e.raw.decode())
    others = [e for e in requests if e is not slow]
    # sent while the slow one was in flight (ordering at the server, not a time limit)
    assert all(e.started < slow.finished for e in others)


# -- outputs that exist ------------------------------------------------------------------------


def test_a_pending_row_whose_output_already_passes_is_kept_and_not_sent(project, fake):
    project.write_rows(rows_for("kept", "stale"))
    out = project.path / "output"
    (out / "kept.md").write_text(draft("Kept", category="B"), encoding="utf-8")
    (out / "stale.md").write_text(bad_value("Stale"), encoding="utf-8")

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    assert list(requests_by_row(fake)) == ["stale.md"]  # only the failing output is regenerated
    assert project.output("kept.md") == draft("Kept", category="B")
    assert project.output("stale.md") == draft("Stale")
    assert project.statuses() == {"kept.md": "complete", "stale.md": "complete"}


# -- dry run ---------------------------------------------------------------------------------


def test_dry_run_prints_the_prompts_and_sends_and_writes_nothing(project, fake):
    rows = [
        PlanRow("Reference", "reference.md", "haiku", "complete"),
        *rows_for("quorum"),
        *rows_for("cap-theorem", model="sonnet"),
    ]
    project.write_rows(rows)
    (project.path / "output" / "quorum.md").write_text(bad_value("Quorum"), encoding="utf-8")
    before = project.snapshot()

    result = project.run("--batch-dry-run")

    assert result.ret == pytest.ExitCode.OK
    assert fake.requests == []
    assert project.snapshot() == before
    out = result.stdout.str()
    assert REFERENCE_MARKER in out
    assert "category must be one of: A, B, C" in out
    assert "<title>Quorum</title>" in out and "<output_path>output/quorum.md</output_path>" in out
    assert "<title>Cap Theorem</title>" in out and "<output_path>output/cap-theorem.md</output_path>" in out
    assert "quorum.md -> claude-haiku" in out and "cap-theorem.md -> claude-sonnet" in out
    assert "<title>Reference</title>" not in out  # complete rows are not sent
    assert "2 pending row(s)" in out
    assert not (project.path / "cassettes").exists()


@pytest.mark.parametrize("api", [[], ["--batch-api", "batches"]], ids=["messages", "batches"])
def test_dry_run_without_pytest_terminal_reporter_still_prints_the_prompts(pytester, project, fake, api):
    # -p no:terminal: pytest's config.get_terminal_writer() asserts there is a terminal reporter;
    # the dry run ended in "INTERNALERROR> AssertionError" (exit 3). (pytester directly: the
    # harness's -rfEs is an option of the terminal plugin)
    project.write_rows(rows_for("quorum"))

    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--batch-plan", "plan.md", "--batch-dry-run", "-p", "no:terminal", *api
    )

    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    assert fake.requests == []
    out = result.stdout.str()
    assert "<title>Quorum</title>" in out
    assert "dry run: 1 pending row(s)" in out


# -- stopping early sends nothing more ---------------------------------------------------------


def test_stopping_with_x_sends_no_new_request_and_skips_the_unsent_rows(project, fake):
    rows = [PlanRow("Reference", "reference.md", "haiku", "complete"), *rows_for("a1", "a2", "a3", "a4", "a5")]
    project.write_rows(rows)
    fake.latency = 0.4
    router(fake).set("a1.md", Reply.ok(bad_value("A1")))

    result = project.run("--batch-concurrency", "1", "--batch-max-attempts", "1", "-x")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    sent = {row_of(entry) for entry in fake.messages_requests()}
    # a1 failed a check; at most the row in flight at that moment was still answered
    assert "a1.md" in sent and len(sent) <= 2, sent
    assert {"a4.md", "a5.md"}.isdisjoint(sent)
    assert project.statuses()["a5.md"] == "pending"


# -- pytest-xdist: the controller generates, the workers check with its results ----------------


def test_with_xdist_a_row_that_failed_to_generate_fails_and_is_noted(project, fake):
    rows = rows_for("good-one", "broken")
    project.write_rows(rows)
    router(fake).set("broken.md", Reply.server_error())

    result = project.run("-n", "2", "-p", "no:randomly")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert project.statuses() == {"good-one.md": "complete", "broken.md": "pending"}
    note = project.notes()["broken.md"]
    assert "generation failed: error: InternalServerError" in note
    # each row was sent once (plus the SDK's retries of the 500), by the controller alone
    assert {row_of(e) for e in fake.messages_requests()} == {"good-one.md", "broken.md"}
    assert sum(row_of(e) == "good-one.md" for e in fake.messages_requests()) == 1


def test_with_xdist_a_run_stopped_by_x_records_its_rows_as_plain_x_does(project, fake):
    # xdist ends a -x run with its own KeyboardInterrupt ("stopping after 1 failures"): that is
    # a stop at a failure, not a Ctrl-C, and the rows that passed were recorded (and paid for)
    project.write_rows(rows_for("alpha", "beta", "gamma"))
    router(fake).set("gamma.md", Reply.ok(bad_value("Gamma")))

    result = project.run("-n", "2", "-p", "no:randomly", "-x", "--batch-max-attempts", "1")

    assert result.ret == pytest.ExitCode.INTERRUPTED  # xdist's exit code for -x
    # recorded: the failing row's note is written (which rows completed depends on what the
    # workers ran before the stop)
    assert project.statuses()["gamma.md"] == "pending" and "gamma.md" in project.notes()
    result.stdout.fnmatch_lines(["plan.md: plan updated"])
    assert "interrupted" not in result.stdout.str()


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_collect_only_sends_nothing_and_writes_nothing(project, fake, xdist, monkeypatch):
    # pytest's --collect-only runs nothing: it sent every pending row and wrote their outputs,
    # cassettes and statuses (paid for, in a run meant to list the items); then it still wrote
    # the JSON report, the run summary and GitHub's step summary
    project.write_rows(rows_for("alpha", "beta"))
    (project.path / "step.md").write_text("")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.path / "step.md"))
    before = project.snapshot()

    result = project.run("--collect-only", "-q", "--batch-report", "r.json", "--batch-summary", "s.md", *xdist)

    assert result.ret == 0, result.stdout.str()
    assert fake.messages_requests() == []
    assert project.snapshot() == before
    assert "plan.md::alpha.md::generate" in result.stdout.str()
    assert "pytest-batchgen" not in result.stdout.str()  # no table of rows that did not run


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
@pytest.mark.parametrize(
    ("named", "sent"),
    [("other.md::gamma.md", {"gamma.md"}), ("other.md", {"gamma.md", "delta.md"})],
    ids=["a row", "a whole plan"],
)
def test_naming_a_row_of_one_plan_generates_nothing_of_the_other_plans(project, fake, xdist, named, sent):
    # with several plans (in addopts, say), the plans not named were collected whole: naming one
    # row's node (or a whole plan) generated, and paid for, every pending row of the other plans too
    project.write_rows(rows_for("alpha", "beta"))
    project.write("other.md", rows_plan_text(rows_for("gamma", "delta")))

    result = project.pytest("--batch-plan", "plan.md", "--batch-plan", "other.md", named, *xdist)

    assert result.ret == 0, result.stdout.str()
    assert {row_of(e) for e in fake.messages_requests()} == sent
    assert not (project.path / "output" / "alpha.md").exists()
    assert "gamma.md | haiku | complete" in project.read("other.md")
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "pending"}


def test_with_xdist_only_the_selected_rows_are_generated(project, fake):
    project.write_rows(rows_for("picked", "other", "third"))

    result = project.run("-n", "2", "-p", "no:randomly", "plan.md::picked.md")

    assert result.ret == 0, result.stdout.str()
    assert {row_of(e) for e in fake.messages_requests()} == {"picked.md"}
    assert project.statuses() == {"picked.md": "complete", "other.md": "pending", "third.md": "pending"}
    assert not (project.path / "output" / "other.md").exists()


def test_with_xdist_a_truncated_row_fails_once_in_its_note(project, fake):
    project.write_rows(rows_for("cut"))
    router(fake).set("cut.md", Reply.truncated(draft("Cut")))

    result = project.run("-n", "2", "-p", "no:randomly")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert project.statuses() == {"cut.md": "pending"}  # a passing partial draft is not complete
    note = project.notes()["cut.md"].splitlines()
    assert len(note) == 2 and note[1].startswith("- " + ", ".join(RULE_NAMES) + ": ")  # checklist order
    assert "generation failed: truncated" in note[1]


def test_with_xdist_rows_selected_only_through_a_batch_output_test_are_generated(pytester, project, fake):
    project.write_rows(rows_for("picked", "other"))
    pytester.makepyfile(
        test_custom="""
        def test_has_term(batch_output):
            assert batch_output.metadata["term"]
        """
    )

    result = project.run("-n", "2", "-p", "no:randomly", "test_custom.py", "-k", "test_has_term and picked")

    assert result.ret == 0, result.stdout.str()
    assert {row_of(e) for e in fake.messages_requests()} == {"picked.md"}
    assert (project.path / "output" / "picked.md").exists()
    assert not (project.path / "output" / "other.md").exists()


def test_xdist_without_n_still_generates(project, fake):
    project.write_rows(rows_for("solo"))

    result = project.run("--dist", "load", "--tx", "2*popen", "-p", "no:randomly")

    assert result.ret == 0, result.stdout.str()
    assert [row_of(e) for e in fake.messages_requests()] == ["solo.md"]
    assert project.statuses() == {"solo.md": "complete"}


def test_dry_run_under_xdist_still_prints_the_prompts(project, fake):
    project.write_rows(rows_for("quorum", "vector-clock"))

    result = project.run("-n", "2", "--batch-dry-run")

    assert result.ret == pytest.ExitCode.OK
    assert fake.requests == []
    assert "dry run: 2 pending row(s)" in result.stdout.str()
