"""User errors found in review: each is a message naming the file and the fix, never a traceback."""

from __future__ import annotations

import pytest

from planfactory import REFERENCE, plan_text, write_project


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--batch-plan", "plan.md", "--batch-validate-only", *args)


def assert_clean_usage_error(result: pytest.RunResult, *needles: str) -> None:
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
def test_plan_paths_may_not_leave_the_rootdir(pytester, section, value, what):
    write_project(pytester.path, plan_text().replace(section, value))
    (pytester.path.parent / "secret.md").write_text(REFERENCE)
    result = run(pytester)
    assert_clean_usage_error(result, "plan.md:", f"the {what}", "lies outside the rootdir")


def test_a_format_reference_that_is_not_utf8_is_a_usage_error(pytester):
    write_project(pytester.path, plan_text())
    (pytester.path / "out" / "ref.md").write_bytes(b"---\nterm: \xff\xfe\n---\n")
    assert_clean_usage_error(run(pytester), "plan.md:", "format reference", "not UTF-8")


@pytest.mark.parametrize("option", ["batchgen_max_tokens", "batchgen_timeout", "batchgen_max_retries", "batchgen_linter_timeout"])
def test_a_non_numeric_ini_option_is_a_usage_error(pytester, option):
    write_project(pytester.path, plan_text())
    assert_clean_usage_error(run(pytester, "-o", f"{option}=lots"), option, "'lots' is not a")


@pytest.mark.parametrize("value, says", [("nan", "is not a"), ("inf", "is not a"), ("0", "more than zero"), ("-1", "more than zero")])
def test_ini_timeouts_must_be_finite_and_positive(pytester, value, says):
    write_project(pytester.path, plan_text())
    assert_clean_usage_error(run(pytester, "-o", f"batchgen_linter_timeout={value}"), "batchgen_linter_timeout", says)


def test_ini_whole_numbers(pytester):
    write_project(pytester.path, plan_text())
    (pytester.path / "out" / "alpha.md").write_text(REFERENCE)
    assert run(pytester, "-o", "batchgen_max_output_bytes=1e6").ret == pytest.ExitCode.OK
    assert_clean_usage_error(run(pytester, "-o", "batchgen_max_tokens=2.5"), "is not a whole number")
    assert_clean_usage_error(run(pytester, "-o", "batchgen_max_retries=-1"), "must be zero or more")


def test_a_tracking_file_must_be_markdown(pytester):
    text = plan_text().replace(
        "1. Front matter includes term, category, and at least 2 tags",
        "1. Front matter includes term, category, and at least 2 tags\n2. Output registered in `conftest.py`",
    )
    write_project(pytester.path, text)
    assert_clean_usage_error(run(pytester), "plan.md:", "must be a Markdown file")
    assert not (pytester.path / "conftest.py").exists()


def test_a_tracking_file_that_is_a_folder_fails_its_check_with_a_message(pytester):
    text = plan_text().replace(
        "1. Front matter includes term, category, and at least 2 tags",
        "1. Front matter includes term, category, and at least 2 tags\n2. Output registered in `index.md`",
    )
    write_project(pytester.path, text)
    (pytester.path / "index.md").mkdir()
    (pytester.path / "out" / "alpha.md").write_text(REFERENCE)
    result = run(pytester, "-k", "alpha")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "tracking file:" in out and "is a folder, not a file" in out
    assert "Traceback" not in out and "IsADirectoryError" not in out


def test_a_plan_named_through_dotdot_is_collected(pytester):
    write_project(pytester.path, plan_text())
    (pytester.path / "out" / "alpha.md").write_text(REFERENCE)
    (pytester.path / "sub").mkdir()
    result = pytester.runpytest("-p", "no:cacheprovider", "--batch-plan", "sub/../plan.md", "--batch-validate-only")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*passed*"])
