"""Message Batches (issue 13): ``--batch-api batches`` end to end against the loopback server.

Every run is a real pytest session (in-process) whose rows go through the real anthropic SDK's
``messages.batches`` to :class:`~fakeapi.FakeAnthropic`, which answers each batch request with
the row's scripted reply (the ``fake`` fixture's router). Assertions are on what a user sees
(statuses, outputs, items, cassettes, the journal) and on what the server received (batches
created, the requests in them).
"""

from __future__ import annotations

import json
import re

import pytest

import yaml  # noqa: F401  (in-process runs: see tests/test_init.py)
from fakeapi import FakeAnthropic, Reply
from genhelpers import (
    API_KEY,
    AUTH_TOKEN,
    REFERENCE_MARKER,
    REFUSE_WRITES_IN,
    bad_value,
    draft,
    given_a_check_that_reports_the_credentials,
    go_offline,
    router,
    row_of,
    rows_for,
)

# Imported before any in-process run, so that every run uses this module object (pytester
# restores sys.modules after each run) and a test can monkeypatch its limits.
from pytest_batchgen import batches
from pytest_batchgen.journal import CUSTOM_ID_RE, custom_id

BATCH_INI = "batchgen_batch_poll_start = 0.01\nbatchgen_batch_poll_max = 0.05\n"


def batch_requests(fake: FakeAnthropic) -> list[list[dict]]:
    """The requests of each batch the server received, in creation order."""
    return [b.requests for b in fake.batches.values()]


def rows_in(batch: list[dict]) -> list[str]:
    return sorted(row_of(r["params"]) for r in batch)


def test_rows_pass_fail_and_are_repaired_in_a_follow_up_batch(project, fake):
    # given: one row that passes, one repaired on its second attempt, one that never passes
    project.write_rows(rows_for("quorum", "backpressure", "gossip"), ini_extra=BATCH_INI)
    router(fake).set("backpressure.md", Reply.ok(bad_value("Backpressure")), Reply.ok(draft("Backpressure")))
    router(fake).set("gossip.md", Reply.ok(bad_value("Gossip")))

    # when
    result = project.run("--batch-api", "batches")

    # then: two batches, the second holding only the repairs, with the failing checks in them
    batches = batch_requests(fake)
    assert [rows_in(b) for b in batches] == [
        ["backpressure.md", "gossip.md", "quorum.md"],
        ["backpressure.md", "gossip.md"],
    ]
    repair = next(r for r in batches[1] if row_of(r["params"]) == "backpressure.md")["params"]
    assert [m["role"] for m in repair["messages"]] == ["user", "assistant", "user"]
    assert "category" in repair["messages"][2]["content"]
    assert fake.messages_requests() == []  # nothing went through the per-request endpoint
    # every request: same parameters as the messages path, 1-hour cache on the shared prefix
    for batch in batches:
        for req in batch:
            assert CUSTOM_ID_RE.match(req["custom_id"])
            assert req["params"]["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
            assert req["params"]["max_tokens"] == 8192 and req["params"]["model"].startswith("claude-haiku")
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete", "gossip.md": "pending"}
    assert project.output("backpressure.md") == draft("Backpressure")
    result.assert_items({"quorum.md::generate": "passed", "gossip.md::category-value": "failed"})
    assert result.ret == 1
    # and the journal is gone once every result was filed
    assert not (project.cassette_dir() / "batches-journal.json").exists()


def test_a_failure_message_holding_the_key_reaches_no_repair_turn_in_a_batch(project, fake, monkeypatch):
    # the follow-up batch's repair turn quotes the failing check, and it is sent to the API
    given_a_check_that_reports_the_credentials(project, monkeypatch, ini_extra=BATCH_INI)

    result = project.run("--batch-api", "batches")

    assert result.outcomes()["quorum.md::env"] == "failed"
    batches = batch_requests(fake)
    assert len(batches) == 2  # the draft, then its repair
    sent = json.dumps(batches)
    assert API_KEY not in sent and AUTH_TOKEN not in sent
    repair = batches[1][0]["params"]["messages"][-1]["content"]
    assert "env: ANTHROPIC_API_KEY=<redacted> ANTHROPIC_AUTH_TOKEN=<redacted>" in repair


def test_a_key_echoed_in_a_batch_result_is_redacted_alike_in_the_output_and_its_recording(project, fake, monkeypatch):
    rows = rows_for("quorum")
    project.write_rows(rows, ini_extra=BATCH_INI)
    router(fake).set("quorum.md", Reply.ok(draft("Quorum", extra=f"Echo: {API_KEY}\n")))

    assert project.run("--batch-api", "batches").ret == 0
    live = project.output("quorum.md")
    assert "Echo: <redacted>" in live
    assert [name for name, data in project.snapshot().items() if API_KEY.encode() in data] == []

    go_offline(fake, monkeypatch)
    project.reset(rows)
    assert project.run("--batch-record-mode", "none").ret == 0
    assert project.output("quorum.md") == live


def test_errored_and_expired_results_are_sent_again_then_fail_with_the_api_error(project, fake):
    # given: one row errored then fine, one expired then fine, one errored every time
    project.write_rows(rows_for("quorum", "backpressure", "gossip"), ini_extra=BATCH_INI)
    router(fake).set("quorum.md", Reply.overloaded(), Reply.ok(draft("Quorum")))
    router(fake).set("backpressure.md", Reply.expired(), Reply.ok(draft("Backpressure")))
    router(fake).set("gossip.md", Reply.invalid_request("prompt is too long: 300000 tokens > 200000 maximum"))

    # when
    result = project.run("--batch-api", "batches", "--batch-report", "report.json")

    # then: the second batch resends exactly the failed requests, and no more than the attempts
    batches = batch_requests(fake)
    assert [rows_in(b) for b in batches] == [
        ["backpressure.md", "gossip.md", "quorum.md"],
        ["backpressure.md", "gossip.md", "quorum.md"],
    ]
    first = {row_of(r["params"]): r["params"] for r in batches[0]}
    second = {row_of(r["params"]): r["params"] for r in batches[1]}
    assert first == second  # the same request again, not a repair
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete", "gossip.md": "pending"}
    assert "prompt is too long" in result.failure("gossip.md::generate")
    report = json.loads(project.read("report.json"))
    rows = {r["filename"]: r for r in report["plans"][0]["rows"]}
    assert [a["error"] for a in rows["backpressure.md"]["attempts"]][0].startswith("Message Batches expired")
    assert [a["batch"] for a in rows["quorum.md"]["attempts"]] == [True, True]


def test_a_batch_result_with_impossible_usage_is_not_a_message_and_is_sent_again(project, fake):
    """A succeeded result whose usage is not a token count was filed, then broke the sums of the
    summary and the report; it is a result that is not a message, sent again like an errored one."""
    project.write_rows(rows_for("quorum", "gossip"), ini_extra=BATCH_INI)
    router(fake).set("quorum.md", Reply.ok(draft("Quorum"), usage={"input_tokens": 10**12}), Reply.ok(draft("Quorum")))
    router(fake).set("gossip.md", Reply.ok(draft("Gossip"), usage={"output_tokens": -7}))

    result = project.run("--batch-api", "batches", "--batch-report", "report.json")

    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 1 and "Traceback" not in out and "INTERNALERROR" not in out
    assert project.statuses() == {"quorum.md": "complete", "gossip.md": "pending"}
    message = "Message Batches: the result is not a message: usage.output_tokens is -7, not a token count"
    assert message in result.failure("gossip.md::generate")
    report = json.loads(project.read("report.json"))
    rows = {r["filename"]: r for r in report["plans"][0]["rows"]}
    assert rows["quorum.md"]["attempts"][0]["error"] == (
        "Message Batches: the result is not a message: usage.input_tokens is 1000000000000, not a token count "
        "(0 to 100,000,000)"
    )
    assert "1000000000000" not in project.cassette("quorum.md").read_text(encoding="utf-8")  # not filed


def test_an_empty_batch_result_is_sent_again_as_it_was_and_never_pasted_into_a_repair(project, fake):
    """An empty result (end_turn, no text) was written as an empty draft and pasted into the
    follow-up batch's repair turn as an empty assistant turn, which the API refuses ("messages.1:
    all messages must have non-empty content except for the optional final assistant message")."""
    project.write_rows(rows_for("quorum", "gossip"), ini_extra=BATCH_INI)
    router(fake).set("quorum.md", Reply.ok(""), Reply.ok(draft("Quorum")))
    router(fake).set("gossip.md", Reply.ok(""))

    result = project.run("--batch-api", "batches")

    batches = batch_requests(fake)
    assert [rows_in(b) for b in batches] == [["gossip.md", "quorum.md"], ["gossip.md", "quorum.md"]]
    first = {row_of(r["params"]): r["params"] for r in batches[0]}
    second = {row_of(r["params"]): r["params"] for r in batches[1]}
    assert first == second  # the same requests again, not repairs
    assert project.statuses() == {"quorum.md": "complete", "gossip.md": "pending"}
    assert (
        "the model's reply was empty (no text, stop_reason end_turn) in all 2 attempts: nothing was written"
        in result.failure("gossip.md::generate")
    )
    assert not (project.path / "output" / "gossip.md").exists()


def test_custom_ids_are_valid_and_collision_free_for_any_filename():
    taken: set[str] = set()
    names = ["quorum.md", "quorum_md", "a" * 300, "ünïcode/päth.md", "x.md"]
    ids = []
    for name in names:
        cid = custom_id(name, taken)
        taken.add(cid)
        ids.append(cid)
    assert all(re.match(r"^[a-zA-Z0-9_-]{1,64}$", cid) for cid in ids)
    assert len(set(ids)) == len(ids)
    assert custom_id("quorum.md", set()) == ids[0]  # stable: the journal maps it back


def test_a_batch_made_cassette_replays_offline_in_either_api_mode(project, fake, monkeypatch):
    # given: a batch-mode run recorded two rows (one repaired)
    rows = rows_for("quorum", "backpressure")
    project.write_rows(rows, ini_extra=BATCH_INI)
    router(fake).set("backpressure.md", Reply.ok(bad_value("Backpressure")), Reply.ok(draft("Backpressure")))
    assert project.run("--batch-api", "batches").ret == 0
    recorded = project.cassettes()

    # when: the outputs are gone and the run replays offline, without a key, in both modes
    attempts = go_offline(fake, monkeypatch)
    for api in ("messages", "batches"):
        project.reset(rows)
        result = project.run("--batch-api", api, "--batch-record-mode", "none")

        # then: every row replays from the batch-made cassettes; nothing connects, nothing changes
        assert result.ret == 0, result.stdout.str()
        assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}
        assert project.output("backpressure.md") == draft("Backpressure")
        result.stdout.fnmatch_lines(["*every call was replayed from cassettes*"])
    assert attempts == []
    assert project.cassettes() == recorded


# -- budget, selection, phases, dry run, xdist ---------------------------------------------------


def worst_cases(project, plan_name: str | None = None, prices=None) -> dict[str, float]:
    """What batch mode reserves for each pending row's first request (computed as the plugin does)."""
    from pytest_batchgen.batches import batch_params, worst_case_cost
    from pytest_batchgen.plan import load_plan
    from pytest_batchgen.pricing import PriceTable
    from pytest_batchgen.prompts import build_prompt

    plan = load_plan(project.path / (plan_name or project.plan), project.path)
    out = {}
    for row in plan.rows:
        prompt = build_prompt(plan, row)
        out[row.filename] = worst_case_cost(prices or PriceTable(), prompt.model, batch_params(prompt.params()))
    return out


def test_max_cost_reserves_the_worst_case_and_submits_only_the_rows_that_fit(project, fake):
    # given: three rows and a cap that holds the worst case of exactly two requests
    project.write_rows(rows_for("quorum", "backpressure", "gossip"), ini_extra=BATCH_INI)
    worst = worst_cases(project)
    cap = worst["quorum.md"] + worst["backpressure.md"] + worst["gossip.md"] * 0.5

    # when
    result = project.run("--batch-api", "batches", "--batch-max-cost", f"{cap:.6f}", "--batch-report", "r.json")

    # then: one batch with the two rows that fit; the third is skipped, never sent
    (batch,) = batch_requests(fake)
    assert rows_in(batch) == ["backpressure.md", "quorum.md"]
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete", "gossip.md": "pending"}
    assert "does not fit in --batch-max-cost" in result.skip_reasons()["gossip.md::generate"]
    totals = json.loads(project.read("r.json"))["totals"]
    assert totals["skipped_by_budget"] == 1
    assert totals["reserved_usd"] <= cap and totals["cost_usd"] <= totals["reserved_usd"]
    assert totals["batch_saved_usd"] > 0
    result.stdout.fnmatch_lines(["*Message Batches saved $* against the messages path*reserved $* (worst case)*"])


def test_each_plans_rows_are_priced_and_reserved_at_their_own_plans_prices(project, fake):
    # given: two plans; only plan.md prices haiku (at $100 in and out); a cap that holds the
    # worst case of alpha at that price and of zeta at the default price, and no more
    from pytest_batchgen.pricing import Price, PriceTable

    project.write_rows(rows_for("alpha"), ini_extra=BATCH_INI)
    project.write("plan.md", project.read() + "\n## Prices\n\n- haiku: 100, 100\n")
    project.write("other.md", project.read().split("\n## Prices")[0].replace("| alpha.md |", "| zeta.md |"))
    dear = Price(100, 100, 125, 10)
    own = worst_cases(project, "plan.md", PriceTable({"claude-haiku": dear}))["alpha.md"]
    cap = own + worst_cases(project, "other.md")["zeta.md"] * 1.01
    assert own + worst_cases(project, "other.md", PriceTable({"claude-haiku": dear}))["zeta.md"] > cap

    # when
    args = ("--batch-api", "batches", "--batch-max-cost", f"{cap:.6f}", "--batch-report", "r.json")
    result = project.pytest("--batch-plan", "plan.md", "--batch-plan", "other.md", *args)

    # then: both rows were sent, and each costs half its own plan's price (1-hour writes: 2 x input)
    assert result.ret == 0, result.stdout.str()
    assert sorted(r for b in batch_requests(fake) for r in rows_in(b)) == ["alpha.md", "zeta.md"]
    report = json.loads(project.read("r.json"))
    for plan in report["plans"]:
        (row,) = plan["rows"]
        (attempt,) = row["attempts"]
        u = attempt["usage"]
        p = dear if row["filename"] == "alpha.md" else Price(1, 5, 1.25, 0.1)
        rates = (p.input, p.output, 2 * p.input, p.cache_read)
        counts = (u["input_tokens"], u["output_tokens"], u["cache_creation_input_tokens"], u["cache_read_input_tokens"])
        assert attempt["cost_usd"] == pytest.approx(0.5 * sum(n * r for n, r in zip(counts, rates)) / 1e6, abs=1e-6)


def test_a_cap_below_any_request_sends_no_batch(project, fake):
    project.write_rows(rows_for("quorum"), ini_extra=BATCH_INI)
    result = project.run("--batch-api", "batches", "--batch-max-cost", "0.000001")
    assert fake.batches == {} and fake.requests == []
    assert project.statuses() == {"quorum.md": "pending"}
    result.stdout.fnmatch_lines(["*did not fit in --batch-max-cost*"])


def test_only_the_selected_rows_and_phases_are_batched(project, fake):
    # given: rows in phase 1 (haiku) and phase 2 (sonnet)
    rows = [*rows_for("quorum", "backpressure"), *rows_for("gossip", "raft", model="sonnet")]
    project.write_rows(rows, ini_extra=BATCH_INI)

    # when: one phase, then one row by node id, then -k
    project.run("--batch-api", "batches", "--batch-phase", "2")
    project.run("--batch-api", "batches", "plan.md::quorum.md")
    project.run("--batch-api", "batches", "-k", "backpressure")

    # then: three batches, each with only what was selected
    assert [rows_in(b) for b in batch_requests(fake)] == [["gossip.md", "raft.md"], ["quorum.md"], ["backpressure.md"]]
    assert set(project.statuses().values()) == {"complete"}


def test_dry_run_shows_what_would_be_batched_and_its_price(project, fake):
    project.write_rows(rows_for("quorum", "backpressure"), ini_extra=BATCH_INI)
    result = project.run("--batch-api", "batches", "--batch-dry-run")
    result.stdout.fnmatch_lines(
        [
            "plan.md: 2 request(s) in 1 Message Batch(es) of 2",
            "estimated price at the batch rate (half the list price): $0.0*; worst case (what --batch-max-cost reserves): $0.*",
        ]
    )
    assert fake.requests == [] and project.statuses() == {"quorum.md": "pending", "backpressure.md": "pending"}


def test_under_xdist_the_controller_submits_one_batch_and_the_workers_check(project, fake):
    project.write_rows(rows_for("quorum", "backpressure", "gossip"), ini_extra=BATCH_INI)
    router(fake).set("gossip.md", Reply.ok(bad_value("Gossip")), Reply.ok(draft("Gossip")))
    result = project.run("--batch-api", "batches", "-n", "2", "-p", "no:randomly")
    assert result.ret == 0, result.stdout.str()
    assert [rows_in(b) for b in batch_requests(fake)] == [["backpressure.md", "gossip.md", "quorum.md"], ["gossip.md"]]
    assert set(project.statuses().values()) == {"complete"}


def test_a_messages_made_cassette_replays_in_batch_mode_without_a_batch(project, fake):
    # given: rows recorded by a messages-mode run
    rows = rows_for("quorum", "backpressure")
    project.write_rows(rows, ini_extra=BATCH_INI)
    assert project.run().ret == 0
    fake.reset_log()

    # when: the outputs are gone and a batch-mode run (with a key) runs them again
    project.reset(rows)
    result = project.run("--batch-api", "batches")

    # then: both replay from their cassettes; no batch is created, nothing is sent
    assert result.ret == 0, result.stdout.str()
    assert fake.batches == {} and fake.requests == []
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}


def test_batch_calls_cost_half_the_list_price_with_one_hour_cache_writes(project, fake):
    # given: two rows (the first writes the shared prefix to the 1-hour cache, the second reads it)
    project.write_rows(rows_for("quorum", "backpressure"), ini_extra=BATCH_INI)

    # when
    project.run("--batch-api", "batches", "--batch-report", "r.json")

    # then: each attempt costs half the list price, a 1-hour cache write at 2 x input (haiku: $1/$5 per MTok)
    report = json.loads(project.read("r.json"))
    full = 0.0
    for row in report["plans"][0]["rows"]:
        (attempt,) = row["attempts"]
        u = attempt["usage"]
        half = (
            0.5
            * (
                u["input_tokens"] * 1
                + u["output_tokens"] * 5
                + u["cache_creation_input_tokens"] * 2
                + u["cache_read_input_tokens"] * 0.1
            )
            / 1e6
        )
        assert attempt["batch"] is True and abs(attempt["cost_usd"] - half) < 1e-6
        full += (
            u["input_tokens"] * 1
            + u["output_tokens"] * 5
            + u["cache_creation_input_tokens"] * 1.25
            + u["cache_read_input_tokens"] * 0.1
        ) / 1e6
    totals = report["totals"]
    assert totals["usage"]["cache_creation_input_tokens"] > 0
    assert abs(totals["batch_saved_usd"] - (full - totals["cost_usd"])) < 1e-6
    # what caching saved, as billed: reads at 0.1 x input instead of 1 x, less the 1-hour
    # writes' premium (2 x input instead of 1 x), all at half price
    u = totals["usage"]
    saved = 0.5 * (u["cache_read_input_tokens"] * 0.9 - u["cache_creation_input_tokens"] * 1.0) / 1e6
    assert u["cache_read_input_tokens"] > 0 and saved != 0
    assert totals["caching_saved_usd"] == pytest.approx(saved, abs=1e-6)


def test_a_round_is_split_at_the_api_limits(project, fake, monkeypatch):
    # given: a limit of 2 requests per batch (then a size limit below one request)

    project.write_rows(rows_for("quorum", "backpressure", "gossip", "raft", "paxos"), ini_extra=BATCH_INI)
    monkeypatch.setattr(batches, "MAX_REQUESTS", 2)

    # when
    assert project.run("--batch-api", "batches").ret == 0

    # then: three batches of at most two, every row once
    sizes = [len(b) for b in batch_requests(fake)]
    assert sizes == [2, 2, 1]
    assert sorted(r for b in batch_requests(fake) for r in rows_in(b)) == sorted(project.statuses())

    # and with a size limit below two requests, one request a batch
    monkeypatch.setattr(batches, "MAX_REQUESTS", 100_000)
    monkeypatch.setattr(batches, "BYTES_BUDGET", 1)
    project.reset(rows_for("quorum", "backpressure", "gossip", "raft", "paxos"))
    for path in project.cassette_dir().iterdir():
        path.unlink()
    assert project.run("--batch-api", "batches").ret == 0
    assert [len(b) for b in batch_requests(fake)][3:] == [1, 1, 1, 1, 1]


def test_an_unreadable_journal_fails_the_rows_naming_it_and_sends_nothing(project, fake):
    project.write_rows(rows_for("quorum"), ini_extra=BATCH_INI)
    project.write("cassettes/plan/batches-journal.json", "{ not json")
    result = project.run("--batch-api", "batches")
    assert fake.requests == []
    failure = result.failure("quorum.md::generate")
    assert "batches-journal.json: the batch journal cannot be read" in failure
    assert "delete it to send those rows again" in failure


def test_a_batch_that_cannot_be_polled_fails_its_rows_and_stays_in_the_journal(project, fake):
    # given: every retrieve of the batch is refused (a 400, which the SDK does not retry)
    project.write_rows(rows_for("quorum", "backpressure"), ini_extra=BATCH_INI)
    fake.batch_poll_error = 400

    # when
    result = project.run("--batch-api", "batches")

    # then: after 5 failed polls the rows fail saying so, and the batch is kept for a rerun
    (batch,) = fake.batches.values()
    assert sum(1 for e in fake.requests if e.method == "GET" and e.path.endswith(batch.id)) == 5
    failure = result.failure("quorum.md::generate")
    assert f"polling batch {batch.id} failed 5 times" in failure, failure
    assert "it stays in the journal, rerun to collect it: pytest --batch-plan plan.md --batch-api batches" in failure
    journal = json.loads((project.cassette_dir() / "batches-journal.json").read_text())
    assert [b["id"] for b in journal["batches"]] == [batch.id]
    assert project.statuses() == {"quorum.md": "pending", "backpressure.md": "pending"}


# -- a result that cannot be recorded or written is counted, and ends its row only -------------

#: REFUSE_WRITES_IN for one file of the folder: the other rows' writes go through
REFUSE_ONE_FILE = REFUSE_WRITES_IN.replace(
    "if path.parent.resolve() == FOLDER:", "if path.parent.resolve() == FOLDER and path.name == {name!r}:"
)
#: a reply's usage, pinned: $0.01 at Haiku's list price, $0.005 at the batch price
CENT = {"input_tokens": 500, "output_tokens": 1_900, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def rows_of(project) -> dict[str, dict]:
    report = json.loads(project.read("report.json"))
    return {r["filename"]: r for r in report["plans"][0]["rows"]}


def test_a_batch_result_that_cannot_be_recorded_is_counted_and_kept_and_the_other_rows_go_on(project, fake):
    """The recording's PermissionError went out of the results' stream to the dispatcher's
    thread, which gave every pending row a fresh result ("batch dispatcher stopped: ..."): the
    paid attempts were dropped from the summary, the report and --batch-max-cost, the reply's
    text was lost, and rows whose result had nothing wrong with it were not filed."""
    project.write_rows(rows_for("one", "two"), ini_extra=BATCH_INI)
    for name in ("one", "two"):
        router(fake).set(f"{name}.md", Reply.ok(draft(name.title()), usage=CENT))
    folder = str(project.cassette_dir().resolve())
    project.write("conftest.py", REFUSE_ONE_FILE.format(folder=folder, name="one.md.yaml"))

    result = project.run("--batch-api", "batches", "--batch-report", "report.json")

    assert len(fake.batches) == 1
    rows = rows_of(project)
    message = (
        "the reply could not be recorded in cassettes/plan/one.md.yaml: Permission denied; "
        "make cassettes/plan/ writable, then run again; its text is kept in output/one.md"
    )
    assert rows["one.md"]["generation"]["error"] == message
    assert message in result.failure("one.md::generate") and "Traceback" not in result.failure("one.md::generate")
    for name in ("one.md", "two.md"):
        [attempt] = rows[name]["attempts"]
        assert attempt["usage"] == CENT and attempt["cost_usd"] == pytest.approx(0.005, abs=2e-4)
    report = json.loads(project.read("report.json"))
    assert report["totals"]["cost_usd"] == pytest.approx(0.01, abs=2e-4)
    assert project.output("one.md") == draft("One")
    assert project.statuses() == {"one.md": "pending", "two.md": "complete"}

    # a rerun keeps the output it paid for: nothing is sent again
    (project.path / "conftest.py").unlink()
    assert project.run("--batch-api", "batches").ret == 0
    assert len(fake.batches) == 1 and fake.messages_requests() == []
    assert project.statuses() == {"one.md": "complete", "two.md": "complete"}


def test_batch_results_whose_outputs_cannot_be_written_are_counted_and_replayed_next_time(project, fake):
    """A read-only output folder: the draft's write raised out of the results' stream and the
    dispatcher stopped, every row failing with a raw PermissionError and $0 for billed replies."""
    project.write_rows(rows_for("one", "two"), ini_extra=BATCH_INI)
    for name in ("one", "two"):
        router(fake).set(f"{name}.md", Reply.ok(draft(name.title()), usage=CENT))
    project.write("conftest.py", REFUSE_WRITES_IN.format(folder=str((project.path / "output").resolve())))

    result = project.run("--batch-api", "batches", "--batch-report", "report.json")

    assert len(fake.batches) == 1
    rows = rows_of(project)
    for name in ("one.md", "two.md"):
        message = (
            f"the reply could not be written to output/{name}: Permission denied; make output/ writable, then run again"
        )
        assert rows[name]["generation"]["error"] == message
        assert message in result.failure(f"{name}::generate")
        [attempt] = rows[name]["attempts"]
        assert attempt["usage"] == CENT and attempt["cost_usd"] == pytest.approx(0.005, abs=2e-4)

    # the results were recorded: the rerun replays them, and sends nothing
    (project.path / "conftest.py").unlink()
    assert project.run("--batch-api", "batches").ret == 0
    assert len(fake.batches) == 1 and fake.messages_requests() == []
    assert project.statuses() == {"one.md": "complete", "two.md": "complete"}


def test_a_failed_re_recording_in_batches_keeps_the_old_generation_and_a_passing_one_drops_it(project, fake):
    # as the messages path does (tests/test_freshness_e2e.py): the output is kept over a failed
    # draft, and so is the recording it is the reply of, until a new draft replaces it
    project.write_rows(rows_for("quorum"), ini_extra=BATCH_INI)
    assert project.run("--batch-api", "batches").ret == 0
    good = project.output("quorum.md")
    old = project.interactions("quorum.md")
    project.edit("output/reference.md", REFERENCE_MARKER, REFERENCE_MARKER + " Changed.")
    router(fake).set("quorum.md", Reply.ok(bad_value("Quorum")))

    project.run("--batch-api", "batches", "--batch-regenerate-stale")

    assert project.output("quorum.md") == good
    assert project.interactions("quorum.md")[:1] == old
    assert len(project.interactions("quorum.md")) == 3  # the old generation, today's draft and its repair
    (project.path / "output" / ".batchgen-drafts" / "quorum.md").unlink()  # a fresh checkout
    gate = project.run("--batch-fail-stale", "--batch-readonly")
    assert "stale: the format reference changed since it was generated" in gate.failure("quorum.md::fresh")

    router(fake).set("quorum.md", Reply.ok(draft("Quorum", category="B")))
    project.run("--batch-api", "batches", "--batch-regenerate-stale")
    assert project.output("quorum.md") == draft("Quorum", category="B")
    assert len(project.interactions("quorum.md")) == 1
    assert project.run("--batch-fail-stale", "--batch-readonly").outcomes()["quorum.md::fresh"] == "passed"


def test_a_batch_result_that_cannot_be_filed_fails_its_row_only(project, fake):
    """A result whose usage is not a number raised ValueError out of the results' stream: the
    dispatcher stopped and every row failed with "batch dispatcher stopped: ValueError". It is
    now no message at all (cassettes.body_problem): never recorded, and only its row fails."""
    project.write_rows(rows_for("one", "two"), ini_extra=BATCH_INI)
    router(fake).set("one.md", Reply.ok(draft("One"), usage={"output_tokens": "many"}))
    router(fake).set("two.md", Reply.ok(draft("Two")))

    result = project.run("--batch-api", "batches")

    failure = result.failure("one.md::generate")
    assert "the result is not a message: usage.output_tokens is 'many'" in failure, failure
    assert "batch dispatcher stopped" not in failure
    assert project.statuses() == {"one.md": "pending", "two.md": "complete"}
    assert not (project.cassette_dir() / "one.md.yaml").exists()


#: the recording of one file raises an error that is not an OSError (a bug, a library's surprise)
BREAK_ONE_RECORDING = """
from pytest_batchgen import recording

real = recording.atomic_write

def broken(path, *args, **kwargs):
    if path.name == {name!r}:
        raise RuntimeError("the recorder broke")
    return real(path, *args, **kwargs)

recording.atomic_write = broken

def pytest_unconfigure(config):
    recording.atomic_write = real
"""


#: the second recording of one file (the repair's result) cannot be written: a full disk
FAIL_SECOND_RECORDING = """
from pytest_batchgen import recording

real = recording.atomic_write
seen = []

def full(path, *args, **kwargs):
    if path.name == {name!r}:
        seen.append(path)
        if len(seen) > 1:
            raise OSError(28, "No space left on device")
    return real(path, *args, **kwargs)

recording.atomic_write = full

def pytest_unconfigure(config):
    recording.atomic_write = real
"""


def test_a_paid_repair_result_kept_nowhere_stays_in_the_journal(project, fake):
    """The first draft was written (it failed a check), then the repair's result, a refusal,
    could not be recorded: nothing of it was kept, yet the earlier draft's ``wrote`` let it
    leave the journal, and the next run paid for the repair again."""
    project.write_rows(rows_for("one"), ini_extra=BATCH_INI)
    router(fake).set("one.md", Reply.ok(bad_value("One")), Reply.refused())
    project.write("conftest.py", FAIL_SECOND_RECORDING.format(name="one.md.yaml"))
    journal_file = project.cassette_dir() / "batches-journal.json"

    result = project.run("--batch-api", "batches")

    failure = result.failure("one.md::generate")
    assert "No space left on device" in failure and "its text is kept" not in failure, failure
    (entry,) = json.loads(journal_file.read_text())["batches"]
    assert entry["id"] == list(fake.batches)[1] and [r["row"] for r in entry["requests"].values()] == ["one.md"]


def test_a_paid_result_that_was_not_recorded_stays_in_the_journal_and_is_not_paid_again(project, fake):
    """A RuntimeError while recording a result stopped the dispatcher ("batch dispatcher
    stopped: RuntimeError"); caught per row, the result must still not leave the journal: the
    next run reads it again from its batch instead of paying for it again."""
    project.write_rows(rows_for("one", "two"), ini_extra=BATCH_INI)
    router(fake).set("one.md", Reply.ok(draft("One")))
    router(fake).set("two.md", Reply.ok(draft("Two")))
    project.write("conftest.py", BREAK_ONE_RECORDING.format(name="one.md.yaml"))
    journal_file = project.cassette_dir() / "batches-journal.json"

    result = project.run("--batch-api", "batches")

    failure = result.failure("one.md::generate")
    assert "could not be filed (RuntimeError: the recorder broke)" in failure, failure
    assert "it stays in the journal" in failure and "batch dispatcher stopped" not in failure, failure
    assert project.statuses() == {"one.md": "pending", "two.md": "complete"}
    (entry,) = json.loads(journal_file.read_text())["batches"]
    assert [r["row"] for r in entry["requests"].values()] == ["one.md"]

    # when: the recorder works again
    (project.path / "conftest.py").unlink()
    result = project.run("--batch-api", "batches")

    # then: one's result is collected from the same batch, not sent again
    assert result.ret == 0, result.stdout.str()
    assert project.statuses() == {"one.md": "complete", "two.md": "complete"}
    assert len(fake.batches) == 1 and not journal_file.exists()
