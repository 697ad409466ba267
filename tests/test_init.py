"""``batchgen init`` (issue #10): a scaffold that works right away, and never overwrites.

Each test starts in pytester's empty folder, runs ``init`` (in-process through
:func:`pytest_batchgen.cli.main`, or once as ``python -m pytest_batchgen``), then runs the
plugin on what it wrote the way the printed next steps say: validate-only, dry run, and a
generation against the loopback API.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml  # noqa: F401  (see below)
from fakeapi import Reply
from genhelpers import loopback_api

from pytest_batchgen.checklist import compile_checklist
from pytest_batchgen.cli import main
from pytest_batchgen.plan import DEFAULT_MODELS, load_plan
from pytest_batchgen.planedit import read_notes
from pytest_batchgen.rules import BUILTIN_FORMS
from pytest_batchgen.scaffold import ScaffoldError, plan_scaffold, write_scaffold

PLAN = "plans/cheatsheets.md"
REFERENCE = "pathlib.md"
PENDING = {
    "itertools.md": "haiku",
    "collections.md": "haiku",
    "datetime.md": "haiku",
    "os-path-vs-pathlib.md": "sonnet",
    "threading-vs-asyncio.md": "sonnet",
}
WRITTEN = [
    "plans/cheatsheets.md",
    "cheatsheets/pathlib.md",
    "cheatsheets/INDEX.md",
    ".pymarkdown.json",
    "checks/test_cheatsheets.py",
    "pytest.ini",
    ".gitignore",
]
RULES = ["front-matter", "level-value", "kind-value", "sections", "lint", "registered"]
CUSTOM = ["test_title_is_the_rows_title", "test_examples_hold_python_code"]
NO_CACHE = ("-p", "no:cacheprovider")  # so a run that must write nothing writes no cache either
# pytester restores sys.modules after each in-process run, but libyaml's C extension is never
# unloaded: a yaml imported afresh by a later run hands it node classes it does not know, and
# saving a cassette fails with EmitterError. Imported here, one yaml serves every run.
HEAVY = {"pytest", "_pytest", "anthropic", "vcr", "httpx", "httpx2"}


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def statuses(root: Path, plan: str = PLAN) -> dict[str, str]:
    return {r.filename: r.status for r in load_plan(plan, root).rows}


def init(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["init", *args])
    out, err = capsys.readouterr()
    return code, out, err


# -- right after init: validate-only passes, a dry run shows the prompts ---------------------------


def test_init_in_an_empty_folder_then_validate_only_passes_and_dry_run_shows_prompts(pytester, capsys):
    assert list(pytester.path.iterdir()) == []

    code, out, err = init(capsys)

    assert code == 0, err
    assert err == ""
    assert sorted(snapshot(pytester.path)) == sorted(WRITTEN)
    for path in WRITTEN:
        assert re.search(rf"^  wrote\s+{re.escape(path)}\s", out, re.MULTILINE), (path, out)
    for step in (
        f"pytest --batch-plan {PLAN} --batch-validate-only",
        f"pytest --batch-plan {PLAN} --batch-dry-run",
        f"ANTHROPIC_API_KEY=sk-ant-... pytest --batch-plan {PLAN}",
    ):
        assert f"  {step}\n" in out
    assert "cd " not in out  # already in the folder
    assert "not installed" not in out  # the test environment has pymarkdown
    assert (pytester.path / ".gitignore").read_text().splitlines()[-4:] == [
        ".batchgen-drafts/",
        "# pytest-batchgen: its lock files and interrupted writes, hidden beside the files they serve",
        ".*.batchgen-lock",
        ".*.batchgen-tmp-*",
    ]
    written = snapshot(pytester.path)

    result = pytester.runpytest("--batch-plan", PLAN, "--batch-validate-only", "-v", *NO_CACHE)

    assert result.ret == 0, result.stdout.str()
    # the format reference's row: every rule and custom check; the pending rows: skipped
    result.assert_outcomes(passed=len(RULES) + len(CUSTOM), skipped=len(PENDING) * (len(RULES) + len(CUSTOM)))
    result.stdout.fnmatch_lines_random(
        [f"{PLAN}::{REFERENCE}::{rule} PASSED*" for rule in RULES]
        + [f"checks/test_cheatsheets.py::{test}[[]{REFERENCE}[]] PASSED*" for test in CUSTOM]
        + [f"{PLAN}::itertools.md::lint SKIPPED*"]
    )
    assert snapshot(pytester.path) == written  # the reference was complete and registered already

    result = pytester.runpytest("--batch-plan", PLAN, "--batch-dry-run", *NO_CACHE)

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines_random(
        [f"*- {name} -> {DEFAULT_MODELS[alias]} -*" for name, alias in PENDING.items()]
        + [
            '<format_reference path="cheatsheets/pathlib.md">',
            "- level must be one of: beginner, intermediate, advanced",
            "<title>os.path vs pathlib</title>",
            "*dry run: 5 pending row(s); nothing sent, nothing written*",
        ]
    )
    assert f" {REFERENCE} ->" not in result.stdout.str()  # complete: never sent
    assert snapshot(pytester.path) == written


def test_python_m_pytest_batchgen_init_into_a_new_folder_imports_neither_pytest_nor_the_sdk(pytester, monkeypatch):
    result = pytester.run(
        sys.executable, "-X", "importtime", "-m", "pytest_batchgen", "init", "--name", "recipes", "project"
    )

    assert result.ret == 0, result.stderr.str()
    project = pytester.path / "project"
    assert sorted(snapshot(project)) == sorted(
        [
            "plans/recipes.md",
            "recipes/pathlib.md",
            "recipes/INDEX.md",
            ".pymarkdown.json",
            "checks/test_recipes.py",
            "pytest.ini",
            ".gitignore",
        ]
    )
    result.stdout.fnmatch_lines(
        ["Next:", "  cd project", "  pytest --batch-plan plans/recipes.md --batch-validate-only"]
    )
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)", result.stderr.str(), re.MULTILINE))
    assert "pytest_batchgen.scaffold" in imported  # the parse works
    assert not {m for m in imported if m.split(".")[0] in HEAVY}

    monkeypatch.chdir(project)
    result = pytester.runpytest("--batch-plan", "plans/recipes.md", "--batch-validate-only", *NO_CACHE)

    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=len(RULES) + len(CUSTOM), skipped=len(PENDING) * (len(RULES) + len(CUSTOM)))


def test_init_says_how_to_install_the_linter_when_it_is_missing(pytester, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(pytester.path))  # neither on PATH nor next to the interpreter
    monkeypatch.setattr(sys, "executable", str(pytester.path / "python"))

    code, out, err = init(capsys)

    assert code == 0, err
    assert "pymarkdown, is not installed here; install it with pip install 'pytest-batchgen[lint]'" in out


def test_the_console_script_is_the_same_command():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    module, _, attr = pyproject["project"]["scripts"]["batchgen"].partition(":")
    entry = getattr(__import__(module, fromlist=[attr]), attr)

    assert entry is main
    assert "lint" in pyproject["project"]["optional-dependencies"]  # what init tells users to install


# -- it never overwrites -----------------------------------------------------------------------


def test_init_refuses_when_any_target_exists_and_writes_nothing(pytester, capsys):
    pytester.makefile(".md", **{"plans/cheatsheets": "# my own plan"})
    pytester.makefile(".md", **{"cheatsheets/itertools": "my own notes"})  # a pending row's output
    pytester.path.joinpath(".pymarkdown.json").write_text("{}\n")  # a different linter config
    pytester.path.joinpath("checks").write_text("a file where a folder is needed\n")
    pytester.path.joinpath(".gitignore").write_text("build/\n")
    before = snapshot(pytester.path)

    code, out, err = init(capsys)

    assert code == 1
    assert out == ""
    assert "nothing was written" in err
    for named in (
        "plans/cheatsheets.md",
        "cheatsheets/itertools.md (a pending row of the plan would generate it)",
        ".pymarkdown.json",
        "checks (a file where a folder is needed)",
    ):
        assert f"\n  {named}\n" in err, (named, err)
    assert "cheatsheets/pathlib.md" not in err  # only what exists is named
    assert snapshot(pytester.path) == before  # .gitignore not appended to either
    assert sorted(p.name for p in pytester.path.iterdir()) == sorted(
        ["plans", "cheatsheets", ".pymarkdown.json", "checks", ".gitignore"]
    )


def test_a_bad_name_is_a_usage_error(pytester, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["init", "--name", "../escape"])

    assert exc.value.code == 2
    assert "cannot use '../escape' as a plan name" in capsys.readouterr().err
    assert list(pytester.path.iterdir()) == []


# -- beside an existing project: its pytest config and .gitignore are left to the user --------------


def test_init_beside_a_pytest_config_prints_the_ini_line_and_appends_to_gitignore(pytester, capsys):
    pyproject = '[project]\nname = "mine"\n\n[tool.pytest.ini_options]\naddopts = "-ra"\n'
    pytester.path.joinpath("pyproject.toml").write_text(pyproject)
    pytester.path.joinpath(".gitignore").write_text("build/")  # no final newline

    code, out, err = init(capsys)

    assert code == 0, err
    assert not pytester.path.joinpath("pytest.ini").exists()  # it would shadow pyproject.toml
    assert pytester.path.joinpath("pyproject.toml").read_text() == pyproject
    line = 'batchgen_checks = ["checks/test_cheatsheets.py"]'
    assert "pytest's settings are in pyproject.toml, so no pytest.ini was written" in out
    assert (
        f"under [tool.pytest.ini_options] there (or add the path to batchgen_checks if it is set):\n  {line}\n" in out
    )
    assert re.search(r"^  appended to\s+\.gitignore\s", out, re.MULTILINE)
    gitignore = pytester.path.joinpath(".gitignore").read_text()
    assert gitignore.startswith("build/\n#")
    assert gitignore.endswith("\n# pytest-batchgen\n.batchgen-drafts/\n.*.batchgen-lock\n.*.batchgen-tmp-*\n")

    # a second plan in the same folder: the identical linter config and the .gitignore are kept
    code, out, err = init(capsys, "--name", "second")

    assert code == 0, err
    assert re.search(r"^  kept\s+\.pymarkdown\.json\s", out, re.MULTILINE)
    assert re.search(r"^  kept\s+\.gitignore\s+already ignores", out, re.MULTILINE)
    assert pytester.path.joinpath(".gitignore").read_text() == gitignore
    assert 'batchgen_checks = ["checks/test_second.py"]' in out

    # the printed line is right: added as told, the custom checks run with the plan
    pytester.path.joinpath("pyproject.toml").write_text(pyproject + line + "\n")
    result = pytester.runpytest("--batch-plan", PLAN, "--batch-validate-only", "-v", *NO_CACHE)

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines_random(
        [f"checks/test_cheatsheets.py::{test}[[]{REFERENCE}[]] PASSED*" for test in CUSTOM]
    )
    result.assert_outcomes(passed=len(RULES) + len(CUSTOM), skipped=len(PENDING) * (len(RULES) + len(CUSTOM)))


@pytest.mark.parametrize(
    "filename, text, section",
    [
        ("pytest.toml", "", "[pytest]"),
        (".pytest.ini", "", "[pytest]"),
        ("pytest.ini", "[pytest]\naddopts = -ra\n", "[pytest]"),
        ("pyproject.toml", "[tool.pytest]\nminversion = '9'\n", "[tool.pytest]"),
        ("tox.ini", "[tox]\nenvlist = py3\n\n[pytest]\naddopts = -ra\n", "[pytest]"),
        ("setup.cfg", "[metadata]\nname = mine\n\n[tool:pytest]\naddopts = -ra\n", "[tool:pytest]"),
        ("pyproject.toml", "[project]\nname = 'mine'\n", None),  # no pytest table: not a pytest config
        ("tox.ini", "[tox]\nenvlist = py3\n", None),
        ("setup.cfg", "[metadata]\nname = mine\n", None),
    ],
)
def test_a_pytest_config_in_the_folder_is_found_as_pytest_finds_it(tmp_path, filename, text, section):
    (tmp_path / filename).write_text(text)

    scaffold = plan_scaffold(tmp_path)

    written = [f.path for f in scaffold.files]
    if section is None:
        assert scaffold.existing_config is None
        assert "pytest.ini" in written
    else:
        assert (scaffold.existing_config.path, scaffold.existing_config.section) == (filename, section)
        assert "pytest.ini" not in written


def test_a_file_that_appears_while_writing_undoes_what_was_written(pytester):
    pytester.path.joinpath(".gitignore").write_text("build/\n")
    scaffold = plan_scaffold(pytester.path)
    pytester.makefile(".py", **{"checks/test_cheatsheets": "# written meanwhile"})
    before = snapshot(pytester.path)

    with pytest.raises(ScaffoldError, match="checks/test_cheatsheets.py appeared while writing; nothing was written"):
        write_scaffold(scaffold)

    assert snapshot(pytester.path) == before


# -- the plan: it loads, and its checklist uses every built-in form ------------------------------


def test_the_plan_loads_and_its_checklist_uses_every_builtin_form(pytester, capsys):
    assert init(capsys)[0] == 0

    plan = load_plan(PLAN, pytester.path)
    rules = compile_checklist(plan, list(BUILTIN_FORMS))

    assert [r.name for r in rules] == RULES
    used = [r.form for r in rules]
    for form in BUILTIN_FORMS:  # each form by its identity: the two '{key}-value' forms differ
        assert any(f is form for f in used), f"no checklist line uses the form of {form.example!r}"
    assert [p.number for p in plan.phases] == ["1", "2"]
    assert statuses(pytester.path) == {REFERENCE: "complete", **{name: "pending" for name in PENDING}}
    assert plan.format_reference == plan.output_path(plan.row(REFERENCE))
    assert {r.filename: r.model for r in plan.rows if not r.complete} == {
        name: DEFAULT_MODELS[alias] for name, alias in PENDING.items()
    }


def test_the_scaffolds_title_check_fails_with_a_plain_message(pytester, capsys):
    assert init(capsys)[0] == 0
    reference = (pytester.path / "cheatsheets" / REFERENCE).read_text()
    # a sheet written by hand whose front matter has no title
    (pytester.path / "cheatsheets" / "datetime.md").write_text(reference.replace("title: pathlib\n", ""))

    result = pytester.runpytest("--batch-plan", PLAN, "--batch-validate-only", "-k", "datetime", *NO_CACHE)

    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    note = read_notes((pytester.path / PLAN).read_text())["datetime.md"]
    line = next(x for x in note.splitlines() if x.startswith("- test_title_is_the_rows_title"))
    assert line == (
        "- test_title_is_the_rows_title[datetime.md]: AssertionError: front matter title None, expected "
        "the row's title 'datetime' assert None == 'datetime'"
    )


# -- generating the pending rows against the loopback API --------------------------------------------

_TITLE = re.compile(r"<title>(.*?)</title>")


def sheet(title: str) -> str:
    """A cheat sheet that follows the scaffold's format reference and content rules."""
    module = title.split(" vs ")[0]
    kind = "comparison" if " vs " in title else "module"
    return f"""\
---
title: {title}
kind: {kind}
level: intermediate
tags: [stdlib, cheatsheet]
---

## Overview

What `{module}` is for, in two sentences. When to reach for it.

## Examples

| Task | Code |
|------|------|
| Import it | `import {module}` |

```python
import {module}

print({module}.__name__)
```

## Pitfalls

- Reaching for it where a builtin does the job. Use the builtin.
"""


def reply_for(body: dict) -> Reply:
    content = body["messages"][0]["content"]
    text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
    return Reply(text=sheet(_TITLE.search(text).group(1)))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    yield from loopback_api(monkeypatch, reply_for, "sk-ant-api03-batchgen-init-TEST-KEY")


def test_generating_the_scaffolds_pending_rows_passes_every_check(pytester, capsys, fake):
    assert init(capsys)[0] == 0

    result = pytester.runpytest("--batch-plan", PLAN, *NO_CACHE)

    assert result.ret == 0, result.stdout.str()
    items = len(RULES) + len(CUSTOM)
    result.assert_outcomes(passed=(len(PENDING) + 1) * items + len(PENDING))  # + a generate item each
    assert statuses(pytester.path) == {REFERENCE: "complete", **{name: "complete" for name in PENDING}}
    titles = {r.filename: r.title for r in load_plan(PLAN, pytester.path).rows}
    for name in PENDING:
        assert (pytester.path / "cheatsheets" / name).read_text() == sheet(titles[name])
    assert sorted(_TITLE.search(e.body["messages"][0]["content"]).group(1) for e in fake.messages_requests()) == sorted(
        titles[name] for name in PENDING
    )
    index = (pytester.path / "cheatsheets" / "INDEX.md").read_text()
    assert re.findall(r"^- \[.*\]\((.*)\)$", index, re.MULTILINE) == [REFERENCE, *PENDING]

    result = pytester.runpytest("--batch-plan", PLAN, "--batch-readonly", *NO_CACHE)

    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=(len(PENDING) + 1) * items)


def test_the_next_steps_cd_into_a_folder_named_like_an_option(pytester, capsys, monkeypatch):
    import shlex
    import subprocess

    monkeypatch.chdir(pytester.path)
    code, out, _ = init(capsys, "--", "-weird")  # (argparse needs the -- too)
    assert code == 0
    (line,) = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("cd ")]
    assert line == "cd -- -weird" and shlex.split(line)[1] == "--"
    shell = subprocess.run(["bash", "-c", line + " && pwd"], cwd=pytester.path, capture_output=True, text=True)
    assert shell.stdout.strip().endswith("/-weird"), shell.stderr


def test_python_m_pytest_batchgen_cli_is_the_batchgen_command_too(tmp_path):
    import subprocess

    ran = subprocess.run(
        [sys.executable, "-m", "pytest_batchgen.cli", "init", "demo"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "demo" / "plans" / "cheatsheets.md").exists()  # it did nothing, silently, before
