"""The test harness: a project folder to lay out, run pytest in, and read back.

Not a test module. The ``project`` fixture (``conftest.py``) is a :class:`Project` on
``pytester.path``; tests that never run pytest build one on ``tmp_path`` (``Project(tmp_path)``).

* Given: :meth:`Project.write_plan` (a plan text as given, with ``out/ref.md``),
  :meth:`Project.lay_out_changelog` (the changelog project of ``tests/data``),
  :meth:`Project.write_rows` (the generation tests' project: plan rows, format reference, linter,
  ``pytest.ini``), :meth:`Project.copy` (a folder of ``tests/data``), :meth:`Project.write`,
  :meth:`Project.edit`, :meth:`Project.ini`, :meth:`Project.reset`.
* When: :meth:`Project.run` runs pytest on the project's plan (:meth:`Project.pytest` without
  ``--batch-plan``) and returns a :class:`Run`: pytest's result plus each item's outcome,
  report and failure text, and :meth:`Run.assert_items` to check some items' outcomes.
  :meth:`Project.start` starts a run in a process of its own and returns at once (to kill it);
  with :attr:`Project.forks` set, such runs are forked (``forkserver.py``).
* Then: the readers return what a run left behind: :meth:`Project.statuses`,
  :meth:`Project.notes`, :meth:`Project.output`, :meth:`Project.outputs`,
  :meth:`Project.cassette`, :meth:`Project.cassettes`, :meth:`Project.snapshot`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from forkserver import Child, ForkServer
from genhelpers import FORMAT_REFERENCE, LINT_SCRIPT, PlanRow, rows_plan_text
from planfactory import REFERENCE
from pytest_batchgen.plan import load_plan
from pytest_batchgen.planedit import read_notes

DATA = Path(__file__).resolve().parent / "data"
#: the changelog project's plan (:meth:`Project.lay_out_changelog`)
CHANGELOG = "plans/changelog.md"

#: Options of every run: no cache folder in the project, failures and skips in the short
#: summary, and neither the hypothesis plugin nor anyio's inside (pytester restores
#: ``sys.modules`` after each in-process run, so hypothesis was imported and rewritten again
#: every time, a second a run; anyio's plugin imports trio to list its backends, 6% of the
#: suite's CPU). A batchgen run uses neither.
#: every run's options. pytest-benchmark, where it is installed, makes ``.benchmarks/`` in each
#: run's folder, which the tests that compare a project's files before and after a run would
#: see (82 assertions failed): blocked, unless a test lets it load (:meth:`Project.allow_plugin`).
RUN_OPTIONS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio", "-p", "no:benchmark", "-rfEs")


class Run:
    """One pytest run: pytest's :class:`~pytest.RunResult` and what its items did."""

    def __init__(self, result: pytest.RunResult) -> None:
        self.result = result

    @property
    def ret(self) -> int | pytest.ExitCode:
        return self.result.ret

    @property
    def stdout(self) -> pytest.LineMatcher:
        return self.result.stdout

    @property
    def stderr(self) -> pytest.LineMatcher:
        return self.result.stderr

    def counts(self) -> dict[str, int]:
        """The session's tally (``passed``, ``failed``, ``skipped``, ``deselected``, errors)."""
        return {
            k: v
            for k, v in self.result.parseoutcomes().items()
            if k in ("passed", "failed", "skipped", "deselected", "error", "errors")
        }

    def assert_outcomes(self, **counts: int) -> None:
        self.result.assert_outcomes(**counts)

    def _reports(self) -> list[pytest.TestReport]:
        # in-process runs only: a subprocess run has no report recorder
        return self.result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]

    def reports(self) -> dict[str, pytest.TestReport]:
        """``filename::item`` (the node id without its file) -> the report that says how the
        item ended: its call's, or that of a setup or teardown that did not pass."""
        out: dict[str, pytest.TestReport] = {}
        for rep in self._reports():
            if rep.when == "call" or not rep.passed:
                out["::".join(rep.nodeid.split("::")[1:])] = rep
        return out

    def outcomes(self) -> dict[str, str]:
        """``filename::item`` -> passed / failed / skipped."""
        return {key: rep.outcome for key, rep in self.reports().items()}

    def assert_items(self, expected: dict[str, str]) -> None:
        """Each item named in ``expected`` (``filename::item``) ended as given; others are not looked at."""
        got = self.outcomes()
        wrong = {key: (got.get(key, "not run"), want) for key, want in expected.items() if got.get(key) != want}
        assert not wrong, f"items that ended otherwise (found, expected): {wrong}"

    def failure(self, key: str) -> str:
        """The failure text of item ``filename::name``."""
        for rep in self._reports():
            if rep.nodeid.endswith("::" + key) and rep.failed:
                return rep.longreprtext
        raise AssertionError(f"no failed report for {key}")

    def skip_reasons(self) -> dict[str, str]:
        """``filename::item`` -> its skip message (``Skipped: ...``)."""
        out = {}
        for rep in self._reports():
            if rep.skipped:
                out["::".join(rep.nodeid.split("::")[1:])] = rep.longrepr[2]  # type: ignore[index]
        return out


class Project:
    """A project folder: its plan (``self.plan``, relative to the folder) and its files."""

    def __init__(self, path: Path, pytester: pytest.Pytester | None = None) -> None:
        self.path = path
        self.plan = "plan.md"
        self._pytester = pytester
        #: set (see ``forks`` in conftest.py): subprocess runs are forked from it, not started afresh
        self.forks: ForkServer | None = None
        self.options: tuple[str, ...] = RUN_OPTIONS

    def allow_plugin(self, name: str) -> None:
        """Let the plugin ``name``, blocked in :data:`RUN_OPTIONS`, load in this project's runs."""
        blocked = ("-p", f"no:{name}")
        i = next(i for i in range(len(self.options) - 1) if self.options[i : i + 2] == blocked)
        self.options = self.options[:i] + self.options[i + 2 :]

    # -- given ----------------------------------------------------------------------------

    def write(self, rel: str, content: str | bytes) -> Path:
        """Write a file below the project (folders made as needed); str as UTF-8, bytes as given."""
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def ini(self, body: str = "") -> Path:
        """``pytest.ini`` (``[pytest]`` then ``body``): it pins the rootdir, which plan paths are relative to."""
        return self.write("pytest.ini", "[pytest]\n" + body)

    def write_plan(self, text: str | bytes, *, name: str = "plan.md", reference: bool = True) -> Path:
        """A plan (bytes as given) and the ``out/`` folder with its format reference ``out/ref.md``."""
        (self.path / "out").mkdir(parents=True, exist_ok=True)
        if reference:
            self.write("out/ref.md", REFERENCE)
        self.plan = name
        return self.write(name, text)

    def write_rows(self, rows: Iterable[PlanRow], *, max_retries: int = 1, ini_extra: str = "") -> Path:
        """The generation project: ``plan.md`` with ``rows``, ``output/reference.md``, the linter
        ``lint.py`` and a ``pytest.ini`` (see ``genhelpers``)."""
        self.write("output/reference.md", FORMAT_REFERENCE)
        self.write("lint.py", LINT_SCRIPT)
        self.write(
            "pytest.ini",
            # no cache folder in the project; hypothesis' plugin imports hypothesis at every run's end
            "[pytest]\naddopts = -p no:cacheprovider -p no:hypothesispytest\n"
            # in-process runs: the plugin was imported by the outer session already
            "filterwarnings = ignore::pytest.PytestAssertRewriteWarning\n"
            f"batchgen_max_retries = {max_retries}\n{ini_extra}",
        )
        self.plan = "plan.md"
        return self.write("plan.md", rows_plan_text(rows))

    def lay_out_changelog(self) -> Project:
        """``tests/data/changelog`` (its rows and outputs: the table in ``test_validate_only.py``),
        its plan the project's, its linter script run with this interpreter (a bare ``python``
        may be a slow shim, pyenv's)."""
        self.copy(DATA / "changelog")
        self.plan = CHANGELOG
        self.edit(CHANGELOG, "`python tools/", f"`{shlex.quote(sys.executable)} tools/")
        return self

    def reset(self, rows: Iterable[PlanRow]) -> None:
        """Back to before a run of :meth:`write_rows`' project: the plan with ``rows`` as given, no
        outputs (nor drafts: a folder, such as ``.batchgen-drafts/``, goes with what it holds)."""
        self.write("plan.md", rows_plan_text(rows))
        for path in (self.path / "output").iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "reference.md":
                path.unlink()

    def copy(self, source: Path, rel: str = ".") -> Path:
        """Copy a file or a folder's contents to ``rel`` below the project."""
        target = self.path / rel
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return target

    def edit(self, rel: str, old: str, new: str) -> None:
        """Replace ``old`` (which must be there) by ``new`` in a file of the project."""
        text = self.read(rel)
        assert old in text, f"{old!r} is not in {rel}"
        self.write(rel, text.replace(old, new))

    # -- when -----------------------------------------------------------------------------

    def run(self, *args: str, plan: str | None = None, subprocess: bool = False) -> Run:
        """pytest ``--batch-plan`` (the project's plan unless ``plan`` is given) with ``args``."""
        return self.pytest("--batch-plan", plan or self.plan, *args, subprocess=subprocess)

    def pytest(self, *args: str, subprocess: bool = False) -> Run:
        """pytest with ``args`` in the project folder: in-process, or in a process of its own
        (a fresh interpreter, or a child of :attr:`forks` when it is set)."""
        assert self._pytester is not None, "running pytest needs the project fixture (pytester)"
        if subprocess and self.forks is not None:
            started = time.monotonic()
            child = self.start(*args)
            ret = child.wait()
            out, err = child.output()
            return Run(pytest.RunResult(ret, out.splitlines(), err.splitlines(), time.monotonic() - started))
        run = self._pytester.runpytest_subprocess if subprocess else self._pytester.runpytest
        return Run(run(*self.options, *args))

    def start(self, *args: str, output: bool = True) -> Child | subprocess.Popen[str]:
        """Start pytest with ``args`` in a process of its own and return at once (stdout and
        stderr of a fresh interpreter together, as text, on its ``stdout``; nowhere without
        ``output``, for a caller that never reads it)."""
        command = [*self.options, f"--basetemp={tempfile.mkdtemp(prefix='runpytest-', dir=self.path)}", *args]
        # as pytester starts a subprocess run: the working folder first on PYTHONPATH
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(self.path), os.environ.get("PYTHONPATH")])),
        }
        if self.forks is not None:
            streams = tempfile.mkdtemp(prefix="runpytest-output-", dir=self.path)
            return self.forks.start(
                command, cwd=self.path, env=env, stdout=Path(streams, "stdout"), stderr=Path(streams, "stderr")
            )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env["PYTHONPATH"], *sys.path]))
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", *command],
            cwd=self.path,
            stdout=subprocess.PIPE if output else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )

    # -- then -----------------------------------------------------------------------------

    def read(self, rel: str | None = None) -> str:
        """A file's text (default: the plan's)."""
        return (self.path / (rel or self.plan)).read_text(encoding="utf-8")

    def statuses(self, plan: str | None = None) -> dict[str, str]:
        """Each row's status as the plan says now: filename -> pending / complete."""
        return {r.filename: r.status for r in load_plan(self.path / (plan or self.plan), self.path).rows}

    def notes(self, plan: str | None = None) -> dict[str, str]:
        """The plan's Batchgen Notes: filename -> note."""
        return read_notes(self.read(plan))

    def output_dir(self) -> Path:
        return load_plan(self.path / self.plan, self.path).output_dir

    def output(self, filename: str) -> str:
        """The text of a row's output."""
        return (self.output_dir() / filename).read_text(encoding="utf-8")

    def outputs(self) -> dict[str, bytes]:
        """Everything in the output folder but the format reference (a folder as ``name/``)."""
        plan = load_plan(self.path / self.plan, self.path)
        return {
            p.name + ("/" if p.is_dir() else ""): b"" if p.is_dir() else p.read_bytes()
            for p in sorted(plan.output_dir.iterdir())
            if p != plan.format_reference
        }

    def cassette_dir(self) -> Path:
        """Where the plan's recordings go: ``cassettes/<plan name>/`` beside the plan."""
        plan = self.path / self.plan
        return plan.parent / "cassettes" / plan.stem

    def cassette(self, filename: str) -> Path:
        return self.cassette_dir() / f"{filename}.yaml"

    def cassettes(self) -> dict[str, bytes]:
        """Every cassette of the plan: file name -> bytes."""
        return {p.name: p.read_bytes() for p in sorted(self.cassette_dir().iterdir())}

    def cassette_bodies(self, filename: str) -> list[dict]:
        """The request bodies recorded for a row, in order."""
        return [json.loads(i["request"]["body"]) for i in self.interactions(filename)]

    def cassette_usage(self, filename: str) -> list[dict]:
        """The ``usage`` of each recorded reply of a row (empty dict for an error reply)."""
        return [json.loads(i["response"]["body"]["string"]).get("usage", {}) for i in self.interactions(filename)]

    def interactions(self, filename: str) -> list[dict]:
        """A row's recorded interactions, as vcrpy lays them out (``request``, ``response``)."""
        return yaml.safe_load(self.cassette(filename).read_text(encoding="utf-8"))["interactions"]

    def snapshot(self) -> dict[str, bytes]:
        """Every file and folder below the project, caches excluded: relative path -> bytes
        (a folder as ``path/`` -> ``b""``, a symbolic link as ``b"-> target"``)."""
        found: dict[str, bytes] = {}
        for path in sorted(self.path.rglob("*")):
            parts = path.relative_to(self.path).parts
            if "__pycache__" in parts or ".pytest_cache" in parts:
                continue
            rel = "/".join(parts)
            if path.is_symlink():
                found[rel] = b"-> " + str(path.readlink()).encode()
            elif path.is_file():
                found[rel] = path.read_bytes()
            elif path.is_dir():
                found[rel + "/"] = b""
        return found


# -- which runtest protocol an item took (pytest_batchgen/protocol.py) --------------------------

#: a conftest's part that marks each report with whether pytest's per-phase hooks ran for its
#: item (the logging plugin stashes the item's records at setup, a per-phase hook the lean
#: protocol leaves out), and with ``PYTEST_CURRENT_TEST`` as the report was made. A wrapper of
#: ``pytest_runtest_makereport`` is not a per-phase hook: it does not make items fall back.
OBSERVER = """
import os
import pytest
from _pytest.logging import caplog_records_key

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    report.phase_hooks = caplog_records_key in item.stash
    report.current_test = os.environ.get("PYTEST_CURRENT_TEST")
    return report
"""


def phase_hooks(run: Run) -> dict[str, bool]:
    """``filename::item`` -> whether pytest's per-phase hooks ran for it (its call report)."""
    return {key: rep.phase_hooks for key, rep in run.reports().items()}  # type: ignore[attr-defined]
