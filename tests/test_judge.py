"""Judge rules (issue #14): checklist lines a model grades, recorded and replayed like generation.

Against the loopback server (``fake``), whose judge answers are scripted per output file by
:class:`judgehelpers.JudgeRouter`; generation replies come from the usual per-row router.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path

import benchmarks_judge_calibration as calibration
import pytest
import yaml
from genhelpers import REFUSE_WRITES_IN, Reply, draft, go_offline, router, row_of, rows_for
from harness import Project
from judgehelpers import criterion_of, fails, install, is_judge, passes, verdict_reply

from pytest_batchgen.calibration import accuracy, cohen_kappa, flip_rate, score
from pytest_batchgen.judge import (
    Sample,
    judge_slug,
    majority,
    numbered,
    parse_sample,
    sends_titles,
)

CRITERION = "the Definition is accurate and not circular"
RULE = judge_slug(CRITERION)  # judge-definition-accurate-not-circular
JUDGE_LINE = f"5. Judge (sonnet): {CRITERION}\n"
JUDGE_DATA = Path(__file__).resolve().parent / "data" / "judge"


def given_rows_with_a_judge(project: Project, *names: str, line: str = JUDGE_LINE, ini_extra: str = "", **kw) -> None:
    project.write_rows(rows_for(*names), ini_extra=ini_extra, **kw)
    text = project.read()
    anchor = "\n## Phase 1"
    project.write("plan.md", text.replace(anchor, line + anchor, 1))


def judge_cassette(project: Project, filename: str) -> list[dict]:
    path = project.cassette_dir() / f"{filename}.judge.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))["interactions"]


def generation_requests(fake, filename: str) -> list:
    """The row's generation requests (judge calls left out)."""
    return [e for e in fake.messages_requests() if not is_judge(e.body) and row_of(e) == filename]


def item(filename: str) -> str:
    return f"{filename}::{RULE}"


# -- the form ------------------------------------------------------------------------------


def test_the_rule_id_is_a_stable_slug_of_the_criterion():
    assert RULE == "judge-definition-accurate-not-circular"
    assert judge_slug("The Related Terms section names another term of this plan") == (
        "judge-related-terms-section-names-another"
    )


def test_majority_of_samples_wins_and_a_tie_fails():
    p, f = Sample("pass", "ok", 1), Sample("fail", "circular", 7)
    assert majority([f, p, f]).verdict == "fail" and majority([f, p, f]).agreement == "2/3"
    assert majority([p, f, p]).verdict == "pass"
    assert majority([p, f]).verdict == "fail"  # a tie fails
    assert majority([f, p, f]).line == 7
    assert majority([Sample(None, "no tool call")]).verdict == "error"


def test_a_reply_without_the_tool_call_is_no_verdict():
    assert parse_sample(None).verdict is None
    assert parse_sample({"verdict": "maybe"}).verdict is None
    assert parse_sample({"verdict": "FAIL", "line": 3, "reason": "r"}) == Sample("fail", "r", 3, "")
    assert parse_sample({"verdict": "pass", "line": True}).line is None


def test_a_line_that_is_no_line_of_the_file_is_none():
    # float("inf") and float("nan") (JSON's Infinity and NaN, which json.loads reads) raised
    # OverflowError and ValueError out of the check
    for line in (float("inf"), float("-inf"), float("nan"), 2.5, 0, -3, "3", None):
        assert parse_sample({"verdict": "fail", "line": line, "reason": "r"}) == Sample("fail", "r", None, "")
    assert parse_sample({"verdict": "fail", "line": 3.0}).line == 3


def test_the_plan_titles_go_only_to_criteria_that_mention_the_plan():
    assert sends_titles("Related Terms name another term of this plan")
    assert not sends_titles("the Definition is not circular")
    assert numbered("a\nb") == "  1| a\n  2| b"


def test_an_unknown_model_alias_is_a_plan_error_naming_the_line(project):
    given_rows_with_a_judge(project, "alpha", line=f"5. Judge (sonet): {CRITERION}\n")
    result = project.run("--batch-validate-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    line = project.read().splitlines().index(f"5. Judge (sonet): {CRITERION}") + 1
    assert f"plan.md:{line}: unknown judge model 'sonet'" in err, err
    assert "haiku, opus, sonnet" in err


def test_a_judge_line_without_a_model_needs_a_default(project):
    given_rows_with_a_judge(project, "alpha", line=f"5. Judge: {CRITERION}\n")
    result = project.run("--batch-validate-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "names no model" in result.stderr.str()


def test_the_plan_wide_judge_model_comes_from_models_or_the_ini(project, fake):
    judge = install(fake)
    given_rows_with_a_judge(project, "alpha", line=f"5. Judge: {CRITERION}\n")
    project.write("plan.md", project.read() + "\n## Models\n- judge: opus\n")
    project.run()
    assert [b["model"] for b in judge.judge_calls()] == ["claude-opus-5-5"]

    given_rows_with_a_judge(
        project, "beta", line=f"5. Judge: {CRITERION}\n", ini_extra="batchgen_judge_model = haiku\n"
    )
    project.run()
    assert judge.judge_calls("beta.md")[0]["model"] == "claude-haiku-5-5"


# -- generation, failure, repair -------------------------------------------------------------


def test_a_passing_judge_rule_completes_the_row_and_is_recorded(project, fake):
    judge = install(fake)
    given_rows_with_a_judge(project, "alpha")

    result = project.run()

    assert result.outcomes()[item("alpha.md")] == "passed", result.stdout.str()
    assert project.statuses() == {"alpha.md": "complete"}
    [body] = judge.judge_calls("alpha.md")
    assert "temperature" not in body  # API 2026-10-21 answers 400 to sampling parameters
    assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
    assert body["model"] == "claude-sonnet-5-5"
    text = body["messages"][0]["content"]
    assert f"<criterion>{CRITERION}</criterion>" in text and "<row_title>Alpha</row_title>" in text
    assert "  1| ---" in text and "<plan_titles>" not in text
    assert "category must be one of: A, B, C" in text  # the content rules
    assert len(judge_cassette(project, "alpha.md")) == 1


def test_a_failing_verdict_reaches_the_item_the_note_the_report_and_the_repair_turn(project, fake, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    judge = install(fake)
    judge.set("alpha.md", fails("the Definition defines Alpha as alpha: circular", 9))
    given_rows_with_a_judge(project, "alpha")

    result = project.run("--batch-report", "report.json")

    assert result.outcomes()[item("alpha.md")] == "failed"
    failure = result.failure(item("alpha.md"))
    assert "output/alpha.md:9: judge (claude-sonnet-5-5): the Definition defines Alpha as alpha: circular" in failure
    assert "output line 9: Alpha: definition text." in failure
    note = project.notes()["alpha.md"]
    assert "the Definition defines Alpha as alpha: circular" in note and "output/alpha.md:9" in note
    [_first, repair] = generation_requests(fake, "alpha.md")  # the draft was repaired against the reason
    turn = repair.body["messages"][-1]["content"]
    assert f"{CRITERION} ({RULE}): judge (claude-sonnet-5-5): the Definition defines Alpha as alpha: circular" in turn
    assert "output line 9: Alpha: definition text." in turn
    report = json.loads(project.read("report.json"))
    row = report["plans"][0]["rows"][0]
    assert any("circular" in f["message"] and f["output_line"] == 9 for f in row["failures"])
    # the repaired draft came back word for word: its request is the same, so is its verdict
    assert [a["check"] for a in row["judge_attempts"]] == [RULE]
    assert any(
        a == [f"{RULE}: judge (claude-sonnet-5-5): the Definition defines Alpha as alpha: circular"]
        for a in (x["failed_checks"] for x in row["attempts"])
    )
    result.stdout.fnmatch_lines([f"::error file=output/alpha.md,line=9,title=batchgen alpha.md%3A {RULE}::*circular*"])
    assert project.statuses() == {"alpha.md": "pending"}


def test_a_judge_failure_repairs_into_a_pass(project, fake):
    router(fake).set("alpha.md", Reply.ok(draft("Alpha", extra="Alpha is alpha.\n")), Reply.ok(draft("Alpha")))
    judge = install(fake)
    judge.set("alpha.md", fails("Alpha is defined as itself", 14), passes())
    given_rows_with_a_judge(project, "alpha")

    result = project.run()

    assert result.outcomes()[item("alpha.md")] == "passed", result.stdout.str()
    assert project.statuses() == {"alpha.md": "complete"}
    assert len(generation_requests(fake, "alpha.md")) == 2
    assert len(judge.judge_calls("alpha.md")) == 2
    assert "Alpha is defined as itself" in generation_requests(fake, "alpha.md")[1].body["messages"][-1]["content"]


def _text_reply(text: str, stop_reason: str = "end_turn", tool_input: dict | None = None) -> Reply:
    """A judge reply without a usable verdict: text only, or a tool call cut off / refused."""
    content: list[dict] = [{"type": "text", "text": text}]
    if tool_input is not None:
        content = [{"type": "tool_use", "id": "toolu_x", "name": "record_verdict", "input": tool_input}]
    body = {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 400, "output_tokens": 60},
    }
    return Reply.raw(json.dumps(body))


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (Reply.error(400, "invalid_request_error", "prompt is too long"), "the judge's call failed: BadRequestError"),
        (Reply.error(500, "api_error", "internal error"), "the judge's call failed: InternalServerError"),
        (_text_reply("PASS"), "the judge gave no usable verdict (the judge did not call record_verdict)"),
        (_text_reply("", stop_reason="refusal"), "the judge gave no usable verdict (the judge refused to answer)"),
    ],
    ids=["400", "500", "no tool call", "refusal"],
)
def test_a_judge_call_that_gives_no_verdict_fails_the_row_and_pays_for_no_repair(project, fake, answer, why):
    # README: "API errors are never pasted into a repair"; a new draft cannot fix the judge's
    # failure, so none is paid for (the row stays pending, and the next run asks the judge again)
    judge = install(fake)
    judge.set("alpha.md", answer)
    given_rows_with_a_judge(project, "alpha", max_retries=0)

    result = project.run("--batch-max-attempts", "3")

    assert result.outcomes()[item("alpha.md")] == "failed"
    assert len(generation_requests(fake, "alpha.md")) == 1  # no repair turn
    assert project.statuses() == {"alpha.md": "pending"}
    assert why in result.failure(item("alpha.md"))


def test_an_answer_without_a_verdict_is_not_recorded_and_the_next_run_asks_again(project, fake):
    judge = install(fake)
    judge.set("alpha.md", _text_reply("PASS"), passes())
    given_rows_with_a_judge(project, "alpha")

    first = project.run()

    assert first.outcomes()[item("alpha.md")] == "failed"
    assert not (project.cassette_dir() / "alpha.md.judge.yaml").exists() or judge_cassette(project, "alpha.md") == []
    second = project.run()  # the draft replays; its verdict was never recorded, so it is asked for

    assert second.outcomes()[item("alpha.md")] == "passed", second.stdout.str()
    assert project.statuses() == {"alpha.md": "complete"}
    assert len(judge.judge_calls("alpha.md")) == 2
    assert len(judge_cassette(project, "alpha.md")) == 1  # the usable verdict only


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN"])
def test_a_reply_holding_a_number_json_has_not_is_invalid_and_never_recorded(project, fake, number):
    # json.loads reads Infinity and NaN, which no JSON has: the check raised OverflowError with
    # its traceback, and the recorded reply raised again in every later replay
    body = json.loads(
        _text_reply("", stop_reason="tool_use", tool_input={"verdict": "fail", "line": 1}).raw_body or b""
    )
    text = json.dumps(body).replace('"line": 1', f'"line": {number}')
    judge = install(fake)
    judge.set("alpha.md", Reply.raw(text), passes())
    given_rows_with_a_judge(project, "alpha", max_retries=0)

    first = project.run()

    assert first.outcomes()[item("alpha.md")] == "failed"
    failure = first.failure(item("alpha.md"))
    assert "the judge's call failed: InvalidReply" in failure
    assert f"content[0].input.line is {number}, which is no JSON number" in failure
    assert "Error: cannot convert" not in first.stdout.str()
    assert not (project.cassette_dir() / "alpha.md.judge.yaml").exists() or judge_cassette(project, "alpha.md") == []

    second = project.run()  # asked again, and the usable verdict recorded

    assert second.outcomes()[item("alpha.md")] == "passed", second.stdout.str()
    assert len(judge_cassette(project, "alpha.md")) == 1


def test_control_characters_in_a_judges_reason_are_escaped_in_the_note(project, fake):
    judge = install(fake)
    judge.set("alpha.md", fails("esc \x1b[2J nul \x00 bell \x07 nel \x85 end", 3))
    given_rows_with_a_judge(project, "alpha")

    project.run()

    text = project.read()
    assert not any(c in text for c in "\x00\x1b\x07\x85")
    assert "esc \\x1b[2J nul \\x00 bell \\x07 nel \\x85 end" in project.notes()["alpha.md"]
    assert project.run("--batch-validate-only").outcomes()[item("alpha.md")] == "failed"  # the plan reads
    assert project.read() == text


def test_a_judge_answer_cut_off_at_max_tokens_is_no_verdict(project, fake):
    judge = install(fake)
    judge.set("alpha.md", _text_reply("", stop_reason="max_tokens", tool_input={"verdict": "pass"}))
    given_rows_with_a_judge(project, "alpha")

    result = project.run()

    assert result.outcomes()[item("alpha.md")] == "failed"
    assert "cut off at max_tokens" in result.failure(item("alpha.md"))
    assert project.statuses() == {"alpha.md": "pending"}


def test_a_judge_verdict_that_cannot_be_recorded_is_counted_and_fails_its_check(project, fake):
    # a read-only cassette folder: the judge's reply came and was paid for, but the recording
    # raised inside the client, so its cost was lost and the check failed with a raw error
    judge = install(fake)
    given_rows_with_a_judge(project, "alpha")
    project.write("output/alpha.md", draft("Alpha"))
    project.write(
        "plan.md", project.read().replace("| alpha.md | haiku | pending |", "| alpha.md | haiku | complete |")
    )
    project.write("conftest.py", REFUSE_WRITES_IN.format(folder=str(project.cassette_dir().resolve())))

    result = project.run("--batch-report", "report.json")

    assert len(judge.judge_calls("alpha.md")) == 1
    assert result.outcomes()[item("alpha.md")] == "failed"
    assert "the judge's verdict could not be recorded in cassettes/plan/alpha.md.judge.yaml" in result.failure(
        item("alpha.md")
    )
    totals = json.loads(project.read("report.json"))["totals"]
    assert totals["judge_calls_live"] == 1 and totals["judge_cost_usd"] > 0


@pytest.mark.parametrize("judged", [True, False])
def test_with_a_sending_process_the_sdk_is_preloaded_here_only_for_a_judge(project, fake, monkeypatch, judged):
    # the drafts are judged in the pytest process as they arrive: its first judge call waited
    # for the SDK's import (2 s) while the sending process went on generating, past a
    # --batch-max-cost the verdicts' spend would have reached
    from pytest_batchgen.preload import Preloader

    started: list[tuple[str, ...]] = []
    real = Preloader.start

    def start(self):
        started.append(self.modules)
        return real(self)

    monkeypatch.setattr(Preloader, "start", start)
    if judged:
        given_rows_with_a_judge(project, "alpha", ini_extra="batchgen_sender = process\n")
        install(fake)
    else:
        project.write_rows(rows_for("alpha"), ini_extra="batchgen_sender = process\n")

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    assert "requests are sent from a process of their own" in result.stdout.str()
    assert [("anthropic" in m) for m in started] == ([True] if judged else [])


def test_judge_rules_wait_for_the_mechanical_rules(project, fake):
    judge = install(fake)
    given_rows_with_a_judge(project, "alpha")
    project.write("output/alpha.md", draft("Alpha", category="Z"))

    result = project.run("--batch-validate-only")

    assert result.outcomes()[item("alpha.md")] == "skipped"
    assert "not judged: the row's other checks fail first (category-value)" in result.skip_reasons()[item("alpha.md")]
    assert judge.judge_calls() == []


# -- recording and replay --------------------------------------------------------------------


def test_replay_without_a_key_gives_the_same_verdicts_with_no_connection(project, fake, monkeypatch):
    judge = install(fake)
    judge.set("beta.md", fails("Beta is defined by Beta", 7))
    rows = rows_for("alpha", "beta")
    given_rows_with_a_judge(project, "alpha", "beta")
    first = project.run()
    assert first.outcomes()[item("alpha.md")] == "passed"
    assert first.outcomes()[item("beta.md")] == "failed"
    before = len(fake.messages_requests())

    project.reset(rows)
    given_rows_with_a_judge(project, "alpha", "beta")
    attempts = go_offline(fake, monkeypatch)
    again = project.run("--batch-report", "report.json")

    assert attempts == []
    assert len(fake.messages_requests()) == before
    assert again.outcomes()[item("alpha.md")] == "passed"
    assert again.outcomes()[item("beta.md")] == "failed"
    assert "Beta is defined by Beta" in again.failure(item("beta.md"))
    report = json.loads(project.read("report.json"))
    calls = [a["call"] for r in report["plans"][0]["rows"] for a in r["judge_attempts"]]
    assert calls and set(calls) == {"replayed"}
    assert report["totals"]["judge_calls_live"] == 0 and report["totals"]["all_replayed"]


def test_an_edited_output_is_judged_afresh_and_an_unchanged_one_is_not(project, fake):
    judge = install(fake)
    given_rows_with_a_judge(project, "alpha")
    project.run()
    assert len(judge.judge_calls()) == 1

    project.run()  # complete and unchanged: replayed
    assert len(judge.judge_calls()) == 1

    project.edit("output/alpha.md", "Alpha: details text.", "Alpha: details text, edited.")
    result = project.run()
    assert result.outcomes()[item("alpha.md")] == "passed"
    assert len(judge.judge_calls()) == 2
    assert "edited" in judge.judge_calls()[-1]["messages"][0]["content"]
    assert len(judge_cassette(project, "alpha.md")) == 2


def test_validate_only_replays_a_recorded_verdict_and_skips_without_one(project, fake, monkeypatch):
    install(fake)
    given_rows_with_a_judge(project, "alpha", "beta")
    project.run("plan.md::alpha.md")  # records alpha's verdict
    project.write("output/beta.md", draft("Beta"))  # written by hand: never judged
    attempts = go_offline(fake, monkeypatch)

    result = project.run("--batch-validate-only")

    assert attempts == []
    assert result.outcomes()[item("alpha.md")] == "passed"
    assert result.outcomes()[item("beta.md")] == "skipped"
    reason = result.skip_reasons()[item("beta.md")]
    assert "no recorded verdict for the output as it is in cassettes/plan/beta.md.judge.yaml" in reason
    assert "--batch-validate-only makes no model call" in reason
    assert (
        f"To record it: ANTHROPIC_API_KEY=sk-ant-... pytest --batch-plan plan.md 'plan.md::beta.md::{RULE}'" in reason
    )
    assert project.statuses()["beta.md"] == "pending"  # a skipped judge keeps the row pending

    before = project.snapshot()
    required = project.run("--batch-readonly", "--batch-judge-required")
    assert project.snapshot() == before  # read-only: not even a judge recording is written
    assert required.outcomes()[item("beta.md")] == "failed"
    assert "judge verdict required" in required.failure(item("beta.md"))


def test_a_plan_without_judge_lines_still_imports_neither_the_sdk_nor_vcrpy(project, pytester):
    project.write_rows(rows_for("alpha"))
    project.write("output/alpha.md", draft("Alpha"))
    pytester.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            heavy = sorted(m for m in ("anthropic", "vcr", "httpx2") if m in sys.modules)
            open("imported.txt", "w").write(",".join(heavy) or "none")
        """
    )
    result = project.run("--batch-validate-only", subprocess=True)
    assert result.ret == pytest.ExitCode.OK
    assert project.read("imported.txt") == "none"


# -- samples, cost, dry run -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "outcome", "agreement"),
    [(("fail", "pass", "fail"), "failed", "2/3"), (("pass", "fail", "pass"), "passed", None)],
)
def test_k_samples_take_the_majority(project, fake, script, outcome, agreement):
    judge = install(fake)
    judge.set("alpha.md", *(verdict_reply(v, f"sample says {v}", 7) for v in script))
    given_rows_with_a_judge(project, "alpha")

    result = project.run("--batch-judge-samples", "3", "--batch-max-attempts", "1", "--batch-report", "r.json")

    assert result.outcomes()[item("alpha.md")] == outcome
    assert len(judge.judge_calls()) == 3
    if agreement:
        assert f"judge (claude-sonnet-5-5, {agreement} samples agree): sample says fail" in result.failure(
            item("alpha.md")
        )
    row = json.loads(project.read("r.json"))["plans"][0]["rows"][0]
    assert [a["verdict"] for a in row["judge_attempts"]] == list(script)
    assert {(a["majority"], a["agreement"]) for a in row["judge_attempts"]} == {(outcome[:4], "2/3")}


def test_judge_tokens_and_cost_count_in_the_row_and_the_totals(project, fake):
    install(fake)
    given_rows_with_a_judge(project, "alpha")

    result = project.run("--batch-report", "r.json")

    report = json.loads(project.read("r.json"))
    row = report["plans"][0]["rows"][0]
    [attempt] = row["judge_attempts"]
    assert attempt["call"] == "live" and attempt["usage"]["input_tokens"] == 400 and attempt["cost_usd"] > 0
    generation = sum(a["cost_usd"] for a in row["attempts"])
    assert row["cost_usd"] == pytest.approx(generation + attempt["cost_usd"], abs=1e-6)
    assert row["usage"]["input_tokens"] == sum(a["usage"]["input_tokens"] for a in row["attempts"]) + 400
    totals = report["totals"]
    assert totals["judge_calls"] == 1 and totals["judge_cost_usd"] == attempt["cost_usd"]
    assert totals["calls"] == len(row["attempts"])  # generation calls, apart from judge calls
    result.stdout.fnmatch_lines(["*1 judge call (1 live, 0 replayed)*"])


def test_a_row_only_judged_shows_its_judge_cost_in_the_run_summary(project, fake):
    # the run summary's cost cell was "-" for a row not generated in the run, though its judge
    # call was paid for and the bold total counted it
    install(fake)
    given_rows_with_a_judge(project, "alpha")
    project.run()
    project.edit("output/alpha.md", "Alpha: details text.", "Alpha: details text, edited.")  # judged afresh

    project.run("--batch-report", "r.json", "--batch-summary", "s.md")

    row = json.loads(project.read("r.json"))["plans"][0]["rows"][0]
    assert row["attempts"] == [] and row["cost_usd"] > 0
    (line,) = [ln for ln in project.read("s.md").splitlines() if "| alpha.md |" in ln]
    assert f"${row['cost_usd']:.4f}" in line, line


def test_a_judge_call_is_priced_as_its_rows_plan_prices_it(project, fake):
    # given: two plans with the same judge line; only plan.md prices sonnet (the judge) at $100/$100
    install(fake)
    given_rows_with_a_judge(project, "alpha")
    project.write("plan.md", project.read() + "\n## Prices\n\n- sonnet: 100, 100\n")
    project.write("other.md", project.read().split("\n## Prices")[0].replace("| alpha.md |", "| zeta.md |"))

    # when
    result = project.pytest("--batch-plan", "plan.md", "--batch-plan", "other.md", "--batch-report", "r.json")

    # then: each judge call (400 in, 60 out) at its own plan's sonnet price
    assert result.ret == 0, result.stdout.str()
    report = json.loads(project.read("r.json"))
    judged = {r["filename"]: r["judge_attempts"] for p in report["plans"] for r in p["rows"]}
    assert [a["cost_usd"] for a in judged["alpha.md"]] == [round((400 * 100 + 60 * 100) / 1e6, 6)]
    assert [a["cost_usd"] for a in judged["zeta.md"]] == [round((400 * 3 + 60 * 15) / 1e6, 6)]


def test_the_budget_counts_judge_spend(project, fake):
    judge = install(fake)
    given_rows_with_a_judge(project, "alpha", "beta")

    result = project.run("--batch-max-cost", "0.0000001", "--batch-concurrency", "1")

    # the first row's generation spends the budget: its judge is not asked, the second row is not sent
    assert judge.judge_calls() == []
    assert "reached --batch-max-cost" in result.skip_reasons()[item("alpha.md")]


def test_a_zero_budget_still_replays_recorded_verdicts(project, fake, monkeypatch):
    # a recorded verdict costs nothing: the cap holds back only a judge call that would go out
    # live (before, every judge item was skipped: "the estimated spend ($0.0000) reached ...")
    judge = install(fake)
    judge.set("beta.md", fails("Beta is defined by Beta", 7))
    given_rows_with_a_judge(project, "alpha", "beta", "gamma")
    first = project.run("--batch-max-attempts", "1")
    assert first.outcomes()[item("alpha.md")] == "passed"
    assert first.outcomes()[item("beta.md")] == "failed"
    project.edit("output/gamma.md", "Gamma: details text.", "Gamma: details text, edited.")  # judged afresh
    fake.requests.clear()

    result = project.run("--batch-max-cost", "0", "--batch-report", "r.json")

    assert fake.messages_requests() == []
    assert result.outcomes()[item("alpha.md")] == "passed"
    assert result.outcomes()[item("beta.md")] == "failed"
    assert "Beta is defined by Beta" in result.failure(item("beta.md"))
    assert result.outcomes()[item("gamma.md")] == "skipped"
    assert (
        "not judged: the estimated spend ($0.0000) reached --batch-max-cost $0"
        in (result.skip_reasons()[item("gamma.md")])
    )
    report = json.loads(project.read("r.json"))
    calls = {r["filename"]: [a["call"] for a in r.get("judge_attempts", [])] for r in report["plans"][0]["rows"]}
    assert calls["alpha.md"] == ["replayed"] and calls["beta.md"] == ["replayed"] and calls["gamma.md"] == []
    # and in a run that may only replay (no key: the judge's client never sends), the same
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    replay = project.run("--batch-max-cost", "0")
    assert replay.outcomes()[item("alpha.md")] == "passed"
    assert "max-cost" not in replay.skip_reasons().get(item("gamma.md"), "")


def test_the_dry_run_shows_each_judge_prompt_for_one_row(project):
    given_rows_with_a_judge(project, "alpha", "beta")
    result = project.run("--batch-dry-run")
    out = result.stdout.str()
    assert out.count(f"judge {RULE} -> claude-sonnet-5-5") == 1
    assert f"<criterion>{CRITERION}</criterion>" in out


# -- calibration ------------------------------------------------------------------------------


def test_cohen_kappa_against_hand_computed_values():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15: po = 0.7, pe = 0.5*0.6 + 0.5*0.4 = 0.5
    pairs = [("pass", "pass")] * 20 + [("pass", "fail")] * 5 + [("fail", "pass")] * 10 + [("fail", "fail")] * 15
    assert accuracy(pairs) == pytest.approx(0.7)
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    # po = 0.6; both say pass 3 times in 5: pe = 0.36 + 0.16 = 0.52; kappa = 0.08 / 0.48
    five = [("pass", "pass"), ("pass", "pass"), ("pass", "fail"), ("fail", "fail"), ("fail", "pass")]
    assert cohen_kappa(five) == pytest.approx(1 / 6)
    assert cohen_kappa([("pass", "pass"), ("fail", "fail")]) == pytest.approx(1.0)
    assert cohen_kappa([("pass", "fail"), ("fail", "pass")]) == pytest.approx(-1.0)
    assert cohen_kappa([("pass", "pass")] * 4) is None  # one verdict throughout: undefined


def test_flip_rate_counts_items_whose_samples_disagree():
    assert flip_rate([["pass"] * 3, ["pass", "fail", "pass"], ["fail"] * 3, ["fail", "pass", None]]) == 0.5
    assert flip_rate([["pass"], ["fail"]]) == 0.0


def test_a_sample_without_a_verdict_is_no_answer_not_a_flip():
    assert flip_rate([[None, "pass", "pass"], ["fail", None], [None, None]]) == 0.0
    assert flip_rate([[None, "pass", "fail"], ["pass", "pass"]]) == 0.5


def test_an_item_cut_short_by_a_failed_call_is_counted_apart_and_in_no_figure():
    labels = {
        "criteria": {"c": "criterion"},
        "outputs": [
            {"file": f, "labels": {"c": {"verdict": v}}} for f, v in [("a", "pass"), ("b", "fail"), ("e", "pass")]
        ],
    }
    # e's first sample said fail (against its label), then its next call failed
    verdicts = {("a", "c"): ["pass", "pass"], ("b", "c"): ["fail", "fail"], ("e", "c"): ["fail"]}
    (whole,) = score(labels, verdicts)
    assert (whole.answered, whole.cut_short, whole.accuracy) == (3, 0, pytest.approx(2 / 3))
    (s,) = score(labels, verdicts, cut_short={("e", "c")})
    assert (s.items, s.answered, s.cut_short) == (3, 2, 1)
    assert s.accuracy == 1.0 and s.kappa == pytest.approx(1.0) and s.flip_rate == 0.0


def test_the_labelled_set_has_every_fault_kind_with_reasons():
    labels = yaml.safe_load((JUDGE_DATA / "labels.yaml").read_text(encoding="utf-8"))
    assert 20 <= len(labels["outputs"]) <= 40
    assert set(labels["criteria"]) == {"not-circular", "compares", "related-in-plan", "right-category"}
    for entry in labels["outputs"]:
        assert (JUDGE_DATA / "outputs" / entry["file"]).is_file()
        assert set(entry["labels"]) == set(labels["criteria"])
        for criterion, label in entry["labels"].items():
            assert label["verdict"] in ("pass", "fail") and label["reason"]
            assert (label["verdict"] == "fail") == (criterion in entry["planted"])
    for criterion in labels["criteria"]:
        fails = [e for e in labels["outputs"] if e["labels"][criterion]["verdict"] == "fail"]
        assert len(fails) == 6


def calibrate_four_outputs(tmp_path: Path, criteria: tuple[str, ...], answers: str) -> int:
    """The calibration command on four of the labelled outputs and ``criteria``, three samples
    each, against the loopback judge scripted with ``answers`` (YAML); its exit code."""
    full = yaml.safe_load((JUDGE_DATA / "labels.yaml").read_text(encoding="utf-8"))
    keep = ("quorum.good.md", "quorum.fault.md", "backpressure.good.md", "backpressure.fault.md")
    small = {
        "plan": "plan.md",
        "criteria": {k: full["criteria"][k] for k in criteria},
        "outputs": [
            {**e, "labels": {k: e["labels"][k] for k in criteria}} for e in full["outputs"] if e["file"] in keep
        ],
    }
    shutil.copytree(JUDGE_DATA / "outputs", tmp_path / "set" / "outputs")
    shutil.copy(JUDGE_DATA / "plan.md", tmp_path / "set" / "plan.md")
    labels = tmp_path / "set" / "labels.yaml"
    labels.write_text(yaml.safe_dump(small), "utf-8")
    (tmp_path / "answers.yaml").write_text(answers, "utf-8")
    args = ["--labels", str(labels), "--samples", "3", "--loopback", str(tmp_path / "answers.yaml"), "--workers", "2"]
    return calibration.main(args)


def test_the_calibration_command_prints_accuracy_kappa_and_flip_rate(tmp_path, capsys, monkeypatch):
    """Four outputs, two criteria, three samples; the loopback judge is scripted to get two
    'compares' items wrong, both by a 2-1 vote. By hand for 'compares': labels P F P P, judge
    P P F P: accuracy 0.5, pe = 3/4*3/4 + 1/4*1/4 = 0.625, kappa = (0.5 - 0.625) / 0.375 = -1/3,
    flip rate 2/4."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    answers = "quorum.fault.md: {compares: [pass, pass, fail]}\nbackpressure.good.md: {compares: [fail, fail, pass]}\n"

    code = calibrate_four_outputs(tmp_path, ("not-circular", "compares"), answers)

    out = capsys.readouterr().out.splitlines()
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out[1:3]}
    assert rows["not-circular"] == ["4", "4", "0", "1.000", "1.000", "0.000"]
    assert rows["compares"] == ["4", "4", "0", "0.500", "-0.333", "0.500"]
    assert out[3].startswith("24 judge calls to the loopback server")


def test_a_failed_judge_call_cuts_its_item_short_and_is_no_flip(tmp_path, capsys, monkeypatch):
    """The judge always agrees with the labels, but one item's second sample fails for good
    (HTTP 400): that item is not scored (not a flip, not an answer) and is listed with its error."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    code = calibrate_four_outputs(tmp_path, ("not-circular",), "quorum.good.md: {not-circular: [pass, error]}\n")

    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[1].split() == ["not-circular", "4", "3", "1", "1.000", "1.000", "0.000"]
    assert out[2].startswith("cut short (not scored): quorum.good.md / not-circular: ")
    assert "scripted error" in out[2]
    assert out[3].startswith("11 judge calls to the loopback server (scripted verdicts), 1 failed")


def test_under_xdist_the_controller_judges_the_drafts_and_the_workers_replay(project, fake):
    judge = install(fake)
    judge.set("beta.md", fails("Beta is defined by Beta", 9))
    given_rows_with_a_judge(project, "alpha", "beta")

    result = project.run("-n", "2", "-p", "no:randomly")

    assert result.outcomes()[item("alpha.md")] == "passed", result.stdout.str()
    assert result.outcomes()[item("beta.md")] == "failed"
    assert "Beta is defined by Beta" in project.notes()["beta.md"]
    assert len(judge.judge_calls()) == 2  # once per row, by the controller; the workers replayed
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "pending"}


@pytest.mark.parametrize("rows_before", ["complete", "pending"])
def test_a_replay_under_xdist_counts_the_judge_calls_as_a_run_without_it(project, fake, monkeypatch, rows_before):
    # complete rows: only the workers judge (they replay), and the controller counted none of
    # it; pending rows: the controller judges the drafts it regenerates and the workers replay
    # the last verdict again, which a run without xdist takes from its memo (no second call)
    router(fake).set("beta.md", Reply.ok(draft("Beta", extra="Beta is beta.\n")), Reply.ok(draft("Beta")))
    judge = install(fake)
    judge.set("beta.md", fails("Beta is defined by Beta", 14), passes())
    rows = rows_for("alpha", "beta")
    given_rows_with_a_judge(project, "alpha", "beta")
    assert project.run().ret == 0
    recorded = project.read()
    go_offline(fake, monkeypatch)

    def replay(*args: str) -> tuple[dict, str, dict]:
        if rows_before == "pending":
            project.reset(rows)
            given_rows_with_a_judge(project, "alpha", "beta")
        else:
            project.write("plan.md", recorded)
        result = project.run("--batch-report", "r.json", *args)
        assert result.ret == 0, result.stdout.str()
        [total] = [line for line in result.stdout.lines if line.startswith("total:")]
        report = json.loads(project.read("r.json"))
        calls = {
            r["filename"]: [(a["check"], a["sample"], a["call"], a["verdict"]) for a in r["judge_attempts"]]
            for r in report["plans"][0]["rows"]
        }
        return report["totals"], total, calls

    serial, xdist = replay(), replay("-n", "2", "-p", "no:randomly")

    totals, total, calls = serial
    assert totals["judge_calls"] == totals["judge_calls_replayed"] == (2 if rows_before == "complete" else 3)
    assert f"{totals['judge_calls']} judge calls (0 live, {totals['judge_calls']} replayed)" in total
    assert totals["replay_saved_usd"] > 0
    assert xdist[1] == total  # the summary: the rows, calls, judge calls, tokens and cost
    assert xdist[2] == calls  # each row's judge attempts
    keys = ("judge_calls", "judge_calls_live", "judge_calls_replayed", "judge_cost_usd", "replay_saved_usd", "calls")
    assert {k: xdist[0][k] for k in keys} == {k: totals[k] for k in keys}


def test_a_corrupt_judge_recording_is_a_failure_naming_the_file(project, fake, monkeypatch):
    install(fake)
    given_rows_with_a_judge(project, "alpha")
    project.run()
    project.write("cassettes/plan/alpha.md.judge.yaml", "interactions: [\n")
    go_offline(fake, monkeypatch)

    result = project.run("--batch-validate-only")

    assert result.outcomes()[item("alpha.md")] == "failed"
    assert "cassettes/plan/alpha.md.judge.yaml" in result.failure(item("alpha.md"))
    assert "is not valid YAML" in result.failure(item("alpha.md"))


@pytest.mark.parametrize("where", ["process", "thread"])
def test_judge_calls_run_as_many_at_once_as_the_concurrency(project, fake, where):
    # each draft's checks wait for its judge call: the threads that run them were the
    # executor's default (6 on 2 cores), which held --batch-concurrency 10 to 6 judge calls
    names = [f"row-{i:02d}" for i in range(10)]
    judge = install(fake)
    given_rows_with_a_judge(project, *names, ini_extra=f"batchgen_sender = {where}\n")
    for name in names:
        judge.set(f"{name}.md", dataclasses.replace(passes(), delay=1.5))

    result = project.run("--batch-concurrency", "10")

    assert result.ret == 0, result.stdout.str()
    assert fake.wait_idle()
    calls = [e for e in fake.messages_requests() if is_judge(e.body)]
    assert len(calls) == 10
    edges = sorted([(e.started, 1) for e in calls] + [(e.finished, -1) for e in calls])
    in_flight = list(itertools.accumulate(step for _, step in edges))
    assert max(in_flight) == 10


def test_a_listed_output_edited_by_hand_stays_registered_while_its_judge_has_no_verdict(project, fake, monkeypatch):
    # the read-only CI gate after a typo fix: the judge's item is skipped (no recorded verdict
    # for this version), which must not fail the registration as "fails its other checks"
    install(fake)
    given_rows_with_a_judge(project, "alpha", "beta", line=JUDGE_LINE + "6. Output registered in `output/INDEX.md`\n")
    assert project.run().ret == 0
    assert set(project.statuses().values()) == {"complete"}
    project.write("output/alpha.md", project.output("alpha.md").replace("details text.", "details text, fixed."))
    project.write("output/gamma.md", draft("Gamma"))  # not a row's output: nothing to do with it
    go_offline(fake, monkeypatch)

    result = project.run("--batch-readonly")

    assert result.outcomes()[item("alpha.md")] == "skipped"
    assert result.outcomes()["alpha.md::registered"] == "passed", result.failure("alpha.md::registered")
    assert result.outcomes()["beta.md::registered"] == "passed"
    assert result.ret == 0


def test_an_output_whose_judge_has_no_verdict_is_not_registered_and_its_check_is_skipped(project, fake, monkeypatch):
    install(fake)
    given_rows_with_a_judge(project, "alpha", line=JUDGE_LINE + "6. Output registered in `output/INDEX.md`\n")
    project.write("output/alpha.md", draft("Alpha"))  # written by hand: never judged, not listed
    go_offline(fake, monkeypatch)

    result = project.run("--batch-validate-only")

    assert result.outcomes()["alpha.md::registered"] == "skipped"
    assert "a judge rule has no verdict on this output yet" in result.skip_reasons()["alpha.md::registered"]
    assert not (project.path / "output" / "INDEX.md").exists() or "alpha.md" not in project.read("output/INDEX.md")


def test_registration_waits_for_the_judge(project, fake):
    judge = install(fake)
    judge.set("beta.md", fails("Beta is defined by Beta", 9))
    given_rows_with_a_judge(project, "alpha", "beta", line=JUDGE_LINE + "6. Output registered in `output/INDEX.md`\n")

    result = project.run()

    assert result.outcomes()["alpha.md::registered"] == "passed"
    assert result.outcomes()["beta.md::registered"] == "failed"
    assert "registered once its other checks pass" in result.failure("beta.md::registered")
    index = project.read("output/INDEX.md")
    assert "alpha.md" in index and "beta.md" not in index


# -- a verdict-less answer recorded before such answers were refused -----------------------------

OTHER = "the Summary says what the term is for"
OTHER_LINE = f"6. Judge (sonnet): {OTHER}\n"


def test_a_recorded_answer_without_a_verdict_is_asked_again_where_the_run_may_record(project, fake):
    """Answers without a verdict were recorded before 3693959; such an answer in a judge cassette
    was replayed by every run ("the judge gave no usable verdict"), the judge never asked again,
    though the README says the next run asks. Only that answer is dropped: the row's other
    rule keeps its recorded verdict (a judge cassette holds every rule's verdicts)."""
    judge = install(fake)
    given_rows_with_a_judge(project, "alpha", line=JUDGE_LINE + OTHER_LINE)
    assert project.run().ret == 0
    assert len(judge.judge_calls("alpha.md")) == 2
    # the first rule's verdict becomes a text-only answer, as an older run recorded it
    path = project.cassette_dir() / "alpha.md.judge.yaml"
    recorded = yaml.safe_load(path.read_text(encoding="utf-8"))
    [ours] = [i for i in recorded["interactions"] if CRITERION in i["request"]["body"]]
    reply = json.loads(ours["response"]["body"]["string"])
    reply["content"], reply["stop_reason"] = [{"type": "text", "text": "PASS"}], "end_turn"
    ours["response"]["body"]["string"] = json.dumps(reply)
    path.write_text(yaml.safe_dump(recorded), encoding="utf-8")

    # a run that may not record replays it: no usable verdict, and no call
    checked = project.run("--batch-validate-only")
    assert checked.outcomes()[item("alpha.md")] == "failed"
    assert "the judge gave no usable verdict" in checked.failure(item("alpha.md"))
    assert len(judge.judge_calls("alpha.md")) == 2

    # a run that may record asks the judge again, for that rule only, and records its verdict
    result = project.run()

    assert result.outcomes()[item("alpha.md")] == "passed", result.stdout.str()
    assert [criterion_of(b) for b in judge.judge_calls("alpha.md")[2:]] == [CRITERION]
    answers = {
        CRITERION if CRITERION in i["request"]["body"] else OTHER: json.loads(i["response"]["body"]["string"])
        for i in judge_cassette(project, "alpha.md")
    }
    assert len(judge_cassette(project, "alpha.md")) == 2
    assert [b["type"] for b in answers[CRITERION]["content"]] == ["tool_use"]
    assert [b["type"] for b in answers[OTHER]["content"]] == ["tool_use"]
    # and the next run replays both verdicts
    assert project.run().ret == 0
    assert len(judge.judge_calls("alpha.md")) == 3
