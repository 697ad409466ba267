"""A new user's first day (issue #10): wrong results and messages found by trying the plugin.

Each test reproduces a finding of a real run: a custom check skipped by naming a row, a custom
test crashing on a row with no output, totals that contradicted themselves, a model column that
showed two kinds of thing, notes that did not say what to do.
"""

from __future__ import annotations

import pytest

from genhelpers import Reply, bad_value, checklist_lines, draft, lint_bad, requests_by_row, router, rows_for
from harness import Project

CUSTOM_CHECK = """\
def test_no_forbidden_word(batch_output):
    assert "forbidden" not in batch_output.text, f"{batch_output.path.name} says forbidden"
"""


def given_a_project_with_a_custom_check(project: Project, *names: str) -> None:
    project.write_rows(rows_for(*names), ini_extra="batchgen_checks = checks/test_custom.py\n")
    project.write("checks/test_custom.py", CUSTOM_CHECK)


def mark_complete(project: Project) -> None:
    project.write("plan.md", project.read().replace("| pending |", "| complete |"))


def test_naming_a_row_runs_its_custom_checks_so_a_failing_one_keeps_it_pending(project):
    given_a_project_with_a_custom_check(project, "alpha", "beta")
    project.write("output/alpha.md", draft("Alpha"))
    project.write("output/beta.md", draft("Beta", extra="A forbidden word.\n"))

    result = project.run("--batch-validate-only", "plan.md::beta.md")

    outcomes = result.outcomes()
    assert outcomes["test_no_forbidden_word[beta.md]"] == "failed"
    assert "test_no_forbidden_word[alpha.md]" not in outcomes  # the other row's test is deselected
    assert not any(key.startswith("alpha.md::") for key in outcomes)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "pending"}
    assert "beta.md says forbidden" in project.notes()["beta.md"]


def test_naming_one_item_of_a_row_does_not_mark_the_row_complete(project):
    given_a_project_with_a_custom_check(project, "alpha")
    project.write("output/alpha.md", draft("Alpha"))

    result = project.run("--batch-validate-only", "plan.md::alpha.md::front-matter")

    assert result.ret == pytest.ExitCode.OK
    assert list(result.outcomes()) == ["alpha.md::front-matter"]
    assert project.statuses() == {"alpha.md": "pending"}  # the other checks did not run


TWO_CUSTOM_CHECKS = (
    CUSTOM_CHECK
    + """

def test_not_beta(batch_output):
    assert batch_output.row.filename != "beta.md", "beta fails this custom check"
"""
)


def test_naming_one_custom_test_neither_completes_nor_registers_the_rows(project):
    """A node id inside a batchgen_checks file runs that test only: the rows' other custom
    tests did not run, so no row is marked complete nor registered."""
    given_a_project_with_a_custom_check(project, "alpha", "beta")
    project.write("checks/test_custom.py", TWO_CUSTOM_CHECKS)
    registered = f"{len(checklist_lines()) + 1}. Output registered in `output/INDEX.md`\n"
    project.write("plan.md", project.read().replace("\n## Phase 1", registered + "\n## Phase 1", 1))
    project.write("output/alpha.md", draft("Alpha"))
    project.write("output/beta.md", draft("Beta"))
    project.write("output/INDEX.md", "")

    result = project.run("--batch-validate-only", "checks/test_custom.py::test_no_forbidden_word")

    outcomes = result.outcomes()
    assert outcomes["test_no_forbidden_word[beta.md]"] == "passed"
    assert not any(key.startswith("test_not_beta") for key in outcomes)  # not named: deselected
    assert outcomes["beta.md::registered"] == "skipped"
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "pending"}
    assert project.read("output/INDEX.md") == ""


SKIPPING_CHECK = """\
import pytest


def test_comparisons_only(batch_output):
    if batch_output.row.filename == "beta.md":
        pytest.skip("beta is no comparison")
"""


def test_a_custom_test_that_skips_keeps_the_output_out_of_the_tracking_file(project):
    """A skipped custom test keeps its row pending (not every item passed), and the tracking
    file lists the outputs that pass: beta was registered all the same, a pending row in the
    published index, its ``registered`` item passing."""
    given_a_project_with_a_custom_check(project, "alpha", "beta")
    project.write("checks/test_custom.py", CUSTOM_CHECK + "\n\n" + SKIPPING_CHECK)
    registered = f"{len(checklist_lines()) + 1}. Output registered in `output/INDEX.md`\n"
    project.write("plan.md", project.read().replace("\n## Phase 1", registered + "\n## Phase 1", 1))
    project.write("output/alpha.md", draft("Alpha"))
    project.write("output/beta.md", draft("Beta"))
    project.write("output/INDEX.md", "")

    result = project.run("--batch-validate-only", "-rs")

    outcomes = result.outcomes()
    assert outcomes["test_comparisons_only[beta.md]"] == "skipped"
    assert outcomes["beta.md::registered"] == "skipped"
    assert outcomes["alpha.md::registered"] == "passed"
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "pending"}
    assert project.read("output/INDEX.md") == "- [Alpha](alpha.md)\n"
    result.stdout.fnmatch_lines(
        ["*not registered: the custom test test_comparisons_only[[]beta.md[]] was skipped (beta is no comparison)*"]
    )


def test_naming_one_custom_test_of_a_row_generates_no_other_row(project, fake):
    given_a_project_with_a_custom_check(project, "alpha", "beta")

    result = project.run("checks/test_custom.py::test_no_forbidden_word[beta.md]")

    assert list(requests_by_row(fake)) == ["beta.md"]  # the row the test belongs to, only
    assert result.outcomes()["test_no_forbidden_word[beta.md]"] == "passed"
    # the row's items ran with it, and this is its only custom test: every item of it passed
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "complete"}


def test_a_custom_test_node_that_names_nothing_is_a_usage_error(project):
    given_a_project_with_a_custom_check(project, "alpha")

    result = project.run("--batch-validate-only", "checks/test_custom.py::test_no_such_test")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "not found: checks/test_custom.py::test_no_such_test" in result.stderr.str()


def test_naming_a_row_with_every_check_passing_marks_it_complete(project):
    given_a_project_with_a_custom_check(project, "alpha", "beta")
    project.write("output/alpha.md", draft("Alpha"))

    result = project.run("--batch-validate-only", "plan.md::alpha.md")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert result.outcomes()["test_no_forbidden_word[alpha.md]"] == "passed"
    assert project.statuses() == {"alpha.md": "complete", "beta.md": "pending"}


def test_the_rerecord_recipe_with_a_failing_custom_check_leaves_the_row_pending(project, fake):
    """The README's recipe, ``pytest --batch-plan P --batch-record-mode all 'P::ROW'``, against
    the loopback server: the drafts pass the checklist but not the custom check."""
    given_a_project_with_a_custom_check(project, "alpha", "beta")
    router(fake).set("beta.md", Reply.ok(draft("Beta", extra="A forbidden word.\n")))

    result = project.run("--batch-record-mode", "all", "plan.md::beta.md")

    assert list(requests_by_row(fake)) == ["beta.md"]  # only the named row was generated
    outcomes = result.outcomes()
    assert outcomes["beta.md::generate"] == "passed"
    assert outcomes["test_no_forbidden_word[beta.md]"] == "failed"
    assert project.statuses() == {"alpha.md": "pending", "beta.md": "pending"}
    assert "beta.md says forbidden" in project.notes()["beta.md"]


def test_a_custom_test_skips_with_the_generations_reason_when_nothing_was_written(project, fake):
    given_a_project_with_a_custom_check(project, "down")
    router(fake).set("down.md", Reply.error(400, "invalid_request_error", "prompt is too long"))

    result = project.run("-rs")

    outcomes = result.outcomes()
    assert outcomes["down.md::generate"] == "failed"
    assert outcomes["test_no_forbidden_word[down.md]"] == "skipped"
    result.stdout.fnmatch_lines(["*not checked: generation wrote no output (error: *prompt is too long*"])
    note = project.notes()["down.md"]
    assert "KeyError" not in note and "FileNotFoundError" not in note and "test_no_forbidden_word" not in note


def summary_line(result, prefix: str) -> str:
    return next(line for line in result.stdout.lines if line.startswith(prefix))


def test_totals_count_each_row_once_by_its_verdict_in_this_run(project):
    project.write_rows(rows_for("good", "bad"))
    mark_complete(project)
    project.write("output/good.md", draft("Good"))
    project.write("output/bad.md", bad_value("Bad"))

    result = project.run("--batch-readonly")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert summary_line(result, "total:").startswith("total: 2 rows, 1 complete, 1 failed;")


def test_the_model_column_shows_the_resolved_model_for_every_row(project):
    project.write_rows(rows_for("defaulted", "named"))
    project.edit("plan.md", "| defaulted.md | haiku |", "| defaulted.md |  |")
    project.write("plan.md", project.read() + "\n## Model Selection Rules\n- Default: haiku\n")
    project.write("output/defaulted.md", draft("Defaulted"))
    project.write("output/named.md", draft("Named"))

    result = project.run("--batch-readonly")

    rows = [line.split() for line in result.stdout.lines if line.startswith("1 ")]
    assert [cells[1] for cells in rows] == ["defaulted.md", "named.md"]
    assert {cells[2] for cells in rows} == {"claude-haiku-5-5"}


def test_the_note_of_a_complete_row_that_fails_says_what_to_change(project):
    project.write_rows(rows_for("bad"))
    mark_complete(project)
    project.write("output/bad.md", bad_value("Bad"))

    project.run("--batch-validate-only")

    note = project.notes()["bad.md"]
    assert "fix output/bad.md" in note and "set its Status to pending" in note


def test_a_linter_failure_note_carries_the_linters_first_lines(project):
    project.write_rows(rows_for("linty"))
    project.write("output/linty.md", lint_bad("Linty"))

    project.run("--batch-validate-only")

    note = project.notes()["linty.md"]
    assert "X001 forbidden marker LINT-BAD" in note, note


def without_shared_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytecode is written beside the sources in the runs that follow, as on most machines, so
    that a ``__pycache__`` left in the project would show (see ``pytest_configure`` in conftest.py)."""
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)


def test_readonly_writes_no_file_not_even_pytests_cache(project, pytester, monkeypatch):
    without_shared_bytecode(monkeypatch)
    project.write_rows(rows_for("good"))
    project.ini()  # no "-p no:cacheprovider" here: the cache plugin is on
    project.write("output/good.md", draft("Good"))
    project.write("checks/test_custom.py", CUSTOM_CHECK)

    def tree() -> list[str]:  # pytester's own files for the subprocess (basetemp, stdout, stderr) aside
        paths = (p.relative_to(project.path).as_posix() for p in project.path.rglob("*"))
        return sorted(p for p in paths if not p.startswith("runpytest-") and p not in ("stdout", "stderr"))

    before = tree()

    result = pytester.runpytest_subprocess("--batch-plan", "plan.md", "--batch-readonly", "checks/test_custom.py")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "5 passed" in result.stdout.str()
    assert tree() == before


def test_dry_run_writes_no_file_not_even_pytests_cache(project, pytester, monkeypatch):
    # PRODUCT and README: a dry run sends nothing and writes nothing; it wrote .pytest_cache
    without_shared_bytecode(monkeypatch)
    project.write_rows([*rows_for("good"), *rows_for("new", model="sonnet")])
    project.ini("batchgen_checks = checks/test_custom.py\n")  # no "-p no:cacheprovider": the cache plugin is on
    project.write("output/good.md", draft("Good"))
    project.write("checks/test_custom.py", CUSTOM_CHECK)
    project.write("conftest.py", "")

    def tree() -> dict[str, tuple[int, bytes]]:
        """Every path below the project, with its mtime and content (pytester's own files aside)."""
        found = {}
        for path in project.path.rglob("*"):
            rel = path.relative_to(project.path).as_posix()
            if rel.startswith("runpytest-") or rel in ("stdout", "stderr"):
                continue
            found[rel] = (path.lstat().st_mtime_ns, path.read_bytes() if path.is_file() else b"")
        return found

    before = tree()

    result = pytester.runpytest_subprocess("--batch-plan", "plan.md", "--batch-dry-run")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "<title>New</title>" in result.stdout.str()  # the pending rows' prompts were shown
    assert tree() == before


#: a plugin under pytest-benchmark's name that, like it, makes its storage folder when it is
#: configured, in every run (the real one may be installed too: this one, named by ``-p``, takes
#: its name first)
WRITES_AT_CONFIGURE = """
import pathlib

def pytest_configure(config):
    pathlib.Path(".benchmarks").mkdir(exist_ok=True)
"""


def test_readonly_and_dry_runs_turn_off_a_plugin_that_writes_in_every_run(project, forks):
    # pytest-benchmark, installed in many environments, makes .benchmarks/ in every run
    project.forks = forks  # each run a process of its own (the plugin blocks bytecode in it)
    project.allow_plugin("benchmark")
    project.write_rows(rows_for("good"))
    project.ini()
    project.write("output/good.md", draft("Good"))
    project.write("benchmark.py", WRITES_AT_CONFIGURE)

    for option in ("--batch-readonly", "--batch-dry-run"):
        result = project.run("-p", "benchmark", option, subprocess=True)
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        assert not (project.path / ".benchmarks").exists(), option
    # an ordinary run keeps it: the plugin is named as the real one is
    assert project.run("-p", "benchmark", "--batch-validate-only", subprocess=True).ret == pytest.ExitCode.OK
    assert (project.path / ".benchmarks").is_dir()


def registered(project: Project) -> list[str]:
    return [line for line in project.read("output/INDEX.md").splitlines() if line.startswith("- ")]


def given_rows_with_passing_outputs(project: Project, *names: str) -> None:
    project.write_rows(rows_for(*names))
    project.edit("plan.md", "\n\n## Phase 1", "\n5. Output registered in `output/INDEX.md`\n\n## Phase 1")
    for name in names:
        project.write(f"output/{name}.md", draft(name.title()))


def test_registration_follows_the_plan_order_under_xdist(project):
    names = ("golf", "echo", "alpha", "hotel", "delta", "bravo", "foxtrot", "charlie")
    given_rows_with_passing_outputs(project, *names)

    result = project.run("--batch-validate-only", "-n", "2", "-p", "no:randomly")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert registered(project) == [f"- [{name.title()}]({name}.md)" for name in names]


def test_a_renamed_title_updates_its_entry_in_the_tracking_file(project):
    given_rows_with_passing_outputs(project, "alpha", "bravo")
    assert project.run("--batch-validate-only").ret == pytest.ExitCode.OK
    assert registered(project) == ["- [Alpha](alpha.md)", "- [Bravo](bravo.md)"]

    project.edit("plan.md", "| Alpha | alpha.md |", "| Alpha, renamed | alpha.md |")
    assert project.run("--batch-validate-only").ret == pytest.ExitCode.OK

    assert registered(project) == ["- [Alpha, renamed](alpha.md)", "- [Bravo](bravo.md)"]


def test_a_hand_kept_index_keeps_its_form_and_an_unclosed_block_fails_the_run(project):
    """A tracking file from the wild (a BOM, CRLF, the list in a blockquote): the new entry
    joins the quoted list in its form, every other byte stays. One that ends in a code fence
    never closed: a link appended there is code, so the output stayed unregistered and every
    run appended it again while passing; now the run fails, naming the fence, and the file
    is left as it is."""
    given_rows_with_passing_outputs(project, "alpha", "bravo")
    quoted = b"\xef\xbb\xbf# Index\r\n\r\n> Published:\r\n>\r\n> - [Bravo](bravo.md)\r\n\r\nKept by hand.\r\n"
    project.write("output/INDEX.md", quoted)
    assert project.run("--batch-validate-only").ret == pytest.ExitCode.OK
    assert (project.path / "output/INDEX.md").read_bytes() == quoted.replace(
        b"> - [Bravo]", b"> - [Alpha](alpha.md)\r\n> - [Bravo]"
    )

    fenced = b"# Index\n\nExample:\n\n```sh\nls output/\n"
    project.write("output/INDEX.md", fenced)
    for _ in range(2):
        result = project.run("--batch-validate-only")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        assert result.outcomes()["alpha.md::registered"] == "failed"
        result.stdout.fnmatch_lines(
            ["*tracking file: output/INDEX.md:5: this line opens a code block that nothing closes*close it*"]
        )
        assert (project.path / "output/INDEX.md").read_bytes() == fenced
    assert set(project.notes()) == {"alpha.md", "bravo.md"}  # (complete rows stay so, with a note)
