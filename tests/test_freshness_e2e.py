"""Issue 15 end to end: a plan change makes rows stale; the dry run prices regenerating them; the
CI gate fails; regenerating them against the loopback server leaves a before/after report and a
step summary; a regenerated row that now fails is a regression.

The project is the generation tests' (``genhelpers``): three haiku rows, recorded first by a
real run against the loopback API (``fake``), whose token accounting is characters / 4 with the
shared prefix cached, and whose per-row replies are scripted by a ``Router``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml  # (also: in-process generations, see tests/test_init.py)
from fakeapi import FakeAnthropic, Reply
from genhelpers import (
    REFERENCE_MARKER,
    bad_value,
    draft,
    requests_by_row,
    router,
    rows_for,
)
from harness import Project, Run

ROWS = rows_for("alpha", "beta", "gamma")
NAMES = [r.filename for r in ROWS]
#: scripted output usage of every reply: the estimate must carry the recorded one over
SCRIPTED = {"output_tokens": 1500}


def recorded(project: Project, fake: FakeAnthropic) -> None:
    """Every row generated, recorded and complete (one request in flight at a time)."""
    for r in ROWS:
        router(fake).set(r.filename, Reply.ok(draft(r.title), usage=SCRIPTED))
    result = project.run("--batch-concurrency", "1")
    assert result.ret == 0, result.stdout.str()
    assert project.statuses() == dict.fromkeys(NAMES, "complete")


def table_rows(result: Run) -> dict[str, list[str]]:
    """The dry run's freshness table: filename -> its cells."""
    out = {}
    for line in result.stdout.lines:
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] in NAMES:
            out[cells[0]] = cells
    return out


def estimated_total(result: Run, what: str) -> float:
    line = next(ln for ln in result.stdout.lines if ln.startswith("to regenerate the") and what in ln)
    return float(re.search(r"~\$([0-9.]+)", line).group(1))


def change_reference(project: Project) -> None:
    project.edit("output/reference.md", REFERENCE_MARKER, REFERENCE_MARKER + " " + "A longer reference now. " * 40)


@pytest.fixture
def stale_project(project: Project, fake: FakeAnthropic) -> Project:
    project.write_rows(ROWS)
    recorded(project, fake)
    return project


def test_the_commands_to_regenerate_stale_rows_carry_the_key_a_keyless_run_lacks(stale_project, monkeypatch):
    # regenerating calls the model: run as printed, without a key, the command would only miss
    project = stale_project
    change_reference(project)
    monkeypatch.delenv("ANTHROPIC_API_KEY")

    gate = project.run("--batch-fail-stale", "--batch-readonly")

    fix = "ANTHROPIC_API_KEY=sk-ant-... pytest --batch-plan plan.md --batch-regenerate-stale"
    assert f"Regenerate it: {fix}" in gate.failure("alpha.md::fresh")
    gate.stdout.fnmatch_lines([f"  to regenerate them: {fix}"])
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "a-token")  # the SDK's other credential: no placeholder
    again = project.run("--batch-fail-stale", "--batch-readonly")
    assert "Regenerate it: pytest --batch-plan plan.md --batch-regenerate-stale" in again.failure("alpha.md::fresh")


def test_a_row_generated_again_after_its_old_recording_is_fresh(stale_project, fake):
    # record mode new_episodes (the default with a key) appends the new generation after the
    # old one: the output was made by the latest, which is today's request
    project = stale_project
    alpha = next(r for r in ROWS if r.filename == "alpha.md")
    project.edit(
        "plan.md", f"| {alpha.title} | alpha.md | haiku | complete |", "| Alpha Two | alpha.md | haiku | pending |"
    )
    (project.path / "output" / "alpha.md").unlink()  # so the pending row is sent again
    router(fake).set("alpha.md", Reply.ok(draft("Alpha Two"), usage=SCRIPTED))

    assert project.run("--batch-concurrency", "1").ret == 0
    assert len(project.cassette_bodies("alpha.md")) == 2  # the old generation, then today's

    gate = project.run("--batch-fail-stale", "--batch-readonly")
    assert gate.outcomes()["alpha.md::fresh"] == "passed", gate.failure("alpha.md::fresh")
    project.edit("plan.md", "| Alpha Two |", "| Alpha Three |")  # and a change after it is stale
    assert "the title changed" in project.run("--batch-fail-stale", "--batch-readonly").failure("alpha.md::fresh")


def test_a_recorded_run_is_fresh_and_a_reference_change_makes_every_row_stale(stale_project: Project):
    project = stale_project
    fresh = project.run("--batch-dry-run")
    assert fresh.ret == 0
    rows = table_rows(fresh)
    assert {name: cells[2] for name, cells in rows.items()} == dict.fromkeys(NAMES, "fresh")

    change_reference(project)
    dry = project.run("--batch-dry-run")
    assert dry.ret == 0
    rows = table_rows(dry)
    assert {name: cells[2:4] for name, cells in rows.items()} == {n: ["stale", "format reference"] for n in NAMES}
    assert all(cells[4] == "recorded" for cells in rows.values())
    dry.stdout.fnmatch_lines(["to regenerate the 3 stale row(s): ~$* (--batch-regenerate-stale)"])
    # nothing pending: no prompt is printed, nothing was written
    dry.stdout.fnmatch_lines(["*dry run: 0 pending row(s); nothing sent, nothing written*"])


def test_the_gate_fails_every_stale_row_with_its_reasons_and_writes_nothing(stale_project: Project):
    project = stale_project
    change_reference(project)
    before = project.snapshot()
    gate = project.run("--batch-fail-stale", "--batch-readonly", "--batch-report", "gate.json", "-v")
    assert gate.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = gate.outcomes()
    assert {k: v for k, v in outcomes.items() if k.endswith("::fresh")} == {f"{n}::fresh": "failed" for n in NAMES}
    assert all(v == "passed" for k, v in outcomes.items() if not k.endswith("::fresh"))
    message = gate.failure("alpha.md::fresh")
    assert "output/alpha.md: stale: the format reference changed since it was generated" in message
    assert "--batch-regenerate-stale" in message
    gate.stdout.fnmatch_lines(
        ["*pytest-batchgen: freshness*", "freshness: 3 stale", "  stale: plan.md::alpha.md (format reference)"]
    )
    assert project.snapshot() == {**before, "gate.json": project.snapshot()["gate.json"]}
    doc = json.loads(project.read("gate.json"))
    rows = {r["filename"]: r for r in doc["plans"][0]["rows"]}
    stale = {"state": "stale", "reasons": ["format reference"], "recording": "differs"}
    assert {n: rows[n]["freshness"] for n in NAMES} == {n: stale for n in NAMES}
    assert doc["totals"]["freshness"] == {"stale": 3}
    # -k selects the gate alone
    only = project.run("--batch-fail-stale", "--batch-readonly", "-k", "fresh")
    assert only.counts() == {"failed": 3, "deselected": 12}


def test_regenerating_the_stale_rows_costs_what_the_dry_run_said_and_reports_before_and_after(
    stale_project: Project, fake: FakeAnthropic
):
    project = stale_project
    old_alpha = project.output("alpha.md")
    change_reference(project)
    estimate = estimated_total(project.run("--batch-dry-run"), "stale")

    fake.requests.clear()
    for r in ROWS:
        router(fake).set(r.filename, Reply.ok(draft(r.title, extra="Regenerated.\n"), usage=SCRIPTED))
    run = project.run(
        "--batch-regenerate-stale",
        "--batch-concurrency",
        "1",
        "--batch-report",
        "report.json",
        "--batch-summary",
        "summary.md",
    )
    assert run.ret == 0, run.stdout.str()
    assert {k: len(v) for k, v in requests_by_row(fake).items()} == dict.fromkeys(NAMES, 1)
    doc = json.loads(project.read("report.json"))
    spent = doc["totals"]["cost_usd"]
    assert spent > 0
    assert abs(estimate - spent) <= 0.10 * spent, (estimate, spent)

    rows = {r["filename"]: r for r in doc["plans"][0]["rows"]}
    alpha = rows["alpha.md"]
    assert alpha["freshness"] == {"state": "fresh", "reasons": [], "recording": "matches"}
    base = alpha["baseline"]
    assert base["freshness_before"]["reasons"] == ["format reference"]
    assert base["before"]["verdict"] == "passed" and base["before"]["failed_checks"] == []
    assert base["after"]["verdict"] == "passed" and base["after"]["failed_checks"] == []
    assert base["before"]["usage"]["output_tokens"] == 1500 and base["after"]["usage"]["output_tokens"] == 1500
    assert base["before"]["cost_usd"] > 0 and base["after"]["cost_usd"] > 0
    assert base["regression"] is False
    assert "+Regenerated.\n" in base["diff"] and base["diff"].startswith(
        "--- a/output/alpha.md\n+++ b/output/alpha.md\n"
    )
    assert project.output("alpha.md") == draft("Alpha", extra="Regenerated.\n") != old_alpha
    assert doc["totals"]["regressions"] == []

    summary = project.read("summary.md")
    assert "Freshness: 3 fresh." in summary
    assert "<summary>plan.md::alpha.md: passed → passed; stale: format reference; cost $" in summary
    assert "```diff\n--- a/output/alpha.md" in summary and "+Regenerated." in summary
    # the recordings were replaced: the gate passes now, offline
    assert project.run("--batch-fail-stale", "--batch-readonly").ret == 0


def test_step_summary_goes_to_github_step_summary(stale_project: Project, monkeypatch: pytest.MonkeyPatch):
    project = stale_project
    change_reference(project)
    step = project.path / "step.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    assert project.run("--batch-fail-stale", "--batch-readonly").ret == pytest.ExitCode.TESTS_FAILED
    text = step.read_text()
    assert text.startswith("earlier step\n## pytest-batchgen\n")  # appended
    assert "| plan.md | alpha.md | claude-haiku-5-5 | complete → complete | failed | stale (format reference) |" in text


def test_a_regenerated_row_that_now_fails_is_a_regression(stale_project: Project, fake: FakeAnthropic):
    project = stale_project
    old_beta = project.output("beta.md")
    change_reference(project)
    router(fake).set("beta.md", Reply.ok(bad_value("Beta")))  # every attempt: category Z
    args = ("--batch-regenerate-stale", "--batch-concurrency", "1", "--batch-report", "report.json")
    run = project.run(*args, "--batch-fail-on-regression", "--batch-summary", "summary.md")
    assert run.ret == pytest.ExitCode.TESTS_FAILED
    # the passing output was kept (drafts aside): its checks pass, the regression fails the run
    assert project.output("beta.md") == old_beta
    assert all(v == "passed" for v in run.outcomes().values())
    run.stdout.fnmatch_lines(
        ["REGRESSION: plan.md::beta.md: passed -> failed, previous output kept (failed: category-value)"]
    )
    doc = json.loads(project.read("report.json"))
    beta = {r["filename"]: r for r in doc["plans"][0]["rows"]}["beta.md"]["baseline"]
    assert beta["regression"] is True
    assert beta["after"] | {"usage": None, "cost_usd": None} == {
        "verdict": "failed",
        "failed_checks": ["category-value"],
        "outcome": "failed",
        "usage": None,
        "cost_usd": None,
        "kept_previous": True,
        "wrote": True,
    }
    assert "-category: A\n+category: Z\n" in beta["diff"]
    assert doc["totals"]["regressions"] == ["plan.md::beta.md"]
    assert ":x: 1 regression(s)" in project.read("summary.md")


def keep_beta_over_a_failed_regeneration(project: Project, fake: FakeAnthropic) -> None:
    """Change the format reference and regenerate the stale rows; beta's new draft (and its
    repair) fail their checks, so beta's output stays the old generation's reply."""
    old_beta = project.output("beta.md")
    change_reference(project)
    router(fake).set("beta.md", Reply.ok(bad_value("Beta")))
    project.run("--batch-regenerate-stale", "--batch-concurrency", "1")
    assert project.output("beta.md") == old_beta


def test_an_output_kept_over_a_failed_regeneration_stays_stale(stale_project: Project, fake: FakeAnthropic):
    # today's generation is recorded, its draft failed its checks and waits in .batchgen-drafts/:
    # the output is still the old format's. Before, the row was fresh (its recording opened with
    # today's request) and the gate passed it. The old generation stays ahead of today's (see
    # the fresh checkout's test below), and names what changed.
    project = stale_project
    keep_beta_over_a_failed_regeneration(project, fake)
    assert len(project.cassette_bodies("beta.md")) == 3  # the old request, today's and its repair

    gate = project.run("--batch-fail-stale", "--batch-readonly")

    assert gate.outcomes()["beta.md::fresh"] == "failed"
    assert KEPT_STALE in gate.failure("beta.md::fresh")
    assert gate.outcomes()["alpha.md::fresh"] == "passed"  # regenerated, and its draft replaced it
    gate.stdout.fnmatch_lines(["*freshness: 2 fresh, 1 stale*"])


def test_an_output_kept_over_a_failed_regeneration_appended_after_it_is_stale(stale_project: Project):
    # record mode new_episodes appends a generation of today's request after the old one; its
    # draft failed, so the output is still the old one's reply, which names what changed
    from pytest_batchgen.plan import load_plan
    from pytest_batchgen.prompts import build_prompt
    from pytest_batchgen.settings import DEFAULT_MAX_TOKENS

    project = stale_project
    old = project.interactions("beta.md")
    change_reference(project)
    plan = load_plan(project.path / "plan.md", project.path)
    params = build_prompt(plan, next(r for r in plan.rows if r.filename == "beta.md"), DEFAULT_MAX_TOKENS).params()
    reply = json.loads(old[0]["response"]["body"]["string"])
    reply["content"] = [{"type": "text", "text": bad_value("Beta")}]
    today = {
        "request": {**old[0]["request"], "body": json.dumps(params, separators=(",", ":"))},
        "response": {**old[0]["response"], "body": {"string": json.dumps(reply)}},
    }
    project.cassette("beta.md").write_text(yaml.safe_dump({"interactions": [*old, today], "version": 1}))

    gate = project.run("--batch-fail-stale", "--batch-readonly", "plan.md::beta.md")

    assert (
        "stale: the format reference changed since it was generated (a generation of today's prompt "
        "was recorded, but its draft did not replace this output)"
    ) in gate.failure("beta.md::fresh")
    # and once the output is that generation's reply, the row is fresh
    project.write("output/beta.md", bad_value("Beta"))
    assert (
        project.run("--batch-fail-stale", "--batch-readonly", "plan.md::beta.md").outcomes()["beta.md::fresh"]
        == "passed"
    )


def test_an_edited_output_kept_over_a_failed_re_recording_is_stale_while_the_draft_waits(
    stale_project: Project, fake: FakeAnthropic
):
    # an output edited by hand is none of the recorded replies: while the failed draft of
    # today's prompt waits beside it, the row is stale with the reason 'output'
    project = stale_project
    project.edit("output/beta.md", "Beta: details text.", "Beta: details text, edited by hand.")
    edited = project.output("beta.md")
    change_reference(project)
    router(fake).set("beta.md", Reply.ok(bad_value("Beta")))
    project.run("--batch-record-mode", "all", "plan.md::beta.md")
    assert project.output("beta.md") == edited
    assert (project.path / "output" / ".batchgen-drafts" / "beta.md").exists()

    gate = project.run("--batch-fail-stale", "--batch-readonly")

    assert gate.outcomes()["beta.md::fresh"] == "failed"
    assert (
        "stale: the output is not a reply recorded for today's prompt (the draft of today's prompt "
        "failed its checks and waits in output/.batchgen-drafts/beta.md)"
    ) in gate.failure("beta.md::fresh")


KEPT_STALE = (
    "stale: the format reference changed since it was generated (a generation of today's prompt "
    "was recorded, but its draft did not replace this output)"
)


def fresh_checkout(project: Project) -> None:
    """What CI checks out: no .batchgen-drafts/ (it is gitignored)."""
    shutil.rmtree(project.path / "output" / ".batchgen-drafts", ignore_errors=True)


@pytest.mark.parametrize("how", ["regenerate-stale", "record-mode-all"])
def test_an_output_kept_over_a_failed_regeneration_is_stale_in_a_fresh_checkout(
    stale_project: Project, fake: FakeAnthropic, how: str
):
    # The regeneration's recording replaced the old one, whose reply the kept output is: without
    # the waiting draft (a fresh checkout) the output looked like an edit by hand, and the gate
    # called the old format's output fresh. The old generation now stays in the cassette, ahead
    # of the failed one, until a new draft replaces the output.
    project = stale_project
    old_beta = project.output("beta.md")
    old_interactions = project.interactions("beta.md")
    change_reference(project)
    router(fake).set("beta.md", Reply.ok(bad_value("Beta")))
    fake.reset_log()
    if how == "regenerate-stale":
        project.run("--batch-regenerate-stale", "--batch-concurrency", "1")
    else:
        project.run("--batch-record-mode", "all", "--batch-concurrency", "1")
    assert project.output("beta.md") == old_beta
    # nothing was replayed: the old request went out no more than today's draft and repair did
    assert len(requests_by_row(fake)["beta.md"]) == 2
    assert project.interactions("beta.md")[:1] == old_interactions
    assert len(project.cassette_bodies("beta.md")) == 3  # the old generation, today's draft and its repair
    # the rows whose new draft passed hold their new generation alone, as before
    for row in ROWS:
        if row.filename != "beta.md":
            assert project.output(row.filename) == draft(row.title)
            assert len(project.cassette_bodies(row.filename)) == 1
    fresh_checkout(project)

    gate = project.run("--batch-fail-stale", "--batch-readonly")

    assert gate.ret == pytest.ExitCode.TESTS_FAILED
    assert gate.outcomes()["beta.md::fresh"] == "failed"
    assert KEPT_STALE in gate.failure("beta.md::fresh")
    gate.stdout.fnmatch_lines(["*freshness: 2 fresh, 1 stale*"])

    # the plan change reverted: the kept output is the reply of the old generation, today's again
    project.edit("output/reference.md", " " + "A longer reference now. " * 40, "")
    assert project.run("--batch-fail-stale", "--batch-readonly").outcomes()["beta.md::fresh"] == "passed"


def test_an_output_kept_over_a_refused_regeneration_is_stale(stale_project: Project, fake: FakeAnthropic):
    # a refusal writes no draft: even in the same checkout, nothing said the output was kept
    project = stale_project
    old_beta = project.output("beta.md")
    change_reference(project)
    router(fake).set("beta.md", Reply.refused())
    project.run("--batch-regenerate-stale", "--batch-concurrency", "1", "plan.md::beta.md")
    assert project.output("beta.md") == old_beta
    assert not (project.path / "output" / ".batchgen-drafts" / "beta.md").exists()

    gate = project.run("--batch-fail-stale", "--batch-readonly", "plan.md::beta.md")

    assert gate.outcomes()["beta.md::fresh"] == "failed"
    assert KEPT_STALE in gate.failure("beta.md::fresh")

    # a later regeneration whose draft passes leaves only its own generation
    router(fake).set("beta.md", Reply.ok(draft("Beta")))
    project.run("--batch-regenerate-stale", "--batch-concurrency", "1", "plan.md::beta.md")
    bodies = project.cassette_bodies("beta.md")
    assert len(bodies) == 1 and "A longer reference now." in json.dumps(bodies[0])
    assert project.run("--batch-fail-stale", "--batch-readonly").outcomes()["beta.md::fresh"] == "passed"


def test_a_failed_re_recording_of_an_unchanged_row_replays_nothing_and_stays_fresh(
    stale_project: Project, fake: FakeAnthropic
):
    # record mode all with no plan change: the old request is today's, byte for byte; kept in
    # the cassette, it must not be replayed as the new generation's reply
    project = stale_project
    old_beta = project.output("beta.md")
    old_interactions = project.interactions("beta.md")
    router(fake).set("beta.md", Reply.ok(bad_value("Beta")))
    fake.reset_log()

    project.run("--batch-record-mode", "all", "plan.md::beta.md")

    assert len(requests_by_row(fake)["beta.md"]) == 2  # both attempts went out live
    assert project.output("beta.md") == old_beta
    bodies = project.cassette_bodies("beta.md")
    assert len(bodies) == 3 and bodies[0] == bodies[1]  # the old generation's request is today's
    assert project.interactions("beta.md")[:1] == old_interactions
    fresh_checkout(project)
    gate = project.run("--batch-fail-stale", "--batch-readonly", "plan.md::beta.md")
    assert gate.outcomes()["beta.md::fresh"] == "passed"  # the output is a reply to today's request


def test_a_stale_row_whose_regeneration_wrote_nothing_is_not_a_regression(stale_project: Project, fake: FakeAnthropic):
    # the API failed (or a replay missed): no new draft, the passing output is as it was
    project = stale_project
    old_beta = project.output("beta.md")
    change_reference(project)
    router(fake).set("beta.md", Reply.server_error())

    run = project.run("--batch-regenerate-stale", "--batch-concurrency", "1", "--batch-fail-on-regression")

    assert project.output("beta.md") == old_beta
    assert run.outcomes()["beta.md::generate"] == "failed"
    run.stdout.fnmatch_lines(
        ["not regenerated: plan.md::beta.md: passed -> failed, the output is as it was (failed: generate)"]
    )
    assert "REGRESSION" not in run.stdout.str()


def test_without_the_flag_a_regression_is_reported_but_does_not_fail(stale_project: Project, fake: FakeAnthropic):
    project = stale_project
    change_reference(project)
    router(fake).set("beta.md", Reply.ok(bad_value("Beta")))
    run = project.run("--batch-regenerate-stale", "--batch-concurrency", "1")
    assert run.ret == 0
    run.stdout.fnmatch_lines(["REGRESSION: plan.md::beta.md: passed -> failed*"])


def test_regenerate_stale_leaves_fresh_rows_alone(stale_project: Project, fake: FakeAnthropic):
    project = stale_project
    project.edit("plan.md", "| Beta |", "| Beta, Renamed |")
    fake.requests.clear()
    run = project.run("--batch-regenerate-stale", "--batch-dry-run")
    assert table_rows(run)["beta.md"][2:4] == ["stale", "title"]
    assert table_rows(run)["alpha.md"][2] == "fresh"
    run = project.run("--batch-regenerate-stale", "-v")
    assert run.ret == 0
    assert list(requests_by_row(fake)) == ["beta.md"]
    assert "beta.md::generate" in run.outcomes() and "alpha.md::generate" not in run.outcomes()


def test_regenerate_stale_with_readonly_is_a_usage_error(stale_project: Project):
    run = stale_project.run("--batch-regenerate-stale", "--batch-readonly")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    run.stderr.fnmatch_lines(["*--batch-regenerate-stale generates outputs; --batch-readonly makes no model call*"])


def test_record_mode_all_reports_the_baseline_of_a_re_recorded_row(stale_project: Project, fake: FakeAnthropic):
    project = stale_project
    router(fake).set("alpha.md", Reply.ok(draft("Alpha", extra="Again.\n")))
    run = project.run("--batch-record-mode", "all", "plan.md::alpha.md", "--batch-report", "report.json")
    assert run.ret == 0
    rows = {r["filename"]: r for r in json.loads(project.read("report.json"))["plans"][0]["rows"]}
    base = rows["alpha.md"]["baseline"]
    assert base["freshness_before"]["state"] == "fresh"
    assert (base["before"]["verdict"], base["after"]["verdict"]) == ("passed", "passed")
    assert "+Again." in base["diff"]
    assert rows["beta.md"]["baseline"] is None  # not regenerated


def test_a_failing_output_regenerated_is_an_improvement_not_a_regression(project: Project, fake: FakeAnthropic):
    project.write_rows(ROWS)
    project.write("output/alpha.md", bad_value("Alpha"))  # hand-written, pending, failing
    run = project.run("--batch-fail-on-regression", "--batch-report", "report.json")
    assert run.ret == 0
    base = {r["filename"]: r for r in json.loads(project.read("report.json"))["plans"][0]["rows"]}["alpha.md"][
        "baseline"
    ]
    assert base["freshness_before"]["state"] == "unrecorded"
    assert base["before"] == {"verdict": "failed", "failed_checks": ["category-value"], "usage": None, "cost_usd": None}
    assert base["after"]["verdict"] == "passed" and base["regression"] is False


def test_regenerate_stale_in_record_mode_none_says_what_changed(stale_project: Project, fake: FakeAnthropic):
    project = stale_project
    change_reference(project)
    fake.requests.clear()
    run = project.run("--batch-regenerate-stale", "--batch-record-mode", "none")
    assert run.ret == pytest.ExitCode.TESTS_FAILED
    assert requests_by_row(fake) == {}
    assert "the format reference changed since it was recorded" in run.failure("alpha.md::generate")


def test_the_gate_under_xdist(stale_project: Project):
    project = stale_project
    project.edit("plan.md", "| Gamma |", "| Gamma Ray |")
    run = project.run("--batch-fail-stale", "--batch-readonly", "-n", "2", subprocess=True)
    assert run.ret == pytest.ExitCode.TESTS_FAILED
    run.stdout.fnmatch_lines(["FAILED plan.md::gamma.md::fresh*stale: the title changed*"])
    assert sum(line.startswith("FAILED") for line in run.stdout.lines) == 1


def test_the_fresh_item_can_be_named_on_the_command_line(stale_project: Project):
    project = stale_project
    project.edit("plan.md", "| Gamma |", "| Gamma Ray |")
    run = project.run("--batch-fail-stale", "--batch-readonly", "plan.md::gamma.md::fresh", "plan.md::alpha.md::fresh")
    assert run.outcomes() == {"gamma.md::fresh": "failed", "alpha.md::fresh": "passed"}


def test_generated_rows_are_judged_as_they_end_and_the_summary_finds_them_judged(
    project: Project, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
):
    """Issue 12: the summary's freshness line judged every generated row again at the end of the
    session (its recording read back: 0.12 s at 1,000 rows, on the run's tail). Each is judged
    once its ``generate`` item ended, its files final (read back, or known from the request it
    recorded first: see the next test); the summary finds them judged."""
    from pytest_batchgen import baseline, freshness

    events: list[str] = []
    real_assess, real_lines = freshness.assess, baseline.summary_lines
    real_sent = freshness.FreshnessBook.sent_as_recorded

    def assess(plan, row, prompt):
        events.append(row.filename)
        return real_assess(plan, row, prompt)

    def sent_as_recorded(book, plan, row):
        events.append(row.filename)
        return real_sent(book, plan, row)

    def summary_lines(state, reports):
        events.append("summary")
        return real_lines(state, reports)

    monkeypatch.setattr(freshness, "assess", assess)
    monkeypatch.setattr(freshness.FreshnessBook, "sent_as_recorded", sent_as_recorded)
    monkeypatch.setattr(baseline, "summary_lines", summary_lines)
    names = ["a-one", "b-two", "c-three"]
    project.write_rows(rows_for(*names))
    for name in names:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title())))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*freshness: 3 fresh*"])
    assert events[-1] == "summary" and sorted(events[:-1]) == [f"{n}.md" for n in names], events


def with_an_older_request(project: Project, filename: str, *, keep_its_own: bool) -> tuple[Path, dict]:
    """The row's recording opens with an older prompt's request (``max_tokens`` one more): put
    ahead of its own interaction, or in its place. The cassette's path and its data as written."""
    cassette = project.cassette(filename)
    data = yaml.safe_load(cassette.read_text())
    own = data["interactions"][0]
    older = json.loads(own["request"]["body"])
    older["max_tokens"] = older["max_tokens"] + 1
    first = {**own, "request": {**own["request"], "body": json.dumps(older)}}
    if keep_its_own:
        data["interactions"].insert(0, first)
    else:
        data["interactions"][0] = first
    cassette.write_text(yaml.safe_dump(data))
    return cassette, data


def recordings_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the recordings the run reads to judge freshness, in order."""
    from pytest_batchgen import freshness

    read: list[str] = []
    real = freshness.read_first_interaction

    def read_first_interaction(path):
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(freshness, "read_first_interaction", read_first_interaction)
    return read


def reported_freshness(project: Project) -> dict[str, dict]:
    """Each row's freshness as the run's JSON report (report.json) gives it."""
    return {r["filename"]: r["freshness"] for p in json.loads(project.read("report.json"))["plans"] for r in p["rows"]}


def test_a_row_recorded_afresh_is_judged_without_reading_its_new_recording(
    project: Project, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
):
    """Issue 12: a generating run wrote each row's new cassette, then read it back to judge the
    row's freshness (83 of the pytest process's 1,054 samples at 1,000 rows). A row that passed,
    whose new recording opens with the request just sent, is fresh with nothing read. Read still:
    a row whose reply was added to an older recording (record mode ``new_episodes``), and a row
    that failed (its draft may wait aside while an older output stays). What the run says must be
    what reading every recording says."""
    from pytest_batchgen import freshness
    from pytest_batchgen.plan import load_plan
    from pytest_batchgen.settings import DEFAULT_MAX_TOKENS

    project.write_rows(ROWS)
    recorded(project, fake)
    # beta's recording holds only an older prompt's request: its new reply is appended to it
    with_an_older_request(project, "beta.md", keep_its_own=False)
    project.cassette("alpha.md").unlink()
    project.cassette("gamma.md").unlink()
    project.reset(ROWS)
    router(fake).set("gamma.md", Reply.ok(bad_value("Gamma")))  # fails every attempt
    read = recordings_read(monkeypatch)

    result = project.run("--batch-report", "report.json", "--batch-summary", "summary.md")

    assert result.ret == 1, result.stdout.str()
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "complete", "gamma.md": "pending"}
    assert len(project.interactions("beta.md")) == 2 and len(project.interactions("alpha.md")) == 1
    assert sorted(read) == ["beta.md.yaml", "gamma.md.yaml"]
    rows = reported_freshness(project)
    plan = load_plan(project.path / "plan.md", project.path)
    book = freshness.FreshnessBook(DEFAULT_MAX_TOKENS)
    assert rows == {r.filename: book.of(plan, r).as_dict() for r in plan.rows}
    assert rows["alpha.md"] == {"state": "fresh", "reasons": [], "recording": "matches"}


def test_a_replayed_row_is_judged_without_reading_its_recording_again(
    project: Project, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
):
    """Issue 12: a replay read each row's cassette to play it, then again to judge its freshness
    (0.1 to 0.2 ms a row). A row whose first request played its recording's first reply has a
    recording that opens with today's request: fresh, with nothing read. A row whose recording
    opens with another request is still read: fresh when today's request follows (a later
    generation, appended), stale when it does not."""
    from pytest_batchgen import freshness
    from pytest_batchgen.plan import load_plan
    from pytest_batchgen.settings import DEFAULT_MAX_TOKENS

    project.write_rows(ROWS)
    recorded(project, fake)
    # beta's recording now opens with another request (its own comes second), as an older
    # prompt recorded first would
    cassette, data = with_an_older_request(project, "beta.md", keep_its_own=True)
    project.reset(ROWS)
    read = recordings_read(monkeypatch)

    # (a step summary: the JSON report then carries each row's freshness)
    result = project.run(
        "--batch-record-mode", "none", "--batch-report", "report.json", "--batch-summary", "summary.md"
    )

    assert result.ret == 0, result.stdout.str()
    assert read == ["beta.md.yaml"]
    result.stdout.fnmatch_lines(["*freshness: 3 fresh*"])  # beta's own request follows the older one
    rows = reported_freshness(project)
    # what reading every recording says now, as a later run would judge them
    plan = load_plan(project.path / "plan.md", project.path)
    book = freshness.FreshnessBook(DEFAULT_MAX_TOKENS)
    assert rows == {r.filename: book.of(plan, r).as_dict() for r in plan.rows}
    assert rows["alpha.md"] == {"state": "fresh", "reasons": [], "recording": "matches"}
    assert rows["beta.md"] == {"state": "fresh", "reasons": [], "recording": "matches"}
    del data["interactions"][1]  # only the older request left: stale, and why
    cassette.write_text(yaml.safe_dump(data))
    later = freshness.FreshnessBook(DEFAULT_MAX_TOKENS).of(plan, plan.row("beta.md"))
    assert later.as_dict() == {"state": "stale", "reasons": ["max_tokens"], "recording": "differs"}


def test_a_second_plan_change_after_a_failed_regeneration_keeps_the_first_reason(
    stale_project: Project, fake: FakeAnthropic
):
    # The output kept over a failed regeneration is the old generation's reply. A second plan
    # change (here max_tokens) makes every recorded generation differ from today's request, and
    # the reasons were then the latest generation's alone: 'max_tokens', dropping the format
    # reference the output was never regenerated for.
    project = stale_project
    keep_beta_over_a_failed_regeneration(project, fake)
    assert len(project.cassette_bodies("beta.md")) == 3  # the old generation, today's draft and its repair

    gate = project.run("-o", "batchgen_max_tokens=4096", "--batch-fail-stale", "--batch-readonly")

    failure = gate.failure("beta.md::fresh")
    assert "format reference" in failure, failure
    assert "max_tokens" in failure, failure
    # the rows whose new draft replaced the output differ in max_tokens alone
    assert "format reference" not in gate.failure("alpha.md::fresh")


def test_the_estimate_of_a_row_kept_over_a_failed_regeneration_is_one_generation(
    stale_project: Project, fake: FakeAnthropic
):
    # The cassette of an output kept over a failed regeneration holds two generations: the old
    # one (its reply is the output) and today's draft with its repair. The dry run's estimate
    # of regenerating the row summed both: the old generation's 1,500 output tokens on top of
    # what one regeneration costs.
    project = stale_project
    change_reference(project)
    router(fake).set("beta.md", Reply.ok(bad_value("Beta"), usage={"output_tokens": 700}))
    project.run("--batch-regenerate-stale", "--batch-concurrency", "1")
    assert len(project.cassette_bodies("beta.md")) == 3  # the old generation, today's draft and its repair
    project.edit("output/reference.md", "A longer reference now.", "A longer, changed reference now.")

    rows = table_rows(project.run("--batch-dry-run"))

    assert rows["beta.md"][2:4] == ["stale", "format reference"]
    assert rows["beta.md"][5].endswith("/1400"), rows["beta.md"]  # the draft and its repair: 700 each
    assert rows["gamma.md"][5].endswith("/1500"), rows["gamma.md"]  # one generation, as recorded
