"""pytest imports every installed plugin in every run: one without ``--batch-plan`` must not pay
for the plan parser, the checklist, the front matter reader or the client (their import took
about as many instructions as pytest's own start; see plugin.py's docstring)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import pytest_batchgen

#: what the plugin may import in a run without a plan: its hooks, the options and the state's key
GLUE = {
    "pytest_batchgen",
    "pytest_batchgen.defaults",
    "pytest_batchgen.errors",
    "pytest_batchgen.hookspecs",
    "pytest_batchgen.plugin",
    "pytest_batchgen.settings",
    "pytest_batchgen.state",
}

RECORDER = """
import json, sys

def pytest_sessionfinish(session):
    with open("modules.json", "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def _modules_after_run(pytester: pytest.Pytester, *args: str) -> set[str]:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=2)
    return set(json.loads((pytester.path / "modules.json").read_text()))


def test_a_run_without_a_plan_imports_only_the_plugins_glue(pytester: pytest.Pytester) -> None:
    # a fresh interpreter each (subprocess): this one has imported everything long ago. The same
    # run without the plugin is the reference, so other installed plugins' imports cancel out
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(
        test_plain="""
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_plain(n, tmp_path):
            assert n in (1, 2)
        """
    )
    with_plugin = _modules_after_run(pytester)
    without = _modules_after_run(pytester, "-p", "no:batchgen")
    assert "pytest_batchgen.plugin" in with_plugin  # the entry point did load it
    assert "pytest_batchgen.plugin" not in without
    added = with_plugin - without
    assert added - GLUE == set(), f"a run without --batch-plan imported {sorted(added - GLUE)}"


def test_a_run_with_a_plan_still_imports_what_it_needs(pytester: pytest.Pytester) -> None:
    """The other half: the lazy imports do happen once a plan is given (a dry run lists the
    rows without calling the model)."""
    pytester.makeconftest(RECORDER)
    pytester.makefile(".md", reference="---\nterm: R\n---\n\n## Definition\n\nText.\n")
    pytester.makefile(
        ".md",
        plan="## Format Reference\nreference.md\n\n## Output Directory\nout/\n\n"
        "## Content Rules\n- Plain words\n\n## Validation Checklist\n1. Front matter includes term\n\n"
        "## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n| A | a.md | haiku | pending |\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--batch-plan", "plan.md", "--batch-dry-run")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    loaded = set(json.loads((pytester.path / "modules.json").read_text()))
    for module in ("pytest_batchgen.plan", "pytest_batchgen.checklist", "pytest_batchgen.rules", "markdown_it"):
        assert module in loaded
    for module in ("anthropic", "vcr"):  # a dry run calls no model
        assert module not in loaded


def test_the_public_names_resolve_on_first_use() -> None:
    code = (
        "import sys, pytest_batchgen as p\n"
        "before = 'pytest_batchgen.checklist' in sys.modules\n"
        "from pytest_batchgen import ChecklistForm, CheckContext, CompileContext, Failure\n"
        "import pytest_batchgen.checklist as c\n"
        "print(before, ChecklistForm is c.ChecklistForm and Failure is c.Failure, 'ChecklistForm' in dir(p))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        pytest_batchgen.nothing_here  # noqa: B018
    assert set(pytest_batchgen.__all__) <= set(dir(pytest_batchgen))
