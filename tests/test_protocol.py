"""The plan's items run without pytest's per-phase hooks (``pytest_batchgen/protocol.py``),
and nothing a user reads changes.

Which protocol ran an item is read from the item itself, by ``harness.OBSERVER`` in the
project's conftest (see there).
"""

from __future__ import annotations

import pytest

from harness import CHANGELOG, OBSERVER, Project, Run, phase_hooks

#: a conftest that runs items its own way, then leaves them to pytest (as a rerun plugin does)
OWN_PROTOCOL = """
RAN = []

def pytest_runtest_protocol(item, nextitem):
    RAN.append(item.nodeid)
    return None
"""

#: a conftest hook of a per-phase kind: every item must then run pytest's own protocol
SETUP_HOOK = """
SEEN = []

def pytest_runtest_setup(item):
    SEEN.append(item.nodeid)
"""


@pytest.fixture
def changelog(project: Project) -> Project:
    return project.lay_out_changelog()


def what_users_read(run: Run) -> list[tuple]:
    """Every report as a reader of reports sees it, in order (durations aside)."""
    return [
        (
            rep.nodeid,
            rep.when,
            rep.outcome,
            rep.location,
            rep.longreprtext,
            rep.user_properties,
            sorted(rep.keywords),
            rep.sections,
            rep.current_test,
        )
        for rep in run._reports()
    ]


def mappings(run: Run) -> dict[str, tuple[int, int]]:
    """Each plan item's node id -> (its reports, the distinct ``keywords`` mappings they hold)."""
    found: dict[str, list[int]] = {}
    for rep in run._reports():
        if ".md::" in rep.nodeid:
            found.setdefault(rep.nodeid, []).append(id(rep.keywords))
    return {nodeid: (len(ids), len(set(ids))) for nodeid, ids in found.items()}


def test_plan_items_skip_the_phase_hooks_and_every_report_and_file_stays_the_same(changelog: Project):
    # given: the changelog project, whose outputs pass, fail (with the output's line) and are
    # missing, and a plain test beside the plan
    changelog.write("conftest.py", OBSERVER)
    changelog.write("test_plain.py", "def test_plain():\n    print('hello')\n")
    before = changelog.snapshot()

    # when: validated as it is, then again with a conftest that implements a per-phase hook
    lean = changelog.run("--batch-validate-only", "test_plain.py")
    after_lean = changelog.snapshot()
    for path, content in before.items():
        if not path.endswith("/"):
            changelog.write(path, content)
    changelog.write("conftest.py", OBSERVER + SETUP_HOOK)
    full = changelog.run("--batch-validate-only", "test_plain.py")

    # then: the plan's items ran the lean protocol in the first run and pytest's in the second;
    # the plain test ran pytest's in both
    hooks = phase_hooks(lean)
    assert hooks.pop("test_plain") is True
    assert hooks and not any(hooks.values()), hooks
    assert all(phase_hooks(full).values())
    # and what the two runs showed and wrote is the same
    assert lean.ret == full.ret == pytest.ExitCode.TESTS_FAILED
    assert lean.counts() == full.counts() == {"passed": 45, "failed": 16, "skipped": 6}
    assert what_users_read(lean) == what_users_read(full)
    # though an item's three reports hold one keywords mapping under the lean protocol, where
    # pytest's makes one a report (the terminal keeps every report to the session's end: at
    # 40,000 items the copies were 21 MB of a 296 MB peak)
    assert set(mappings(lean).values()) == {(3, 1)}
    assert set(mappings(full).values()) == {(3, 3)}
    written = changelog.snapshot()
    assert written.pop("conftest.py") != after_lean.pop("conftest.py")
    assert written == after_lean
    # a failure still points at the output's line and the checklist's
    assert "changelog/v1.5.0.md:16: tab character" in lean.failure("v1.5.0.md::lint")
    # the plain test's output was captured as before, in both runs
    assert ("Captured stdout call", "hello\n") in lean.reports()["test_plain"].sections


def test_a_check_form_from_a_conftest_runs_pytest_protocol_and_its_output_is_captured(changelog: Project):
    # given: a form of the user's that prints as it checks, beside the built-in ones
    changelog.write(
        "conftest.py",
        OBSERVER
        + """
from pytest_batchgen import ChecklistForm

def _check(ctx):
    print("checked", ctx.row.filename)
    return None

def pytest_batchgen_checklist_forms():
    return [ChecklistForm(name="printed", pattern="printed check", check=_check)]
""",
    )
    changelog.edit(CHANGELOG, "## Validation Checklist\n", "## Validation Checklist\n1. Printed check\n")

    # when
    result = changelog.run("--batch-validate-only", "-k", "v1.1.0")

    # then: the user's form ran under pytest's protocol, with its print captured; the
    # built-in forms' items did not
    hooks = phase_hooks(result)
    assert hooks.pop("v1.1.0.md::printed") is True
    assert hooks and not any(hooks.values()), hooks
    report = result.reports()["v1.1.0.md::printed"]
    assert ("Captured stdout call", "checked v1.1.0.md\n") in report.sections


def test_an_xfail_mark_on_a_plan_item_is_honoured(changelog: Project):
    # given: a conftest marking one failing check xfail (pytest's skipping plugin reads marks
    # in its per-phase hooks)
    changelog.write(
        "conftest.py",
        OBSERVER
        + """
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.endswith("v1.2.0.md::category-value"):
            item.add_marker(pytest.mark.xfail(reason="known bad category"))
""",
    )

    # when
    result = changelog.run("--batch-validate-only", "-k", "v1.2.0 or v1.1.0", "-rx")

    # then: that item ran pytest's protocol and is xfailed; the others ran the lean one
    hooks = phase_hooks(result)
    assert hooks.pop("v1.2.0.md::category-value") is True
    assert hooks and not any(hooks.values()), hooks
    assert result.reports()["v1.2.0.md::category-value"].outcome == "skipped"
    result.stdout.fnmatch_lines(["*XFAIL*v1.2.0.md::category-value*known bad category*"])


#: pytest-benchmark's per-phase hook, as it is (``pytest_benchmark.plugin``): it checks its own
#: mark's arguments at setup. The real plugin when installed, else this stand-in under its name.
BENCHMARK_PLUGIN = """
import pytest

class StandIn:
    def pytest_runtest_setup(self, item):
        marker = item.get_closest_marker("benchmark")
        if marker and marker.args:
            raise ValueError("benchmark mark can't have positional arguments.")

def pytest_configure(config):
    if not config.pluginmanager.has_plugin("benchmark"):
        config.pluginmanager.register(StandIn(), "benchmark")

def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.endswith("v1.1.0.md::sections"):
            item.add_marker(pytest.mark.benchmark(group="plan"))
"""


def test_pytest_benchmarks_setup_hook_leaves_plan_items_lean_unless_its_mark_is_on_one(changelog: Project):
    # given: pytest-benchmark's plugin loaded (many environments install it) and its mark on one
    # plan item
    changelog.allow_plugin("benchmark")
    changelog.write("conftest.py", OBSERVER + BENCHMARK_PLUGIN)

    # when
    result = changelog.run("--batch-validate-only", "-k", "v1.1.0")

    # then: the marked item ran pytest's protocol, so the plugin saw its mark; the others the lean one
    hooks = phase_hooks(result)
    assert hooks.pop("v1.1.0.md::sections") is True
    assert len(hooks) == 5 and not any(hooks.values()), hooks
    assert result.counts()["passed"] == 6


def test_a_plugin_that_runs_the_protocol_itself_keeps_every_item(changelog: Project):
    # a plugin's own pytest_runtest_protocol (not a wrapper) sees every plan item, and pytest's
    # protocol runs them
    changelog.write("conftest.py", OBSERVER + OWN_PROTOCOL)
    result = changelog.run("--batch-validate-only", "-k", "v1.1.0")
    hooks = phase_hooks(result)
    assert len(hooks) == 6 and all(hooks.values()), hooks


@pytest.mark.parametrize("option", ["--setup-show", "--setup-only"])
def test_options_that_show_the_phases_get_pytest_protocol(changelog: Project, option: str):
    changelog.write("conftest.py", OBSERVER)
    result = changelog.run("--batch-validate-only", "-k", "v1.1.0", option)
    seen = [rep.phase_hooks for rep in result._reports() if rep.when == "setup"]  # type: ignore[attr-defined]
    assert len(seen) == 6 and all(seen), seen


def test_exitfirst_stops_at_the_first_failing_plan_item(changelog: Project):
    changelog.write("conftest.py", OBSERVER)
    result = changelog.run("--batch-validate-only", "-x")
    assert result.counts()["failed"] == 1
    assert not any(phase_hooks(result).values())
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_xdist_workers_run_plan_items_the_lean_way_and_report_the_same(changelog: Project):
    # given: an observer that leaves its finding in the items' properties, which reach the
    # controller's JUnit XML (a report's own attributes do not cross to the controller)
    changelog.write(
        "conftest.py",
        """
import pytest
from _pytest.logging import caplog_records_key

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "call":
        item.user_properties.append(("phase_hooks", str(caplog_records_key in item.stash)))
    return report
""",
    )

    # when
    result = changelog.run(
        "--batch-validate-only", "--batch-readonly", "-n", "2", "-p", "no:randomly", "--junitxml=junit.xml"
    )

    # then: a read-only run's tally (v1.1.0 passes but is not registered, a failure more than in
    # the first test), and every plan item ran the lean protocol on its worker
    assert result.counts() == {"passed": 43, "failed": 17, "skipped": 6}
    xml = changelog.read("junit.xml")
    assert xml.count('name="phase_hooks" value="False"') == 66
    assert 'name="phase_hooks" value="True"' not in xml
