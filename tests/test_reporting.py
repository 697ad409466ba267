"""Reporting and cost (issue #6, PRODUCT.md section 8), end to end through pytester.

Every run is an in-process pytest session against the loopback :class:`~fakeapi.FakeAnthropic`.
Replies pin their ``usage`` (``Reply(usage=...)``), so every token count and every dollar
figure below is exact: the expected costs are computed from :data:`pricing.DEFAULT_PRICES` (or
the overriding price) on the same numbers. Checked here: the terminal summary's rows and totals,
the ``--batch-report`` JSON against its schema, the GitHub Actions annotations, the JUnit
properties, the price overrides, the ``--batch-max-cost`` cap, a replayed run and the live
progress line. Unit tests of the same functions are in ``test_pricing.py``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genhelpers import (
    FAST_RETRY,
    REFUSE_WRITES_IN,
    PlanRow,
    Reply,
    bad_value,
    draft,
    go_offline,
    lint_bad,
    missing_section,
    requests_by_row,
    router,
    row_of,
    rows_for,
    rows_plan_text,
)
from harness import Project, Run
from pytest_batchgen.client import Usage
from pytest_batchgen.pricing import DEFAULT_PRICES, Price

HAIKU = DEFAULT_PRICES["claude-haiku"]
HAIKU_ID = "claude-haiku-5-5"


def pin(i: int, o: int, cw: int = 0, cr: int = 0) -> dict:
    """A reply's usage, every count fixed (the fake would compute them from the text)."""
    return {"input_tokens": i, "output_tokens": o, "cache_creation_input_tokens": cw, "cache_read_input_tokens": cr}


def usage(d: dict) -> Usage:
    return Usage(d["input_tokens"], d["output_tokens"], d["cache_creation_input_tokens"], d["cache_read_input_tokens"])


def cost(d: dict, price: Price = HAIKU) -> float:
    return price.cost(usage(d))


def money(x: float) -> str:
    return f"${x:.4f}"


def tokens(d: dict) -> str:
    u = usage(d)
    return f"{u.input_tokens}/{u.output_tokens}/{u.cache_creation_input_tokens}/{u.cache_read_input_tokens}"


def add(*ds: dict) -> dict:
    total = Usage()
    for d in ds:
        total = total + usage(d)
    return total.as_dict()


def summary(result: Run) -> list[str]:
    """The lines of the ``pytest-batchgen`` section of the terminal summary."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if re.match(r"^=+ pytest-batchgen =+$", line))
    out = []
    for line in lines[start + 1 :]:
        if re.match(r"^[=-]+ .* [=-]+$", line):  # the next section, or "- generated xml file: ... -"
            break
        if line.strip():
            out.append(line)
    return out


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.rstrip())


def table(result: Run) -> dict[str, list[str]]:
    """The summary's table: filename -> its cells (the header under ``"file"``)."""
    rows = {}
    for line in summary(result):
        if line.startswith(("total:", "prompt caching", "replay saved", "every call", "stopped", "plan.md:", "::")):
            continue
        c = cells(line)
        rows[c[1]] = c
    return rows


def total_line(result: Run) -> str:
    (line,) = [line for line in summary(result) if line.startswith("total:")]
    return line


# -- the JSON report's schema (version 1), as a reader of the report relies on it -------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class UsageV1(Strict):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cache_creation_input_tokens: int = Field(ge=0)
    cache_read_input_tokens: int = Field(ge=0)


class AttemptV1(Strict):
    number: int = Field(ge=1)
    call: Literal["live", "replayed", "failed"]
    model: str
    stop_reason: str | None
    usage: UsageV1
    cost_usd: float = Field(ge=0)
    seconds: float = Field(ge=0)
    error: str | None
    failed_checks: list[str]


class GenerationV1(Strict):
    outcome: Literal["passed", "failed", "truncated", "refused", "error", "kept", "skipped"]
    error: str | None
    hint: str | None
    wrote_output: bool


class FailureV1(Strict):
    check: str
    message: str
    plan_line: int | None
    output: str | None
    output_line: int | None


class RowV1(Strict):
    phase: str
    filename: str
    title: str
    model: str
    plan_line: int
    status_before: Literal["pending", "complete"]
    status_after: Literal["pending", "complete"]
    verdict: Literal["complete", "failed", "incomplete", "skipped", "not run"]
    generation: GenerationV1 | None
    attempts: list[AttemptV1]
    repairs: int = Field(ge=0)
    usage: UsageV1
    cost_usd: float = Field(ge=0)
    failures: list[FailureV1]


class PlanV1(Strict):
    plan: str
    rows: list[RowV1]
    not_updated: str | None = None  # only when the plan could not be written


class TotalsV1(Strict):
    rows: int
    complete: int
    failed: int
    skipped: int = Field(ge=0)
    incomplete: int = Field(ge=0)
    not_run: int = Field(ge=0)
    calls: int
    calls_live: int
    calls_replayed: int
    calls_without_reply: int = Field(ge=0)
    all_replayed: bool
    usage: UsageV1
    cost_usd: float = Field(ge=0)
    replay_saved_usd: float = Field(ge=0)
    caching_saved_usd: float
    skipped_by_budget: int = Field(ge=0)
    budget_note: str | None

    @model_validator(mode="after")
    def _rows_add_up(self) -> TotalsV1:
        # every row counted once, by its verdict ("7 rows, 3 complete, 1 failed" left 3 out)
        assert self.rows == self.complete + self.failed + self.skipped + self.incomplete + self.not_run
        return self


class ReportV1(Strict):
    schema_: Literal["pytest-batchgen-report"] = Field(alias="schema")
    version: Literal[1]
    created: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
    record_mode: Literal["none", "once", "new_episodes", "all"]
    validate_only: bool
    readonly: bool
    exit_status: int
    prices_source: str
    plans: list[PlanV1]
    totals: TotalsV1


def load_report(project: pytest.Pytester, name: str = "report.json") -> dict:
    """Read the report, validate it against the schema, and check that its sums add up."""
    text = project.read(name)
    ReportV1.model_validate_json(text)
    doc = json.loads(text)
    all_rows = [r for p in doc["plans"] for r in p["rows"]]
    for r in all_rows:
        assert r["usage"] == add(*(a["usage"] for a in r["attempts"])), r["filename"]
        assert r["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in r["attempts"]), abs=2e-6)
        assert r["repairs"] == max(len(r["attempts"]) - 1, 0)
        assert [a["number"] for a in r["attempts"]] == list(range(1, len(r["attempts"]) + 1))
    t = doc["totals"]
    attempts = [a for r in all_rows for a in r["attempts"]]
    assert t["rows"] == len(all_rows)
    assert t["calls"] == len(attempts)
    assert t["calls_live"] == sum(a["call"] == "live" for a in attempts)
    assert t["calls_replayed"] == sum(a["call"] == "replayed" for a in attempts)
    assert t["usage"] == add(*(r["usage"] for r in all_rows))
    assert t["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in all_rows), abs=1e-5)
    return doc


def rows_of(doc: dict) -> dict[str, dict]:
    return {r["filename"]: r for p in doc["plans"] for r in p["rows"]}


# -- the summary and the JSON report of a run with a repair and a failure ------------------------

A1 = pin(1_000, 400, 2_000, 0)  # alpha: the first call writes the cache
B1 = pin(300, 350, 0, 2_000)  # beta: a bad draft...
B2 = pin(900, 360, 0, 2_000)  # ...repaired (the repair turn carries the draft and the failures)
G1 = pin(310, 370, 0, 2_000)  # gamma: wrong, and still wrong after the repair
G2 = pin(920, 380, 0, 2_000)


def script_mixed(fake) -> None:
    r = router(fake)
    r.set("alpha.md", Reply.ok(draft("Alpha"), usage=A1))
    r.set("beta.md", Reply.ok(bad_value("Beta"), usage=B1), Reply.ok(draft("Beta"), usage=B2))
    r.set("gamma.md", Reply.ok(bad_value("Gamma"), usage=G1), Reply.ok(bad_value("Gamma"), usage=G2))


def mixed_project(project: Project) -> list[PlanRow]:
    rows = [*rows_for("alpha", "beta", "gamma"), PlanRow("Done", "done.md", "haiku", "complete")]
    project.write_rows(rows)
    project.write("output/done.md", draft("Done"))
    return rows


def test_summary_has_one_row_per_plan_row_and_exact_totals(project, fake):
    mixed_project(project)
    script_mixed(fake)

    result = project.run("--batch-concurrency", "1")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    rows = table(result)
    assert rows["file"] == ["phase", "file", "model", "status", "att", "tokens in/out/cw/cr", "cost", "failed checks"]
    assert rows["alpha.md"] == [
        "1",
        "alpha.md",
        "claude-haiku-5-5",
        "pending -> complete",
        "1",
        tokens(A1),
        money(cost(A1)),
        "-",
    ]
    assert rows["beta.md"] == [
        "1",
        "beta.md",
        "claude-haiku-5-5",
        "pending -> complete",
        "2",
        tokens(add(B1, B2)),
        money(cost(B1) + cost(B2)),
        "-",
    ]
    assert rows["gamma.md"] == [
        "1",
        "gamma.md",
        "claude-haiku-5-5",
        "pending -> pending",
        "2",
        tokens(add(G1, G2)),
        money(cost(G1) + cost(G2)),
        "category-value",
    ]
    # a complete row: validated, nothing generated
    assert rows["done.md"] == ["1", "done.md", "claude-haiku-5-5", "complete -> complete", "-", "-", "-", "-"]
    assert list(rows) == ["file", "alpha.md", "beta.md", "gamma.md", "done.md"]  # plan order

    everything = (A1, B1, B2, G1, G2)
    total = sum(cost(u) for u in everything)
    assert total_line(result) == (
        f"total: 4 rows, 3 complete, 1 failed; 5 calls (5 live, 0 replayed); tokens {tokens(add(*everything))} "
        f"(in/out/cache write/cache read); estimated cost {money(total)}"
    )
    caching = sum(HAIKU.caching_saved(usage(u)) for u in everything)
    assert caching == pytest.approx((4 * 2_000 * 0.9 - 2_000 * 0.25) / 1e6)
    lines = summary(result)
    assert f"prompt caching saved {money(caching)}" in lines
    assert not any(line.startswith(("replay saved", "every call", "stopped dispatching")) for line in lines)
    assert "plan.md: plan updated" in lines
    assert not any(line.startswith("::error") for line in lines)  # not on GitHub Actions
    assert project.statuses() == {
        "alpha.md": "complete",
        "beta.md": "complete",
        "gamma.md": "pending",
        "done.md": "complete",
    }


@pytest.mark.parametrize(
    ("selection", "shown"),
    [(["-k", "alpha"], ["alpha.md"]), (["plan.md::gamma.md"], ["gamma.md"]), (["-k", "nothingmatches"], [])],
    ids=["-k", "node id", "nothing"],
)
def test_the_summary_leaves_out_the_rows_that_did_not_run(project, fake, selection, shown):
    # a row deselected by -k or a node id was listed as "complete -> complete", like a row that
    # passed, and "-k nothingmatches" printed the whole plan for 0 items
    mixed_project(project)
    script_mixed(fake)

    result = project.run("--batch-report", "report.json", *selection)

    assert [name for name in table(result) if name != "file"] == shown
    if not shown:
        assert "file" not in table(result)  # no header over an empty table
    not_run = 4 - len(shown)
    assert re.match(rf"total: 4 rows, \d complete, \d failed, {not_run} not run; ", total_line(result)), total_line(
        result
    )
    verdicts = {r["filename"]: r["verdict"] for r in load_report(project)["plans"][0]["rows"]}
    assert sorted(name for name, verdict in verdicts.items() if verdict != "not run") == sorted(shown)


def test_json_report_counts_every_attempt_and_its_cost(project, fake):
    # given: a row that passes, one repaired, one still wrong after its repair, one complete
    mixed_project(project)
    script_mixed(fake)

    # when
    result = project.run("--batch-report", "report.json")

    # then: the report (valid, its sums adding up: load_report) says so row by row and in total
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    doc = load_report(project)
    assert doc["schema"] == "pytest-batchgen-report" and doc["version"] == 1
    assert (doc["record_mode"], doc["validate_only"], doc["readonly"], doc["exit_status"]) == (
        "new_episodes",
        False,
        False,
        1,
    )
    assert [p["plan"] for p in doc["plans"]] == ["plan.md"]
    rows = rows_of(doc)
    assert list(rows) == ["alpha.md", "beta.md", "gamma.md", "done.md"]
    assert_repaired_beta(rows["beta.md"])
    assert_failed_gamma(rows["gamma.md"])
    alpha = rows["alpha.md"]
    assert alpha["repairs"] == 0 and [a["usage"] for a in alpha["attempts"]] == [A1]
    assert alpha["cost_usd"] == round(cost(A1), 6)
    done = rows["done.md"]
    assert done["generation"] is None and done["attempts"] == [] and done["cost_usd"] == 0
    assert (done["status_before"], done["status_after"], done["verdict"]) == ("complete", "complete", "complete")
    assert_mixed_totals(doc["totals"])
    # the summary shows the same total
    assert total_line(result).endswith(f"estimated cost {money(doc['totals']['cost_usd'])}")


def assert_repaired_beta(beta: dict) -> None:
    """beta: a bad draft, then a good one: complete, both attempts counted."""
    assert (beta["status_before"], beta["status_after"], beta["verdict"]) == ("pending", "complete", "complete")
    assert beta["model"] == HAIKU_ID and beta["title"] == "Beta" and beta["phase"] == "1"
    assert beta["generation"] == {"outcome": "passed", "error": None, "hint": None, "wrote_output": True}
    assert beta["repairs"] == 1
    assert [a["usage"] for a in beta["attempts"]] == [B1, B2]
    assert [a["cost_usd"] for a in beta["attempts"]] == [round(cost(B1), 6), round(cost(B2), 6)]
    assert [a["call"] for a in beta["attempts"]] == ["live", "live"]
    assert [a["model"] for a in beta["attempts"]] == [HAIKU_ID, HAIKU_ID]
    assert [a["stop_reason"] for a in beta["attempts"]] == ["end_turn", "end_turn"]
    assert beta["attempts"][0]["failed_checks"] == ["category-value: category is 'Z', expected one of: A, B, C"]
    assert beta["attempts"][1]["failed_checks"] == []
    assert beta["usage"] == add(B1, B2)
    assert beta["cost_usd"] == round(cost(B1) + cost(B2), 6)
    assert beta["failures"] == []


def assert_failed_gamma(gamma: dict) -> None:
    """gamma: wrong twice: pending, failed, its failure located in the plan and the output."""
    assert (gamma["status_before"], gamma["status_after"], gamma["verdict"]) == ("pending", "pending", "failed")
    assert gamma["generation"]["outcome"] == "failed"
    assert gamma["repairs"] == 1
    assert [a["usage"] for a in gamma["attempts"]] == [G1, G2]
    assert gamma["failures"] == [
        {
            "check": "category-value",
            "message": "category is 'Z', expected one of: A, B, C",
            "plan_line": 16,
            "output": "output/gamma.md",
            "output_line": 3,
        }
    ]


def assert_mixed_totals(t: dict) -> None:
    """The totals of the mixed project's five live calls."""
    everything = (A1, B1, B2, G1, G2)
    assert (t["rows"], t["complete"], t["failed"]) == (4, 3, 1)
    assert (t["calls"], t["calls_live"], t["calls_replayed"], t["all_replayed"]) == (5, 5, 0, False)
    assert t["usage"] == add(*everything)
    assert t["cost_usd"] == round(sum(cost(u) for u in everything), 6)
    assert t["caching_saved_usd"] == round(sum(HAIKU.caching_saved(usage(u)) for u in everything), 6)
    assert (t["replay_saved_usd"], t["skipped_by_budget"], t["budget_note"]) == (0.0, 0, None)


def test_report_path_is_relative_to_the_invocation_folder_and_written_in_read_only_runs(project, fake):
    mixed_project(project)
    script_mixed(fake)
    assert project.run().ret == pytest.ExitCode.TESTS_FAILED  # generate first
    sent = len(fake.messages_requests())

    result = project.run("--batch-readonly", "--batch-report", "reports/ci/gate.json")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(fake.messages_requests()) == sent  # read-only: nothing sent
    doc = load_report(project, "reports/ci/gate.json")
    assert (doc["validate_only"], doc["readonly"], doc["record_mode"]) == (True, True, "new_episodes")
    assert doc["totals"]["calls"] == 0 and doc["totals"]["cost_usd"] == 0 and doc["totals"]["all_replayed"] is False
    rows = rows_of(doc)
    assert {f: (r["status_before"], r["status_after"], r["verdict"]) for f, r in rows.items()} == {
        "alpha.md": ("complete", "complete", "complete"),
        "beta.md": ("complete", "complete", "complete"),
        "gamma.md": ("pending", "pending", "failed"),
        "done.md": ("complete", "complete", "complete"),
    }
    assert all(r["generation"] is None and r["attempts"] == [] for r in rows.values())
    lines = summary(result)
    assert "plan.md: plan unchanged (read-only)" in lines
    assert total_line(result).startswith("total: 4 rows, 3 complete, 1 failed; 0 calls (0 live, 0 replayed)")
    assert table(result)["gamma.md"][3:] == ["pending -> pending", "-", "-", "-", "category-value"]


# -- prices: the plan's ## Prices section and the ini option -------------------------------------

P1 = pin(2_000, 1_000, 4_000, 8_000)


def test_a_prices_section_in_the_plan_overrides_the_default_price(project, fake):
    rows = rows_for("alpha")
    project.write_rows(rows)
    project.write("plan.md", rows_plan_text(rows) + "\n## Prices\n\n- claude-haiku: 2, 10\n")
    router(fake).set("alpha.md", Reply.ok(draft("Alpha"), usage=P1))

    result = project.run("--batch-report", "report.json")

    assert result.ret == 0, result.stdout.str()
    price = Price(2, 10, 2.5, 0.2)  # cache rates default to 1.25 x and 0.1 x input
    expected = (2_000 * 2 + 1_000 * 10 + 4_000 * 2.5 + 8_000 * 0.2) / 1e6
    assert cost(P1, price) == pytest.approx(expected) and expected != pytest.approx(cost(P1))
    doc = load_report(project)
    assert doc["totals"]["cost_usd"] == round(expected, 6)
    assert rows_of(doc)["alpha.md"]["attempts"][0]["cost_usd"] == round(expected, 6)
    assert table(result)["alpha.md"][6] == money(expected)


def test_a_price_may_name_the_model_alias_the_plan_uses(project, fake):
    rows = rows_for("alpha")
    project.write_rows(rows)
    project.write("plan.md", rows_plan_text(rows) + "\n## Prices\n\n- haiku: 3, 20, 4, 0.5\n")
    router(fake).set("alpha.md", Reply.ok(draft("Alpha"), usage=P1))

    result = project.run("--batch-report", "report.json")

    assert result.ret == 0, result.stdout.str()
    expected = (2_000 * 3 + 1_000 * 20 + 4_000 * 4 + 8_000 * 0.5) / 1e6
    assert load_report(project)["totals"]["cost_usd"] == round(expected, 6)


def test_the_ini_option_overrides_the_default_and_the_plan_overrides_the_ini(project, fake):
    rows = rows_for("alpha")
    project.write_rows(rows, ini_extra="batchgen_prices =\n    claude-haiku: 4, 20, 5, 0.4\n    claude-opus: 1, 1\n")
    router(fake).set("alpha.md", Reply.ok(draft("Alpha"), usage=P1))

    result = project.run("--batch-report", "report.json")

    assert result.ret == 0, result.stdout.str()
    ini_cost = (2_000 * 4 + 1_000 * 20 + 4_000 * 5 + 8_000 * 0.4) / 1e6
    assert load_report(project)["totals"]["cost_usd"] == round(ini_cost, 6)
    assert total_line(result).endswith(f"estimated cost {money(ini_cost)}")

    # the plan's own price wins over the ini file's (a new call: no cassette to replay)
    project.reset(rows)
    shutil.rmtree(project.path / "cassettes")
    project.write("plan.md", rows_plan_text(rows) + "\n## Prices\n\n- claude-haiku-5-5: 0.5, 1, 0.5, 0.5\n")

    result = project.run("--batch-report", "report.json")

    assert result.ret == 0, result.stdout.str()
    plan_cost = (2_000 * 0.5 + 1_000 * 1 + 4_000 * 0.5 + 8_000 * 0.5) / 1e6
    assert load_report(project)["totals"]["cost_usd"] == round(plan_cost, 6)


def test_a_plans_prices_price_its_own_rows_and_not_another_plans(project, fake):
    # given: two plans in one run; only plan.md has a ## Prices section (haiku at $100/$100)
    project.write_rows(rows_for("alpha"))
    project.write("plan.md", rows_plan_text(rows_for("alpha")) + "\n## Prices\n\n- haiku: 100, 100\n")
    project.write("other.md", rows_plan_text(rows_for("zeta")))
    router(fake).set("alpha.md", Reply.ok(draft("Alpha"), usage=P1))
    router(fake).set("zeta.md", Reply.ok(draft("Zeta"), usage=P1))

    # when
    result = project.pytest("--batch-plan", "plan.md", "--batch-plan", "other.md", "--batch-report", "report.json")

    # then: alpha at its plan's price, zeta (same model, same usage) at the default price
    assert result.ret == 0, result.stdout.str()
    own = cost(P1, Price(100, 100, 125, 10))
    assert own != pytest.approx(cost(P1))
    doc = load_report(project)
    costs = {r["filename"]: r["cost_usd"] for p in doc["plans"] for r in p["rows"]}
    assert costs == {"alpha.md": round(own, 6), "zeta.md": round(cost(P1), 6)}
    assert doc["totals"]["cost_usd"] == pytest.approx(own + cost(P1), abs=1e-6)
    # caching saved: each row at its own plan's rates
    saved = Price(100, 100, 125, 10).caching_saved(usage(P1)) + HAIKU.caching_saved(usage(P1))
    assert doc["totals"]["caching_saved_usd"] == round(saved, 6)


def test_an_unreadable_price_is_a_usage_error_naming_the_line(project, fake):
    rows = rows_for("alpha")
    project.write_rows(rows)
    text = rows_plan_text(rows) + "\n## Prices\n\n- claude-haiku: 2, 10\n- claude-opus: expensive\n"
    project.write("plan.md", text)
    bad_line = text.splitlines().index("- claude-opus: expensive") + 1

    result = project.run()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "cannot read price line 'claude-opus: expensive'" in err
    assert f"plan.md:{bad_line}" in err
    assert fake.messages_requests() == []

    project.write("plan.md", rows_plan_text(rows))
    project.write("pytest.ini", project.read("pytest.ini") + "batchgen_prices = claude-haiku: 1.2.3, 4\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "batchgen_prices: cannot read 'claude-haiku: 1.2.3, 4'" in result.stderr.str()


# -- GitHub Actions annotations -----------------------------------------------------------------


def annotation_project(project, fake) -> str:
    project.write_rows(rows_for("alpha", "gamma", "linty", "down"))
    r = router(fake)
    r.set("gamma.md", Reply.ok(bad_value("Gamma")))
    r.set("linty.md", Reply.ok(lint_bad("Linty")))
    r.set("down.md", Reply.error(500, message="the backend is down", retry_after=FAST_RETRY))
    return project.read()


def test_github_actions_gets_one_error_annotation_per_failing_check(project, fake, monkeypatch):
    plan = annotation_project(project, fake)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")

    result = project.run("--batch-max-attempts", "1")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    down_line = plan.splitlines().index("| Down | down.md | haiku | pending |") + 1
    linty_line = draft("Linty", extra="LINT-BAD appears here.\n").splitlines().index("LINT-BAD appears here.") + 1
    annotations = [line for line in result.stdout.lines if line.startswith("::")]
    python = shlex.quote(sys.executable)
    assert annotations == [
        "::error file=output/gamma.md,line=3,title=batchgen gamma.md%3A category-value::"
        "category is 'Z', expected one of: A, B, C",
        # the linter's own report names the line, and its findings follow the exit status
        f"::error file=output/linty.md,line={linty_line},title=batchgen linty.md%3A lint::"
        f"linter exited 1: {python} -I -S lint.py output/linty.md"
        f"%0Aoutput/linty.md:{linty_line}: X001 forbidden marker LINT-BAD",
        # no output was written: the annotation points at the row in the plan
        f"::error file=plan.md,line={down_line},title=batchgen down.md%3A generate::"
        "error: InternalServerError: HTTP 500 api_error: the backend is down",
    ]
    # only failing checks: the passing row and the skipped checks of the row without an output have none
    assert not any("alpha.md" in a for a in annotations)
    assert sum("down.md" in a for a in annotations) == 1


def test_no_annotations_off_github_actions(project, fake, monkeypatch):
    annotation_project(project, fake)
    monkeypatch.setenv("GITHUB_ACTIONS", "false")

    result = project.run("--batch-max-attempts", "1")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert not any(line.startswith("::") for line in result.stdout.lines)


# -- JUnit XML properties -----------------------------------------------------------------------


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_skips_are_reported_at_the_plan_rows_line(project, fake, pytester, xdist):
    # pytest reports a skip where it was raised: every reason pointed into the plugin
    # ("SKIPPED [3] .../pytest_batchgen/nodes.py:246: not checked: generation wrote no output ...")
    project.write_rows(rows_for("fine", "unsent", "other"))
    pytester.makepyfile(test_custom="def test_term(batch_output):\n    assert batch_output.metadata['term']\n")

    result = project.run(
        "-p", "no:randomly", "-rs", "test_custom.py", "--batch-max-cost", "0.000001", "--batch-concurrency", "1", *xdist
    )

    skipped = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert skipped, result.stdout.str()
    assert not any("pytest_batchgen" in line for line in skipped), skipped
    plan = project.read().splitlines()
    for line in skipped:
        where = re.match(r"SKIPPED \[\d+\] plan\.md:(\d+): ", line)
        assert where, line
        row = plan[int(where.group(1)) - 1]
        assert row.startswith("|") and ".md |" in row, (line, row)  # a row of the plan's table
    # a row's checks, its custom test included, fold into one line per reason
    assert any(
        re.match(r"SKIPPED \[5\] plan\.md:\d+: not checked: generation wrote no output", line) for line in skipped
    )
    if not xdist:  # (under xdist the controller generates: the workers have no generate items)
        assert result.skip_reasons()["unsent.md::generate"].startswith("Skipped: not sent: ")


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_tb_line_prints_each_failure_whole_at_its_location(project, fake, xdist):
    # repr_failure returned a plain string, so --tb=line printed its first 50 characters
    # ("output/quorum.md:3: category is 'Consistent', expe" on pytest 8.3)
    project.write_rows(rows_for("gamma", "sections", "broken"), max_retries=0)
    r = router(fake)
    r.set("gamma.md", Reply.ok(bad_value("Gamma")))
    r.set("sections.md", Reply.ok(missing_section("Sections")))
    r.set("broken.md", Reply.server_error())

    lined = project.run("--tb=line", "--batch-max-attempts", "1", "-p", "no:randomly", *xdist)

    assert lined.ret == pytest.ExitCode.TESTS_FAILED
    plan = project.read().splitlines()
    at = {
        name: next(i for i, line in enumerate(plan, 1) if text in line)
        for name, text in (
            ("sections", "Definition, Details, and Related Terms sections present"),
            ("broken", "| broken.md |"),
        )
    }
    out = lined.stdout.lines
    category = next(line for line in out if line.startswith("output/gamma.md:"))
    assert re.fullmatch(r"output/gamma\.md:\d+: category is 'Z', expected one of: A, B, C", category), category
    # a failure with no line of the output: at the checklist line, naming the output
    assert any(
        re.fullmatch(rf"plan\.md:{at['sections']}: output/sections\.md: missing section .*\)", line) for line in out
    ), out
    # (under xdist the workers' checks of the row say it; the controller generated it)
    broken = r"plan\.md:\d+: output/broken\.md: generation failed: error: InternalServerError: HTTP 500 .*"
    assert any(re.fullmatch(broken, line) for line in out), out
    if not xdist:
        assert (
            f"plan.md:{at['broken']}: output/broken.md: generation failed: error: InternalServerError"
            in lined.stdout.str()
        )
    assert not any(line.startswith(("  check: ", "  row: ")) for line in out)  # the location only

    full = project.run("--batch-max-attempts", "1", "-p", "no:randomly", "-rf", *xdist)

    out = full.stdout.lines
    assert any(line.startswith("  check: plan.md:") for line in out)  # the whole text, as before
    assert any(re.match(r"FAILED plan\.md::gamma\.md::category-value - category is 'Z'", line) for line in out), out


def test_junitxml_items_carry_the_rows_filename_model_attempts_and_cost(project, fake):
    mixed_project(project)
    script_mixed(fake)

    result = project.run("--junitxml", "junit.xml")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    tree = ET.parse(project.path / "junit.xml")
    cases = {}
    for case in tree.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases[f"{case.get('classname').rsplit('.', 2)[-2]}.md::{case.get('name')}"] = props
    beta_cost = f"{cost(B1) + cost(B2):.6f}"
    expected_beta = {
        "batchgen_filename": "beta.md",
        "batchgen_model": HAIKU_ID,
        "batchgen_attempts": "2",
        "batchgen_cost_usd": beta_cost,
        "batchgen_calls": "live",
    }
    for item in ("generate", "front-matter", "category-value", "sections", "lint"):
        assert cases[f"beta.md::{item}"] == expected_beta, item
    assert cases["alpha.md::generate"]["batchgen_attempts"] == "1"
    assert cases["alpha.md::generate"]["batchgen_cost_usd"] == f"{cost(A1):.6f}"
    assert cases["gamma.md::category-value"] == {
        "batchgen_filename": "gamma.md",
        "batchgen_model": HAIKU_ID,
        "batchgen_attempts": "2",
        "batchgen_cost_usd": f"{cost(G1) + cost(G2):.6f}",
        "batchgen_calls": "live",
    }
    # a complete row was not generated: no attempts, no cost, no calls
    assert cases["done.md::sections"] == {
        "batchgen_filename": "done.md",
        "batchgen_model": HAIKU_ID,
        "batchgen_attempts": "0",
        "batchgen_cost_usd": "0.000000",
    }
    assert "done.md::generate" not in cases
    failed = [c for c in tree.iter("testcase") if c.find("failure") is not None]
    assert [(c.get("name"), cases_key(c)) for c in failed] == [("category-value", "gamma.md")]


def cases_key(case: ET.Element) -> str:
    return case.get("classname").rsplit(".", 2)[-2] + ".md"


# -- --batch-max-cost -----------------------------------------------------------------------------

CENT = pin(500, 1_900)  # $0.0005 + $0.0095 = $0.01 at Haiku's price


BUDGET_NOTE = (
    "stopped dispatching: the estimated spend ($0.0200) reached --batch-max-cost $0.015; the rows not sent were skipped"
)
NOT_SENT = "not sent: the estimated spend ($0.0200) reached --batch-max-cost $0.015"


def test_budget_cap_stops_sending_and_skips_the_rows_not_sent(project, fake):
    # given: five rows whose every reply costs a cent
    names = ["one", "two", "three", "four", "five"]
    project.write_rows(rows_for(*names))
    for name in names:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.title()), usage=CENT))
    assert cost(CENT) == pytest.approx(0.01)

    # when: one row at a time, with a cap of a cent and a half
    result = project.run("--batch-concurrency", "1", "--batch-max-cost", "0.015", "--batch-report", "report.json")

    # then: the first call spends $0.01 (< $0.015, so a second is sent); after it, $0.02 >= the cap
    sent = requests_by_row(fake)
    assert len(fake.messages_requests()) == 2 < len(names)
    assert all(len(reqs) == 1 for reqs in sent.values())
    not_sent = [f"{n}.md" for n in names if f"{n}.md" not in sent]
    assert len(not_sent) == 3
    # the rows not sent are skipped, not failed, and stay pending without an output
    assert result.ret == 0, result.stdout.str()
    assert_skipped_by_budget(result, sent=list(sent), not_sent=not_sent)
    assert project.statuses() == {f"{n}.md": "complete" if f"{n}.md" in sent else "pending" for n in names}
    assert not any((project.path / "output" / f).exists() for f in not_sent)
    # the summary and the report say why
    assert_budget_summary(result, sent=list(sent), not_sent=not_sent)
    assert_budget_report(load_report(project), not_sent=not_sent)


def test_budget_cap_stops_a_refused_request_waiting_for_its_retry(project, fake):
    # given: one row refused at once (a 429 asking for 20 s), one answered half a second later
    project.write_rows(rows_for("one", "two"))
    router(fake).set("one.md", Reply.rate_limited(retry_after=20), Reply.ok(draft("One"), usage=CENT))
    router(fake).set("two.md", Reply.ok(draft("Two"), usage=CENT, delay=0.5))

    # when: the second reply's cent reaches the cap while the first row waits for the SDK's retry
    result = project.run("--batch-concurrency", "2", "--batch-max-cost", "0.005")

    # then: the retry, a new request, is never sent (nor waited for): the row is skipped, not sent
    assert [e.status for e in requests_by_row(fake)["one.md"]] == [429]
    assert result.outcomes()["one.md::generate"] == "skipped"
    assert result.skip_reasons()["one.md::generate"] == (
        "Skipped: not sent: the estimated spend ($0.0100) reached --batch-max-cost $0.005"
    )
    assert project.statuses() == {"one.md": "pending", "two.md": "complete"}
    assert not (project.path / "output" / "one.md").exists()


def assert_skipped_by_budget(result: Run, sent: list[str], not_sent: list[str]) -> None:
    """A sent row's generate item passed; every item of a row not sent was skipped, saying why."""
    outcomes = result.outcomes()
    reasons = result.skip_reasons()
    for filename in sent:
        assert outcomes[f"{filename}::generate"] == "passed"
    for filename in not_sent:
        assert outcomes[f"{filename}::generate"] == "skipped"
        reason = reasons[f"{filename}::generate"]
        assert "max-cost" in reason, reason
        assert reason == "Skipped: " + NOT_SENT
        for check in ("front-matter", "category-value", "sections", "lint"):
            assert outcomes[f"{filename}::{check}"] == "skipped"


def assert_budget_summary(result: Run, sent: list[str], not_sent: list[str]) -> None:
    assert BUDGET_NOTE in summary(result)
    rows = table(result)
    for filename in not_sent:
        assert rows[filename][3:7] == ["pending -> pending", "0", "0/0/0/0", "skipped"]
    for filename in sent:
        assert rows[filename][3:7] == ["pending -> complete", "1", tokens(CENT), "$0.0100"]
    assert total_line(result).startswith("total: 5 rows, 2 complete, 0 failed, 3 skipped; 2 calls (2 live, 0 replayed)")
    assert total_line(result).endswith("estimated cost $0.0200")


def assert_budget_report(doc: dict, not_sent: list[str]) -> None:
    assert doc["totals"]["skipped_by_budget"] == 3
    assert doc["totals"]["budget_note"] == BUDGET_NOTE
    assert doc["totals"]["cost_usd"] == 0.02
    for filename in not_sent:
        row = rows_of(doc)[filename]
        assert row["generation"] == {"outcome": "skipped", "error": NOT_SENT, "hint": None, "wrote_output": False}
        assert row["attempts"] == [] and row["verdict"] == "skipped"


def test_a_zero_budget_sends_nothing(project, fake):
    project.write_rows(rows_for("one", "two"))

    result = project.run("--batch-max-cost", "0", "--batch-report", "report.json")

    assert fake.messages_requests() == []
    assert result.ret == 0
    assert "max-cost" in result.skip_reasons()["one.md::generate"]
    assert load_report(project)["totals"]["skipped_by_budget"] == 2
    assert any(line.startswith("stopped dispatching: the estimated spend ($0.0000)") for line in summary(result))


def test_a_zero_budget_still_replays_what_is_recorded(project, fake, monkeypatch):
    # a replayed reply costs nothing: the cap holds back live requests only, here the new row's
    # (before, every row was skipped: "the estimated spend ($0.0000) reached --batch-max-cost $0")
    rows = rows_for("one", "two")
    project.write_rows(rows)
    router(fake).set("two.md", Reply.ok(bad_value("Two")), Reply.ok(draft("Two")))  # a repair, recorded too
    assert project.run().ret == 0
    project.reset(rows + rows_for("three"))
    fake.requests.clear()

    result = project.run("--batch-max-cost", "0", "--batch-report", "report.json")

    assert fake.messages_requests() == []
    assert project.statuses() == {"one.md": "complete", "two.md": "complete", "three.md": "pending"}
    assert result.outcomes()["two.md::generate"] == "passed"
    assert "max-cost" in result.skip_reasons()["three.md::generate"]
    assert load_report(project)["totals"]["skipped_by_budget"] == 1
    # and in a run that may only replay, the same
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    project.reset(rows)
    replay = project.run("--batch-max-cost", "0")
    assert project.statuses() == {"one.md": "complete", "two.md": "complete"}
    assert not any(line.startswith("stopped dispatching") for line in summary(replay))


def test_a_negative_budget_is_a_usage_error(project, fake):
    project.write_rows(rows_for("one"))
    result = project.run("--batch-max-cost", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "argument --batch-max-cost: '-1': must be zero or more (dollars)" in err
    assert err.count("--batch-max-cost") == 1  # the option is named once, by argparse


# -- a replayed run costs nothing -----------------------------------------------------------------


def test_a_replayed_run_reports_zero_cost_and_that_every_call_was_replayed(project, fake, monkeypatch):
    rows = rows_for("alpha", "beta")
    project.write_rows(rows)
    r = router(fake)
    r.set("alpha.md", Reply.ok(draft("Alpha"), usage=A1))
    r.set("beta.md", Reply.ok(bad_value("Beta"), usage=B1), Reply.ok(draft("Beta"), usage=B2))
    recorded = project.run("--batch-report", "recorded.json")
    assert recorded.ret == 0, recorded.stdout.str()
    recorded_cost = cost(A1) + cost(B1) + cost(B2)
    assert load_report(project, "recorded.json")["totals"]["cost_usd"] == round(recorded_cost, 6)

    attempts = go_offline(fake, monkeypatch)
    project.reset(rows)

    result = project.run("--batch-record-mode", "none", "--batch-report", "report.json", "--junitxml", "junit.xml")

    assert result.ret == 0, result.stdout.str()
    assert attempts == []
    assert len(fake.messages_requests()) == 3  # all from the recording run
    lines = summary(result)
    assert "every call was replayed from cassettes: nothing was sent, nothing was spent" in lines
    assert f"replay saved {money(recorded_cost)}" in lines
    assert not any(line.startswith("prompt caching saved") for line in lines)  # nothing was sent
    rows_ = table(result)
    assert rows_["alpha.md"][3:] == ["pending -> complete", "1", tokens(A1), "replayed", "-"]
    assert rows_["beta.md"][3:] == ["pending -> complete", "2", tokens(add(B1, B2)), "replayed", "-"]
    assert total_line(result) == (
        f"total: 2 rows, 2 complete, 0 failed; 3 calls (0 live, 3 replayed); tokens {tokens(add(A1, B1, B2))} "
        "(in/out/cache write/cache read); estimated cost $0.0000"
    )

    doc = load_report(project)
    assert doc["record_mode"] == "none"
    t = doc["totals"]
    assert (t["calls"], t["calls_live"], t["calls_replayed"], t["all_replayed"]) == (3, 0, 3, True)
    assert t["cost_usd"] == 0
    assert t["replay_saved_usd"] == round(recorded_cost, 6)
    assert t["caching_saved_usd"] == 0
    assert t["usage"] == add(A1, B1, B2)
    beta = rows_of(doc)["beta.md"]
    assert [a["call"] for a in beta["attempts"]] == ["replayed", "replayed"]
    assert [a["cost_usd"] for a in beta["attempts"]] == [0, 0]
    assert [a["usage"] for a in beta["attempts"]] == [B1, B2]  # the recorded usage
    assert beta["repairs"] == 1
    props = {
        p.get("name"): p.get("value")
        for case in ET.parse(project.path / "junit.xml").iter("testcase")
        if case.get("name") == "generate" and "beta" in case.get("classname")
        for p in case.iter("property")
    }
    assert props["batchgen_calls"] == "replayed" and props["batchgen_cost_usd"] == "0.000000"
    assert props["batchgen_attempts"] == "2"


def test_calls_without_a_reply_are_counted_apart_from_live_and_replayed(project, fake, monkeypatch):
    # an API error after the retries and a replay miss (no recording) got no reply: the line said
    # "1 calls (0 live, 0 replayed)", which left the reader to guess what the call was
    project.write_rows(rows_for("alpha", "beta"), max_retries=0)
    router(fake).set("alpha.md", Reply.server_error())

    live = project.run("--batch-report", "live.json")

    assert total_line(live).startswith(
        "total: 2 rows, 1 complete, 1 failed; 2 calls (1 live, 0 replayed, 1 without a reply);"
    )
    t = load_report(project, "live.json")["totals"]
    assert (t["calls"], t["calls_live"], t["calls_replayed"], t["calls_without_reply"]) == (2, 1, 0, 1)
    go_offline(fake, monkeypatch)

    replay = project.run("--batch-record-mode", "none", "--batch-report", "replay.json")  # alpha has no recording

    assert total_line(replay).startswith(
        "total: 2 rows, 1 complete, 1 failed; 1 call (0 live, 0 replayed, 1 without a reply);"
    )
    assert load_report(project, "replay.json")["totals"]["calls_without_reply"] == 1


# -- the live progress line -------------------------------------------------------------------


def test_progress_lines_when_the_output_is_not_a_terminal(project, fake):
    project.write_rows(rows_for("quick", "slow"))
    r = router(fake)
    r.set("quick.md", Reply.ok(draft("Quick"), usage=CENT))
    r.set("slow.md", Reply.ok(draft("Slow"), usage=CENT, delay=1.0))

    result = project.run()

    assert result.ret == 0, result.stdout.str()
    progress = [line for line in result.stdout.lines if line.startswith("[batchgen]")]
    # not a terminal: plain lines, no carriage returns; the slow row's wait shows the state,
    # and when the wait ends with every row done, the final state
    assert all("\r" not in line for line in progress)
    # (the quick row is normally done before any wait; on a slow machine its own wait shows 0/2,
    # and when this process imports the SDK for the first time, nothing is in flight yet)
    assert re.fullmatch(
        r"\[batchgen\] [01]/2 rows done, [012] in flight, 0 failed; (0 replies, 0|1 reply, 2,400) tokens, \$0\.0[01]00 so far",
        progress[0],
    ), progress
    assert progress[-1] == "[batchgen] 2/2 rows done, 0 in flight, 0 failed; 2 replies, 4,800 tokens, $0.0200 so far"
    assert len(progress) == len(set(progress))
    # throttled: a line per 15 s or per tenth of the rows done (here, a row), and the final one
    assert len(progress) <= 3


@pytest.mark.parametrize("verbosity", ["-q", "-v", "-qq"])
def test_progress_lines_start_a_line_of_their_own_at_every_verbosity(project, fake, verbosity):
    # with -q pytest writes its dots with no path before them, and ensure_newline() acts only
    # after a path: the line was glued to the dots (".....[batchgen] 1/8 rows done, ..."), and a
    # CI log's grep for ^\[batchgen\] missed it
    project.write_rows([PlanRow("Done", "done.md", "haiku", "complete"), *rows_for("quick", "slow")])
    project.write("output/done.md", draft("Done"))
    r = router(fake)
    r.set("quick.md", Reply.ok(draft("Quick"), usage=CENT))
    r.set("slow.md", Reply.ok(draft("Slow"), usage=CENT, delay=1.0))

    result = project.run(verbosity, "-p", "no:randomly")

    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    assert out.count("[batchgen]") >= 1
    lines = result.stdout.lines
    assert out.count("[batchgen]") == len([line for line in lines if line.startswith("[batchgen]")]), out
    assert not any(line.startswith("[batchgen]") and not lines[i - 1].strip() for i, line in enumerate(lines)), out


#: a project's conftest.py: pytest's terminal is a terminal (pytester's stdout is not), and what
#: is written to it is copied, byte for byte, to tty.out (pytester's lines are split at \r too)
FORCED_TERMINAL = """
import pytest


class Tee:
    def __init__(self, file, path):
        self.file = file
        self.copy = open(path, "w", encoding="utf-8")

    def write(self, text):
        self.copy.write(text)
        return self.file.write(text)

    def __getattr__(self, name):
        return getattr(self.file, name)


class Yes:  # pytest 9's isatty: a bool that may be called
    def __bool__(self):
        return True

    def __call__(self):
        return True


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    tr = config.pluginmanager.get_plugin("terminalreporter")
    tr.isatty = Yes()
    tr._tw._file = Tee(tr._tw._file, "tty.out")


def pytest_unconfigure(config):
    tr = config.pluginmanager.get_plugin("terminalreporter")
    file = tr._tw._file
    while not isinstance(file, Tee):
        file = file._file
    file.copy.close()
"""

SEQUENCE = re.compile(r"(\x1b\[[0-9;]*[A-Za-z]|\r|\n)")


def render(raw: str, cols: int) -> list[str]:
    """What a terminal ``cols`` wide shows for ``raw``: text wrapping at the right edge, CR, LF
    (a new line, as the terminal driver makes of it), and the ANSI sequences pytest and the live
    line write (colours, erase to the end of the line, a line up, to a column)."""
    screen: list[list[str]] = [[]]
    row = col = 0
    wrap = False  # the last column was written: the next character goes on the next line
    for token in SEQUENCE.split(raw):
        if token == "\r":
            col, wrap = 0, False
        elif token == "\n":
            row, col, wrap = row + 1, 0, False
        elif token.startswith("\x1b["):
            code, arg = token[-1], token[2:-1]
            if code == "K":
                del screen[row][col:]
            elif code == "A":
                row, wrap = max(0, row - int(arg or 1)), False
            elif code == "G":
                col, wrap = min(int(arg or 1), cols) - 1, False
            else:
                assert code == "m", f"a sequence the test does not know: {token!r}"
        else:
            for char in token:
                if wrap:
                    row, col, wrap = row + 1, 0, False
                while len(screen) <= row:
                    screen.append([])
                line = screen[row]
                line.extend(" " * (col + 1 - len(line)))
                line[col] = char
                if col == cols - 1:
                    wrap = True
                else:
                    col += 1
        while len(screen) <= row:
            screen.append([])
    return ["".join(line).rstrip() for line in screen]


def test_render_knows_what_a_terminal_does():
    assert render("abc\rX", 10) == ["Xbc"]
    assert render("abcdef", 4) == ["abcd", "ef"]
    assert render("ab\ncd\x1b[K\x1b[A\x1b[3Gz\x1b[1mq\x1b[0m", 10) == ["abzq", "cd"]
    assert render("plan.md ..\nlive text\r\x1b[K\x1b[A\x1b[11G.", 20) == ["plan.md ...", ""]


@pytest.mark.parametrize("verbosity", [[], ["-v"], ["-q"]], ids=["default", "-v", "-q"])
def test_progress_on_a_terminal_is_redrawn_in_place_under_pytests_line(project, fake, monkeypatch, verbosity):
    # the line was redrawn with pytest's rewrite after ending pytest's line (ensure_newline, and
    # currentfspath = None): each redraw between results split pytest's line in two ("plan.md"
    # again under a "[batchgen] ..." line, 42 of them for 60 rows), and at 80 columns the line,
    # 86 characters, wrapped: rewrite's padding was negative and left the wrapped part behind
    cols = 80
    monkeypatch.setenv("COLUMNS", str(cols))
    monkeypatch.setenv("TERM", "xterm")
    names = [f"row-{i}" for i in range(8)]
    project.write_rows(rows_for(*names))
    project.write("conftest.py", FORCED_TERMINAL)
    r = router(fake)
    for name in names:
        r.set(f"{name}.md", Reply.ok(draft(name.title()), usage=CENT, delay=0.2))

    result = project.run("--color=yes", "--batch-concurrency", "2", "-p", "no:randomly", *verbosity)

    assert result.ret == 0, result.stdout.str()
    with open(project.path / "tty.out", encoding="utf-8", newline="") as f:  # the \r kept
        raw = f.read()
    # drawn in place several times, each time cut to the terminal's width
    drawn = re.findall(r"[\r\n](\[batchgen\] [^\r\n\x1b]*)\x1b\[K", raw)
    assert len(set(drawn)) >= 2, raw
    assert all(len(text) < cols for text in drawn), drawn
    screen = render(raw, cols)
    start = next((i for i, line in enumerate(screen) if line.startswith("collected ")), -1)  # none with -q
    end = next(i for i, line in enumerate(screen) if "pytest-batchgen" in line)
    shown = [line for line in screen[start + 1 : end] if line]
    # the final count is the one progress line left, whole (it may wrap: a plain line)
    final = [i for i, line in enumerate(shown) if "[batchgen]" in line]
    assert len(final) == 1, "\n".join(shown)
    text = shown[final[0]] + (shown[final[0] + 1] if not shown[final[0]].endswith("so far") else "")
    assert text == "[batchgen] 8/8 rows done, 0 in flight, 0 failed; 8 replies, 19,200 tokens, $0.0800 so far"
    results = [line for i, line in enumerate(shown) if i not in (final[0], final[0] + 1) or line.startswith("plan.md")]
    if verbosity == ["-v"]:  # each item on its line, whole
        # (the final count is drawn when the last row ends, which may be while an item waits
        # for it: pytest's line is then split there, and pytest writes the item's id again)
        split = [line for line in results if re.fullmatch(r"plan\.md::row-\d\.md::[a-z-]+", line)]
        assert len(split) <= 1 and all(shown[final[0] - 1] == line for line in split), shown
        results = [line for line in results if line not in split]
        assert all(re.fullmatch(r"plan\.md::row-\d\.md::[a-z-]+ PASSED +\[ *\d+%\]", line) for line in results), results
        assert len(results) == 40
    else:  # pytest's dots, every one of them, on lines pytest started (one split: the final count,
        # and, seen once in a hundred runs on a loaded machine, a dot on a line of its own by it)
        assert len(results) <= 3 + len(verbosity), results
        dots = "".join(re.sub(r"^plan\.md |\s*\[ *\d+%\]$", "", line) for line in results)
        assert dots == "." * 40, results


def test_budget_note_with_xdist(project, fake):
    # with pytest-xdist the controller generates before the workers start (a subprocess run:
    # xdist's workers cannot start in-process)
    names = ["one", "two", "three"]
    project.write_rows(rows_for(*names))
    for name in names:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.title()), usage=CENT))

    result = project.run(
        "-n",
        "2",
        "--batch-concurrency",
        "1",
        "--batch-max-cost",
        "0.015",
        "--batch-report",
        "report.json",
        subprocess=True,
    )

    assert len(fake.messages_requests()) == 2
    # the workers know the unsent row was skipped: its checks are skipped, not failed
    assert result.ret == 0, result.stdout.str()
    assert result.counts().get("failed", 0) == 0
    assert BUDGET_NOTE in summary(result)
    doc = json.loads(project.read("report.json"))
    assert doc["totals"]["skipped_by_budget"] == 1
    assert doc["totals"]["budget_note"] == BUDGET_NOTE
    assert doc["totals"]["cost_usd"] == 0.02


# -- a reply that cannot be written or recorded is still counted, and kept ---------------------


def test_a_reply_that_cannot_be_recorded_is_counted_and_kept(project, fake):
    """A read-only cassette folder: the recording raised inside the client, before the reply's
    usage was counted, and the row's result was replaced by a fresh one: 0 calls, $0 in the
    summary and the report, the spend not counted toward --batch-max-cost, the text thrown away."""
    project.write_rows(rows_for("one", "two"))
    for name in ("one", "two"):
        router(fake).set(f"{name}.md", Reply.ok(draft(name.title()), usage=CENT))
    project.write("conftest.py", REFUSE_WRITES_IN.format(folder=str(project.cassette_dir().resolve())))

    result = project.run("--batch-concurrency", "1", "--batch-max-cost", "0.005", "--batch-report", "report.json")

    # the first reply's cent counts, and reaches the cap: the other row is not sent
    assert len(fake.messages_requests()) == 1
    [first] = requests_by_row(fake)
    [other] = {"one.md", "two.md"} - {first}
    report = load_report(project)
    assert report["totals"]["calls_live"] == 1
    assert report["totals"]["cost_usd"] == pytest.approx(0.01)
    row = next(r for r in report["plans"][0]["rows"] if r["filename"] == first)
    message = (
        f"the reply could not be recorded in cassettes/plan/{first}.yaml: Permission denied; "
        f"make cassettes/plan/ writable, then run again; its text is kept in output/{first}"
    )
    assert row["generation"]["error"] == message and row["attempts"][0]["usage"] == CENT
    assert message in result.failure(f"{first}::generate")
    result.stdout.fnmatch_lines(["total: 2 rows, 0 complete, * 1 call (1 live, 0 replayed)*estimated cost $0.0100*"])
    assert project.output(first) == draft(Path(first).stem.title())

    # a rerun that may record keeps the output it paid for, and sends only the other row
    (project.path / "conftest.py").unlink()
    project.run()
    assert [row_of(e) for e in fake.messages_requests()] == [first, other]
    assert project.statuses() == {"one.md": "complete", "two.md": "complete"}


def test_a_reply_that_cannot_be_written_is_counted_and_replayed_next_time(project, fake):
    """A read-only output folder: the write raised in the dispatcher, whose per-row handler put
    a fresh result in place of the one holding the attempt: 0 calls and $0 for a billed reply."""
    project.write_rows(rows_for("one"))
    router(fake).set("one.md", Reply.ok(draft("One"), usage=CENT))
    project.write("conftest.py", REFUSE_WRITES_IN.format(folder=str((project.path / "output").resolve())))

    result = project.run("--batch-report", "report.json")

    assert len(fake.messages_requests()) == 1
    report = load_report(project)
    assert report["totals"]["calls_live"] == 1 and report["totals"]["cost_usd"] == pytest.approx(0.01)
    [row] = report["plans"][0]["rows"]
    message = (
        "the reply could not be written to output/one.md: Permission denied; make output/ writable, then run again"
    )
    assert row["generation"]["error"] == message and row["attempts"][0]["usage"] == CENT
    assert message in result.failure("one.md::generate") and "Traceback" not in result.failure("one.md::generate")
    result.stdout.fnmatch_lines(["total: 1 row, 0 complete, * 1 call (1 live, 0 replayed)*estimated cost $0.0100*"])

    # the reply was recorded: the rerun replays it, and pays nothing
    (project.path / "conftest.py").unlink()
    project.run()
    assert len(fake.messages_requests()) == 1
    assert project.statuses() == {"one.md": "complete"}


def test_a_folder_that_cannot_be_written_is_a_usage_error_before_anything_is_sent(project, fake):
    """A cassette folder that cannot be written let the run send every row and pay for replies
    it could not keep; now the run stops before sending, naming the folder."""
    project.write_rows(rows_for("one", "two"))
    project.write("cassettes/plan", "a file where the recordings' folder goes\n")

    result = project.run()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert fake.messages_requests() == []
    result.stderr.fnmatch_lines(
        [
            # not "cannot be written (File exists): make it writable": no permission fixes it
            "ERROR: plan.md: the cassette folder cassettes/plan/ cannot be made: cassettes/plan is a file, not a "
            "folder; move or rename it before generating (nothing was sent), or check the outputs with "
            "--batch-validate-only"
        ]
    )
    assert project.statuses() == {"one.md": "pending", "two.md": "pending"}
    # a run that only checks writes no recording: it is not asked for
    assert project.run("--batch-validate-only").ret == pytest.ExitCode.OK


def test_the_write_check_makes_a_missing_folder_and_leaves_nothing(tmp_path):
    from pytest_batchgen.fsutil import write_problem

    assert write_problem(tmp_path / "a" / "b") is None
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert write_problem(tmp_path / "file" / "sub") == "Not a directory"


def test_the_budget_note_says_rows_were_skipped_only_when_some_were():
    # a cap reached by the last reply (or by a judge's spend after every row was sent) said
    # "the rows not sent were skipped" when none was
    from types import SimpleNamespace

    from pytest_batchgen.generation import Generation

    def note(*skipped: bool) -> str:
        results = {str(n): SimpleNamespace(budget_skipped=s) for n, s in enumerate(skipped)}
        d = SimpleNamespace(budget_stopped=True, stop_reason="the spend reached it", results=lambda: results)
        return Generation(d, None).budget_note  # type: ignore[arg-type]

    assert note(False, True) == "stopped dispatching: the spend reached it; the rows not sent were skipped"
    assert note(False, False) == "stopped dispatching: the spend reached it; every row had been sent"
