"""User errors found in review: each is a message naming the file and the fix, never a traceback."""

from __future__ import annotations

import pytest

from harness import Project, Run
from planfactory import REFERENCE, plan_text


def run(project: Project, *args: str) -> Run:
    return project.run("--batch-validate-only", *args)


def assert_clean_usage_error(result: Run, *needles: str) -> None:
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    for needle in needles:
        assert needle in out, out


@pytest.mark.parametrize(
    "section, value, what",
    [
        ("## Output Directory\nout/", "## Output Directory\n../elsewhere/", "output directory"),
        ("## Output Directory\nout/", "## Output Directory\n/tmp/elsewhere/", "output directory"),
        ("## Format Reference\nout/ref.md", "## Format Reference\n../secret.md", "format reference"),
    ],
)
def test_plan_paths_may_not_leave_the_rootdir(project, section, value, what):
    project.write_plan(plan_text().replace(section, value))
    (project.path.parent / "secret.md").write_text(REFERENCE)
    result = run(project)
    assert_clean_usage_error(result, "plan.md:", f"the {what}", "lies outside the rootdir")


def test_a_format_reference_that_is_not_utf8_is_a_usage_error(project):
    project.write_plan(plan_text())
    (project.path / "out" / "ref.md").write_bytes(b"---\nterm: \xff\xfe\n---\n")
    assert_clean_usage_error(run(project), "plan.md:", "format reference", "not UTF-8")


@pytest.mark.parametrize(
    "option", ["batchgen_max_tokens", "batchgen_timeout", "batchgen_max_retries", "batchgen_linter_timeout"]
)
def test_a_non_numeric_ini_option_is_a_usage_error(project, option):
    project.write_plan(plan_text())
    assert_clean_usage_error(run(project, "-o", f"{option}=lots"), option, "'lots' is not a")


@pytest.mark.parametrize(
    "value, says", [("nan", "is not a"), ("inf", "is not a"), ("0", "more than zero"), ("-1", "more than zero")]
)
def test_ini_timeouts_must_be_finite_and_positive(project, value, says):
    project.write_plan(plan_text())
    assert_clean_usage_error(run(project, "-o", f"batchgen_linter_timeout={value}"), "batchgen_linter_timeout", says)


def test_ini_whole_numbers(project):
    project.write_plan(plan_text())
    (project.path / "out" / "alpha.md").write_text(REFERENCE)
    assert run(project, "-o", "batchgen_max_output_bytes=1e6").ret == pytest.ExitCode.OK
    assert_clean_usage_error(run(project, "-o", "batchgen_max_tokens=2.5"), "is not a whole number")
    assert_clean_usage_error(run(project, "-o", "batchgen_max_retries=-1"), "must be zero or more")


def test_a_tracking_file_must_be_markdown(project):
    text = plan_text().replace(
        "1. Front matter includes term, category, and at least 2 tags",
        "1. Front matter includes term, category, and at least 2 tags\n2. Output registered in `conftest.py`",
    )
    project.write_plan(text)
    assert_clean_usage_error(run(project), "plan.md:", "must be a Markdown file")
    assert not (project.path / "conftest.py").exists()


def test_a_tracking_file_that_is_a_folder_fails_its_check_with_a_message(project):
    text = plan_text().replace(
        "1. Front matter includes term, category, and at least 2 tags",
        "1. Front matter includes term, category, and at least 2 tags\n2. Output registered in `index.md`",
    )
    project.write_plan(text)
    (project.path / "index.md").mkdir()
    (project.path / "out" / "alpha.md").write_text(REFERENCE)
    result = run(project, "-k", "alpha")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "tracking file:" in out and "is a folder, not a file" in out
    assert "Traceback" not in out and "IsADirectoryError" not in out


def test_a_plan_named_through_dotdot_is_collected(project):
    project.write_plan(plan_text())
    (project.path / "out" / "alpha.md").write_text(REFERENCE)
    (project.path / "sub").mkdir()
    result = project.run("--batch-validate-only", plan="sub/../plan.md")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*passed*"])
