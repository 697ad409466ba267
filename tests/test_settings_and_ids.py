"""The glue's typed seams: settings read once, the process role, one row identity, outcome enums."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from planfactory import SMALL_PLAN, lay_out_small_plan

from pytest_batchgen.dispatch import Attempt, RowResult, RowResults
from pytest_batchgen.outcomes import Outcome, Verdict
from pytest_batchgen.report import RowReport, totals
from pytest_batchgen.plan import Row
from pytest_batchgen.pricing import PriceTable
from pytest_batchgen.rowid import RowId
from pytest_batchgen.settings import Role
from pytest_batchgen.state import state_of

PLAN = SMALL_PLAN + "| Next | next.md | haiku | pending |\n"


@pytest.fixture
def plan_project(pytester: pytest.Pytester) -> pytest.Pytester:
    lay_out_small_plan(pytester.path, PLAN)
    return pytester


def assert_usage_error(result: pytest.RunResult, *needles: str) -> None:
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    for needle in needles:
        assert needle in out, out


# -- every value is parsed once: unusual but valid spellings work, others are usage errors ----


@pytest.mark.parametrize(
    "option, raw, attribute, expected",
    [
        ("batchgen_max_tokens", "8192.0", "max_tokens", 8192),
        ("batchgen_max_tokens", " 1e3 ", "max_tokens", 1000),
        ("batchgen_max_retries", "0", "max_retries", 0),
        ("batchgen_max_retries", "3.0", "max_retries", 3),
        ("batchgen_timeout", "1e2", "timeout", 100.0),
        ("batchgen_linter_timeout", "0.5", "linter_timeout", 0.5),
        ("batchgen_max_output_bytes", "1_000_000", "max_output_bytes", 1_000_000),
    ],
)
def test_an_ini_number_in_an_unusual_spelling_is_read_once_as_that_number(
    plan_project: pytest.Pytester, option: str, raw: str, attribute: str, expected: float
) -> None:
    config = plan_project.parseconfigure("--batch-plan", "plan.md", "-o", f"{option}={raw}")
    state = state_of(config)
    assert state is not None
    value = getattr(state.settings, attribute)
    assert value == expected and type(value) is type(expected)


def test_a_float_spelled_max_tokens_reaches_the_dry_run_and_the_request(plan_project: pytest.Pytester) -> None:
    """The INTERNALERROR of ``int('8192.0')``: the value was validated, then re-read raw."""
    result = plan_project.runpytest("--batch-plan", "plan.md", "--batch-dry-run", "-o", "batchgen_max_tokens=8192.0")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*next.md -> claude-haiku*", "*dry run: 1 pending row(s)*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["-o", "batchgen_max_tokens=0x10"], ["batchgen_max_tokens", "is not a whole number"]),
        (["-o", "batchgen_max_output_bytes=2.5"], ["batchgen_max_output_bytes", "is not a whole number"]),
        (["-o", "batchgen_timeout=nan"], ["batchgen_timeout", "is not a number"]),
        (["-o", "batchgen_timeout=-inf"], ["batchgen_timeout", "is not a number"]),
        (["-o", "batchgen_linter_timeout=0"], ["batchgen_linter_timeout", "more than zero"]),
        (["-o", "batchgen_max_retries=-1"], ["batchgen_max_retries", "zero or more"]),
        (["-o", "batchgen_models=just-a-word"], ["batchgen_models", "'just-a-word'"]),
        (["-o", "batchgen_prices=haiku: cheap"], ["batchgen_prices", "cannot read"]),
        (["--batch-concurrency", "0"], ["--batch-concurrency", "at least 1"]),
        (["--batch-concurrency", "2.5"], ["--batch-concurrency", "not a whole number"]),
        (["--batch-max-attempts", "many"], ["--batch-max-attempts", "not a whole number"]),
        # each sample is a paid call a row and Judge: line, asked one after another
        (["--batch-judge-samples", "0"], ["--batch-judge-samples", "at least 1"]),
        (["--batch-judge-samples", "1000"], ["--batch-judge-samples", "'1000': at most 25", "avoids ties"]),
        (["--batch-max-cost", "-1"], ["argument --batch-max-cost: '-1': must be zero or more (dollars)"]),
        (["--batch-max-cost", "nan"], ["argument --batch-max-cost: 'nan': must be zero or more (dollars)"]),
        (["--batch-max-cost", "cheap"], ["--batch-max-cost", "not a number"]),
        # pytest's own bool conversion raised a ValueError: an INTERNALERROR
        (["-o", "batchgen_remember_limits=maybe"], ["batchgen_remember_limits = 'maybe' is not true or false"]),
        # found only when the run wrote them, at its very end, or overwritten
        (["--batch-report", "out"], ["--batch-report", "out: is a folder; name a file in it"]),
        (["--batch-report", "plan.md"], ["plan.md: is the plan plan.md; name another file"]),
        (["--batch-summary", "out/ref.md"], ["--batch-summary", "out/ref.md: is the format reference of plan.md"]),
        (["--batch-report", "out/next.md"], ["out/next.md: is row next.md's output in plan.md"]),
        (["--batch-report", "cassettes/plan/x.json"], ["is a file in the cassette folder of plan.md"]),
        (
            ["--batch-report", "run.out", "--batch-summary", "./run.out"],
            ["--batch-summary", "run.out: is the file --batch-report writes too"],
        ),
        # options of a run that calls the model, in one that makes no call: silently ignored
        (
            ["--batch-validate-only", "--batch-record-mode", "all"],
            ["--batch-record-mode all records model calls; --batch-validate-only makes no model call"],
        ),
        (
            ["--batch-readonly", "--batch-api", "batches"],
            ["--batch-api batches sends Message Batches; --batch-readonly makes no model call"],
        ),
        (["--batch-cancel"], ["--batch-cancel cancels Message Batches: it needs --batch-api batches"]),
        # a dry run wrote no report, without a word
        (["--batch-report", "r.json"], ["--batch-dry-run writes nothing, --batch-report included"]),
        (["--batch-summary", "s.md"], ["--batch-dry-run writes nothing, --batch-summary included"]),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_it(
    plan_project: pytest.Pytester, args: list[str], needles: list[str]
) -> None:
    assert_usage_error(plan_project.runpytest("--batch-plan", "plan.md", "--batch-dry-run", *args), *needles)


def test_a_report_in_addopts_does_not_stop_a_dry_run(plan_project: pytest.Pytester) -> None:
    # typed with --batch-dry-run, --batch-report is a usage error; from the project's addopts
    # it stopped every dry run of the project, which then had to clear addopts to run one
    plan_project.makeini("[pytest]\naddopts = --batch-report r.json --batch-summary s.md\n")
    result = plan_project.runpytest("--batch-plan", "plan.md", "--batch-dry-run")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["not written (a dry run writes nothing): --batch-report *r.json, --batch-summary *s.md"]
    )
    assert not (plan_project.path / "r.json").exists() and not (plan_project.path / "s.md").exists()


def test_a_report_path_holding_another_file_is_refused_and_an_old_report_is_replaced(
    plan_project: pytest.Pytester,
) -> None:
    (plan_project.path / "notes.json").write_text("my notes, not a report\n", encoding="utf-8")
    result = plan_project.runpytest("--batch-plan", "plan.md", "--batch-validate-only", "--batch-report", "notes.json")
    assert_usage_error(result, "notes.json: the file exists and is not a pytest-batchgen JSON report")
    assert (plan_project.path / "notes.json").read_text(encoding="utf-8") == "my notes, not a report\n"
    for _ in range(2):  # the second run replaces the first one's report
        result = plan_project.runpytest("--batch-plan", "plan.md", "--batch-validate-only", "--batch-report", "r.json")
        assert result.ret != pytest.ExitCode.USAGE_ERROR, result.stdout.str()
        assert json.loads((plan_project.path / "r.json").read_text(encoding="utf-8"))["plans"]


def test_a_project_in_a_folder_with_a_bracket_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest refuses a collection argument with '[' and no '::'; the plans were passed as absolute
    # paths, so every run of a project in a folder like "site [draft]" stopped at "path cannot
    # contain [] parametrization"
    site = pytester.path / "site [draft]"
    (site / "out").mkdir(parents=True)
    (site / "plan.md").write_text(PLAN, encoding="utf-8")
    (site / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (site / "out" / "ref.md").write_text("---\nterm: Ref\n---\n\n## Definition\n\nR.\n", encoding="utf-8")
    monkeypatch.chdir(site)

    for node in ((), ("plan.md::ref.md",)):
        result = pytester.runpytest("--batch-plan", "plan.md", "--batch-readonly", *node)
        assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
        result.stdout.fnmatch_lines(["*1 passed*"])


def test_command_line_numbers_in_unusual_spellings(plan_project: pytest.Pytester) -> None:
    config = plan_project.parseconfigure(
        "--batch-plan", "plan.md", "--batch-concurrency", "016", "--batch-max-cost", "1e-2"
    )
    state = state_of(config)
    assert state is not None
    assert state.settings.concurrency == 16 and state.settings.max_cost == 0.01


# -- the process's role ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, role",
    [
        (SimpleNamespace(option=SimpleNamespace()), Role.PLAIN),
        (SimpleNamespace(option=SimpleNamespace(numprocesses=0, dist="no")), Role.PLAIN),
        (SimpleNamespace(option=SimpleNamespace(numprocesses=2, dist="load")), Role.CONTROLLER),
        (SimpleNamespace(option=SimpleNamespace(numprocesses=None, dist="loadscope")), Role.CONTROLLER),
        (SimpleNamespace(option=SimpleNamespace(numprocesses=2, dist="load"), workerinput={}), Role.WORKER),
        # xdist starts no workers for --collect-only: this process lists the items of a plain run
        (SimpleNamespace(option=SimpleNamespace(numprocesses=2, dist="load", collectonly=True)), Role.PLAIN),
    ],
)
def test_the_role_of_a_process(config: object, role: Role) -> None:
    assert Role.of(config) is role  # type: ignore[arg-type]


# -- one row identity ------------------------------------------------------------------------

ROOT = Path("/repo")
GLOSSARY = RowId(ROOT / "plans" / "glossary.md", "quorum.md")
OTHER = RowId(ROOT / "plans" / "other.md", "quorum.md")


def test_a_row_id_formats_its_key_param_id_and_node_id() -> None:
    assert GLOSSARY.key == "/repo/plans/glossary.md::quorum.md"
    assert GLOSSARY.param_id(several_plans=False) == "quorum.md"
    assert GLOSSARY.param_id(several_plans=True) == "glossary/quorum.md"
    assert GLOSSARY.node_id(ROOT) == "plans/glossary.md::quorum.md"
    assert GLOSSARY.node_id(Path("/elsewhere")) == "/repo/plans/glossary.md::quorum.md"
    assert GLOSSARY != OTHER and len({GLOSSARY, OTHER, RowId(GLOSSARY.plan, "quorum.md")}) == 2
    # one string however often the key is made: the maps that key a row do not each keep a copy
    assert RowId(Path(str(GLOSSARY.plan)), "quorum.md").key is GLOSSARY.key


@pytest.mark.parametrize(
    "nodeid, several, expected",
    [
        ("plans/glossary.md::quorum.md::front-matter", False, True),
        ("plans/glossary.md::quorum.md::generate", True, True),
        ("plans/other.md::quorum.md::generate", True, False),
        ("plans/other.md::quorum.md::generate", False, True),  # one plan: the plan part is not compared
        ("plans/glossary.md::cap.md::front-matter", False, False),
        ("checks/test_x.py::test_y[quorum.md]", False, True),
        ("checks/test_x.py::test_y[glossary/quorum.md]", True, True),
        ("checks/test_x.py::test_y[other/quorum.md]", True, False),
        ("checks/test_x.py::test_y[quorum.md-1]", False, True),
        ("checks/test_x.py::test_y[a-quorum.md]", False, True),
        ("checks/test_x.py::test_y[a-quorum.md-b]", False, True),
        ("checks/test_x.py::test_y[xquorum.md]", False, False),
        ("checks/test_x.py::test_y", False, False),
        ("checks/test_x.py::TestK::test_y[quorum.md]", False, True),
    ],
)
def test_a_row_id_matches_the_node_ids_of_its_items(nodeid: str, several: bool, expected: bool) -> None:
    assert GLOSSARY.matches(nodeid, ROOT, several) is expected


# -- outcomes and verdicts are enums that keep their strings -----------------------------------


def test_outcomes_say_what_they_mean() -> None:
    assert {o for o in Outcome if o.generation_failed} == {Outcome.ERROR, Outcome.TRUNCATED, Outcome.REFUSED}
    assert {o for o in Outcome if not o.counts_as_failed} == {Outcome.PASSED, Outcome.KEPT, Outcome.SKIPPED}
    assert f"{Outcome.TRUNCATED}: x" == "truncated: x" and f"{Verdict.NOT_RUN}" == "not run"


def test_a_row_result_crosses_processes_as_plain_json_and_comes_back_typed() -> None:
    result = RowResult("k", Outcome.FAILED, [Attempt(1, model="m", failures=["a: b"])], error="e", wrote=True)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["outcome"] == "failed"
    back = RowResult.from_dict(data)
    assert back == result and back.outcome is Outcome.FAILED


def test_row_results_are_set_once_waited_for_and_told_to_each_callback(caplog: pytest.LogCaptureFixture) -> None:
    """What the dispatchers kept a Future a row for (1.5 KB each), in one dict."""
    import concurrent.futures
    import threading

    results = RowResults(["a", "b", "c"])
    assert "a" in results and "z" not in results
    with pytest.raises(concurrent.futures.TimeoutError):
        results.wait("a", timeout=0.01)
    seen: list[str] = []
    results.on_result(lambda r: seen.append(r.key))
    results.on_result(lambda r: 1 / 0)  # logged, and the others still told
    waited: list[RowResult] = []
    waiter = threading.Thread(target=lambda: waited.append(results.wait("b", timeout=10)))
    waiter.start()

    first = RowResult("b", Outcome.PASSED)
    results.set("b", first)
    results.set("b", RowResult("b", Outcome.ERROR))  # a second result for a row: ignored
    waiter.join(10)

    assert waited == [first] and results.wait("b") is first and results.done("b")
    assert results.pending() == ["a", "c"] and results.all() == {"b": first}
    late: list[str] = []
    results.on_result(lambda r: late.append(r.key))  # told at once of the result already set
    results.set("a", RowResult("a", Outcome.FAILED))
    assert seen == ["b", "a"] and late == ["b", "a"]
    assert sum("a row-result callback failed" in r.message for r in caplog.records) == 2


def _row(filename: str) -> Row:
    return Row("1", 10, "T", filename, "haiku", "claude-haiku-5-5", "pending", {})


def test_a_budget_skip_is_a_field_not_a_phrase_in_the_error() -> None:
    says_max_cost = RowResult("a", "skipped", error="not sent: --batch-max-cost mentioned by a user's message")
    budget = RowResult("b", "skipped", error="not sent", budget_skipped=True)
    reports = [
        RowReport("plan.md", _row("a.md"), "pending", "pending", Verdict.SKIPPED, says_max_cost),
        RowReport("plan.md", _row("b.md"), "pending", "pending", Verdict.SKIPPED, budget),
    ]
    assert totals(reports, PriceTable()).skipped_by_budget == 1


@pytest.mark.parametrize("text", ["plan.md::quorum.md", "plan.md::o'neil.md", "my plans/p.md::a b [x].md", "''"])
def test_a_node_id_in_a_printed_command_is_one_shell_word(text):
    import shlex

    from pytest_batchgen.rowid import shell_word

    assert shlex.split(f"pytest {shell_word(text)} -q") == ["pytest", text, "-q"]
    assert shell_word("plan.md::quorum.md") == "'plan.md::quorum.md'"  # as the README shows it


def test_the_rerecord_command_survives_a_plan_path_with_a_space_and_a_quote_in_a_filename(tmp_path, monkeypatch):
    import shlex

    from pytest_batchgen.checklist import compile_checklist
    from pytest_batchgen.document import DocumentCache
    from pytest_batchgen.generation import rerecord_hint
    from pytest_batchgen.plan import load_plan
    from pytest_batchgen.rules import BUILTIN_FORMS
    from pytest_batchgen.run import PlanRun

    folder = tmp_path / "my plans"
    folder.mkdir()
    (tmp_path / "out").mkdir()  # paths in a plan are relative to the rootdir
    (tmp_path / "out" / "ref.md").write_text("---\nterm: R\n---\n")
    (folder / "p.md").write_text(
        "## Format Reference\nout/ref.md\n\n## Output Directory\nout/\n\n## Content Rules\n- none\n\n"
        "## Validation Checklist\n1. Front matter includes term\n\n"
        "## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n| O'Neil | o'neil.md | haiku | pending |\n"
    )
    plan = load_plan(folder / "p.md", tmp_path)
    run = PlanRun(plan=plan, rules=compile_checklist(plan, BUILTIN_FORMS), rows=plan.rows, docs=DocumentCache())
    monkeypatch.chdir(tmp_path)  # a printed command names paths from where it is run
    words = shlex.split(rerecord_hint(run, plan.rows[0]))
    assert words == [
        "pytest",
        "--batch-plan",
        "my plans/p.md",
        "--batch-record-mode",
        "all",
        "my plans/p.md::o'neil.md",
    ]
