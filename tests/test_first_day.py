"""A new user's first day (issue #10): wrong results and messages found by trying the plugin.

Each test reproduces a finding of a real run: a custom check skipped by naming a row, a custom
test crashing on a row with no output, totals that contradicted themselves, a model column that
showed two kinds of thing, notes that did not say what to do.
"""

from __future__ import annotations

import pytest

from genhelpers import (
    Reply,
    bad_value,
    draft,
    fake,  # noqa: F401  (fixture)
    item_outcomes,
    lint_bad,
    notes,
    requests_by_row,
    router,
    rows_for,
    statuses,
    write_project,
)

CUSTOM_CHECK = '''\
def test_no_forbidden_word(batch_output):
    assert "forbidden" not in batch_output.text, f"{batch_output.path.name} says forbidden"
'''


def given_a_project_with_a_custom_check(pytester: pytest.Pytester, *names: str) -> None:
    write_project(pytester.path, rows_for(*names), ini_extra="batchgen_checks = checks/test_custom.py\n")
    (pytester.path / "checks").mkdir()
    (pytester.path / "checks" / "test_custom.py").write_text(CUSTOM_CHECK, encoding="utf-8")


def write_output(pytester: pytest.Pytester, filename: str, text: str) -> None:
    (pytester.path / "output" / filename).write_text(text, encoding="utf-8")


def test_naming_a_row_runs_its_custom_checks_so_a_failing_one_keeps_it_pending(pytester):
    given_a_project_with_a_custom_check(pytester, "alpha", "beta")
    write_output(pytester, "alpha.md", draft("Alpha"))
    write_output(pytester, "beta.md", draft("Beta", extra="A forbidden word.\n"))

    result = pytester.runpytest("--batch-plan", "plan.md", "--batch-validate-only", "plan.md::beta.md")

    outcomes = item_outcomes(result)
    assert outcomes["test_no_forbidden_word[beta.md]"] == "failed"
    assert "test_no_forbidden_word[alpha.md]" not in outcomes  # the other row's test is deselected
    assert not any(key.startswith("alpha.md::") for key in outcomes)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert statuses(pytester.path) == {"alpha.md": "pending", "beta.md": "pending"}
    assert "beta.md says forbidden" in notes(pytester.path)["beta.md"]


def test_naming_one_item_of_a_row_does_not_mark_the_row_complete(pytester):
    given_a_project_with_a_custom_check(pytester, "alpha")
    write_output(pytester, "alpha.md", draft("Alpha"))

    result = pytester.runpytest("--batch-plan", "plan.md", "--batch-validate-only", "plan.md::alpha.md::front-matter")

    assert result.ret == pytest.ExitCode.OK
    assert list(item_outcomes(result)) == ["alpha.md::front-matter"]
    assert statuses(pytester.path) == {"alpha.md": "pending"}  # the other checks did not run


def test_naming_a_row_with_every_check_passing_marks_it_complete(pytester):
    given_a_project_with_a_custom_check(pytester, "alpha", "beta")
    write_output(pytester, "alpha.md", draft("Alpha"))

    result = pytester.runpytest("--batch-plan", "plan.md", "--batch-validate-only", "plan.md::alpha.md")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert item_outcomes(result)["test_no_forbidden_word[alpha.md]"] == "passed"
    assert statuses(pytester.path) == {"alpha.md": "complete", "beta.md": "pending"}


def test_the_rerecord_recipe_with_a_failing_custom_check_leaves_the_row_pending(pytester, fake):
    """The README's recipe, ``pytest --batch-plan P --batch-record-mode all 'P::ROW'``, against
    the loopback server: the drafts pass the checklist but not the custom check."""
    given_a_project_with_a_custom_check(pytester, "alpha", "beta")
    router(fake).set("beta.md", Reply.ok(draft("Beta", extra="A forbidden word.\n")))

    result = pytester.runpytest("--batch-plan", "plan.md", "--batch-record-mode", "all", "plan.md::beta.md")

    assert list(requests_by_row(fake)) == ["beta.md"]  # only the named row was generated
    outcomes = item_outcomes(result)
    assert outcomes["beta.md::generate"] == "passed"
    assert outcomes["test_no_forbidden_word[beta.md]"] == "failed"
    assert statuses(pytester.path) == {"alpha.md": "pending", "beta.md": "pending"}
    assert "beta.md says forbidden" in notes(pytester.path)["beta.md"]


def test_a_custom_test_skips_with_the_generations_reason_when_nothing_was_written(pytester, fake):
    given_a_project_with_a_custom_check(pytester, "down")
    router(fake).set("down.md", Reply.error(400, "invalid_request_error", "prompt is too long"))

    result = pytester.runpytest("--batch-plan", "plan.md", "-rs")

    outcomes = item_outcomes(result)
    assert outcomes["down.md::generate"] == "failed"
    assert outcomes["test_no_forbidden_word[down.md]"] == "skipped"
    result.stdout.fnmatch_lines(["*not checked: generation wrote no output (error: *prompt is too long*"])
    note = notes(pytester.path)["down.md"]
    assert "KeyError" not in note and "FileNotFoundError" not in note and "test_no_forbidden_word" not in note


def summary_line(result: pytest.RunResult, prefix: str) -> str:
    return next(line for line in result.stdout.lines if line.startswith(prefix))


def test_totals_count_each_row_once_by_its_verdict_in_this_run(pytester):
    write_project(pytester.path, rows_for("good", "bad"))
    plan = pytester.path / "plan.md"
    plan.write_text(plan.read_text(encoding="utf-8").replace("| pending |", "| complete |"), encoding="utf-8")
    write_output(pytester, "good.md", draft("Good"))
    write_output(pytester, "bad.md", bad_value("Bad"))

    result = pytester.runpytest("--batch-plan", "plan.md", "--batch-readonly")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert summary_line(result, "total:").startswith("total: 2 rows, 1 complete, 1 failed;")


def test_the_model_column_shows_the_resolved_model_for_every_row(pytester):
    write_project(pytester.path, rows_for("defaulted", "named"))
    plan = pytester.path / "plan.md"
    text = plan.read_text(encoding="utf-8").replace("| defaulted.md | haiku |", "| defaulted.md |  |")
    plan.write_text(text + "\n## Model Selection Rules\n- Default: haiku\n", encoding="utf-8")
    write_output(pytester, "defaulted.md", draft("Defaulted"))
    write_output(pytester, "named.md", draft("Named"))

    result = pytester.runpytest("--batch-plan", "plan.md", "--batch-readonly")

    rows = [line.split() for line in result.stdout.lines if line.startswith("1 ")]
    assert [cells[1] for cells in rows] == ["defaulted.md", "named.md"]
    assert {cells[2] for cells in rows} == {"claude-haiku-5-5"}


def test_the_note_of_a_complete_row_that_fails_says_what_to_change(pytester):
    write_project(pytester.path, rows_for("bad"))
    plan = pytester.path / "plan.md"
    plan.write_text(plan.read_text(encoding="utf-8").replace("| pending |", "| complete |"), encoding="utf-8")
    write_output(pytester, "bad.md", bad_value("Bad"))

    pytester.runpytest("--batch-plan", "plan.md", "--batch-validate-only")

    note = notes(pytester.path)["bad.md"]
    assert "fix output/bad.md" in note and "set its Status to pending" in note


def test_a_linter_failure_note_carries_the_linters_first_lines(pytester):
    write_project(pytester.path, rows_for("linty"))
    write_output(pytester, "linty.md", lint_bad("Linty"))

    pytester.runpytest("--batch-plan", "plan.md", "--batch-validate-only")

    note = notes(pytester.path)["linty.md"]
    assert "X001 forbidden marker LINT-BAD" in note, note


def test_readonly_writes_no_file_not_even_pytests_cache(pytester):
    write_project(pytester.path, rows_for("good"))
    (pytester.path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # the cache plugin is on
    write_output(pytester, "good.md", draft("Good"))
    (pytester.path / "checks").mkdir()
    (pytester.path / "checks" / "test_custom.py").write_text(CUSTOM_CHECK, encoding="utf-8")
    def tree() -> list[str]:  # pytester's own files for the subprocess (basetemp, stdout, stderr) aside
        paths = (p.relative_to(pytester.path).as_posix() for p in pytester.path.rglob("*"))
        return sorted(p for p in paths if not p.startswith("runpytest-") and p not in ("stdout", "stderr"))

    before = tree()

    result = pytester.runpytest_subprocess("--batch-plan", "plan.md", "--batch-readonly", "checks/test_custom.py")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert tree() == before
