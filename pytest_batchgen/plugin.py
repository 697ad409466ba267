"""pytest hooks: options, configure, collection of plans, the row fixtures.

This file only connects the core to pytest. ``pytest_configure`` builds the settings and one
:class:`~pytest_batchgen.run.PlanRun` per plan, then registers the plugin objects of the
concerns that are active in this run, as pytest does with ``LogXML``:

- :class:`~pytest_batchgen.tally.TallyPlugin` always (counts items, tallies reports, records);
- :class:`~pytest_batchgen.protocol.ItemProtocol` where items run (the plugin's items without
  pytest's per-phase hooks, when nothing could tell the difference);
- :class:`~pytest_batchgen.generation.GenerationPlugin` in a plain run that may call the model;
- :class:`~pytest_batchgen.xdist.XdistController` on an xdist controller;
- :class:`~pytest_batchgen.dryrun.DryRunPlugin` with ``--batch-dry-run``;
- :class:`~pytest_batchgen.jsonreport.JsonReportPlugin` with ``--batch-report``;
- :class:`~pytest_batchgen.terminal.TerminalPlugin` wherever a summary is printed.

Without ``--batch-plan`` nothing is registered and every hook here returns at once. Such a
run imports this module, the settings and the state's key, and nothing else of the plugin:
pytest loads every installed plugin in every run, and the plan parser, the checklist and
their libraries took about as many instructions to import as pytest's own start (cachegrind).
The core is imported by the hooks that need it, once a plan is given.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from . import hookspecs
from .errors import BatchgenError
from .settings import Role, Settings, add_options, check_written_paths
from .state import BatchState, state_key, state_of

if TYPE_CHECKING:
    from .document import BatchOutput
    from .plan import Plan, Row
    from .run import PlanRun


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


#: plugins that write a file in every run, whatever it runs: pytest's cache (its stepwise goes
#: with it), and pytest-benchmark's storage folder (``.benchmarks/``, made when it is configured)
WRITING_PLUGINS = ("cacheprovider", "benchmark")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """``--batch-readonly`` and ``--batch-dry-run`` write nothing, pytest's own files included:
    before any plugin is configured, block the plugins that write in every run (as
    ``-p no:cacheprovider`` does; one already loaded is unregistered) and stop bytecode files of
    the custom checks and conftests (as ``PYTHONDONTWRITEBYTECODE`` does). ``args`` already
    holds the ini file's and ``PYTEST_ADDOPTS``' options."""
    if "--batch-readonly" in args or "--batch-dry-run" in args:
        for name in WRITING_PLUGINS:
            early_config.pluginmanager.consider_pluginarg(f"no:{name}")
        sys.dont_write_bytecode = True


#: whether this run keeps its long-lived objects out of the garbage collector's reach (see
#: :func:`pytest_collection_finish`)
_freezes = pytest.StashKey[bool]()
#: whether the collector's permanent generation holds what a run in this process froze
_frozen_by_a_run = False
#: whether this process was found with objects frozen by someone else: it stays so, and
#: ``gc.get_freeze_count`` walks every frozen object (15 ms for a test process's 190,000)
_frozen_by_others = False


def _collector_is_ours() -> bool:
    """Whether this run may freeze its objects (``gc.freeze``): in a process where nothing is
    frozen, or only what an earlier run in it froze (pytester's in-process runs), which is
    handed back to the collector first. What a run freezes stays frozen when it ends: a
    ``pytest`` process then exits, and its interpreter's last collections need not walk the
    run's objects (0.4 s at 1,000 rows, thawed, where the whole exit now takes 0.1 s). A process
    that froze objects itself (a test session of its own, a pre-forking server) manages its
    collector: the plugin leaves it alone, and does not count its frozen objects again."""
    global _frozen_by_a_run, _frozen_by_others
    if _frozen_by_a_run:
        gc.unfreeze()
        _frozen_by_a_run = False
    if not _frozen_by_others:
        _frozen_by_others = gc.get_freeze_count() > 0
    return not _frozen_by_others


def _freeze(config: pytest.Config) -> None:
    global _frozen_by_a_run
    if config.stash.get(_freezes, False):
        gc.freeze()
        _frozen_by_a_run = True


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Fires in every process (xdist controller and workers alike), after conftests loaded,
    so that their checklist forms are known when the plans are compiled."""
    if not config.getoption("batch_plan"):
        return
    config.addinivalue_line("markers", "batchgen(plan, filename, model): an item that checks a plan row's output")
    config.pluginmanager.import_plugin("pytest_batchgen.rules")
    try:
        settings = Settings.from_config(config)
        state = _build_state(config, settings)
        from .rules import tracking_files

        tracking = [(run.plan, path) for run in state.runs for path in tracking_files(run.rules)]
        check_written_paths(settings, [run.plan for run in state.runs], tracking)
    except BatchgenError as exc:
        raise pytest.UsageError(_shown_error(exc, Path(config.rootpath))) from None
    config.stash[state_key] = state
    config.stash[_freezes] = _collector_is_ours()
    from .preload import guard_logger_registry

    guard_logger_registry()  # before any thread of the plugin imports a module that logs
    try:
        _collect_plans(config, state)  # before anything starts: an argument pytest refuses is a usage error
    except BatchgenError as exc:
        raise pytest.UsageError(_shown_error(exc, Path(config.rootpath))) from None
    _start_preload(config, state)
    _register_plugins(config, state)


def _build_state(config: pytest.Config, settings: Settings) -> BatchState:
    from .checklist import compile_checklist, forms_from_hook
    from .document import DocumentCache
    from .judge import JudgeService, JudgeSettings
    from .plan import check_shared_outputs, load_plan
    from .pricing import Prices
    from .rules import check_tracking_files
    from .run import PlanRun

    forms = forms_from_hook(config.hook.pytest_batchgen_checklist_forms)
    docs = DocumentCache(settings.max_output_bytes)
    judge = JudgeService(JudgeSettings.from_settings(settings))
    runs: list[PlanRun] = []
    for raw in settings.plans:
        plan = load_plan(
            _plan_arg(raw, settings.invocation_dir), settings.rootdir, settings.models, settings.max_output_bytes
        )
        if any(r.plan.path == plan.path for r in runs):
            continue
        rules = compile_checklist(plan, forms, {"linter_timeout": settings.linter_timeout, "judge": judge})
        rows = _select(plan, settings.phases)
        runs.append(PlanRun(plan=plan, rules=rules, rows=rows, docs=docs, readonly=settings.readonly))
    check_shared_outputs([run.plan for run in runs])
    check_tracking_files([(run.plan, run.rules) for run in runs])
    # one table per plan: a plan's ## Prices price its own rows, not the other plans' (see Prices)
    prices = Prices.of_plans(settings.prices, (run.plan for run in runs))
    judge.prices = prices
    return BatchState(settings=settings, runs=tuple(runs), prices=prices, judge=judge)


def _plan_arg(raw: str, invocation_dir: Path) -> str:
    """``--batch-plan`` as pytest reads a path: from the current folder (a shell's completion, and
    every command the plugin prints, name it so), else from the rootdir, as it always was."""
    here = invocation_dir / raw
    return str(here) if here.is_file() else raw


def _start_preload(config: pytest.Config, state: BatchState) -> None:
    """Load the SDK while pytest collects, in a run that will generate (issue 12)."""
    from .preload import Preloader, join_imports, modules_for, will_generate

    # vcrpy is imported on a thread once a first request is out (a judge's too): waited for at
    # the end, like the preload, so no import is still running when pytest tears down
    config.add_cleanup(join_imports)
    settings = state.settings
    if settings.role is Role.WORKER or not will_generate(settings, state.selected()):
        return
    if settings.generates_here:
        from .sender import SenderProcess, why_not

        why = why_not(settings)
        if why is None:
            # CPython's recipe for a fork without exec: what exists now leaves the collector's
            # reach. A collection in either process writes to the header of every object it
            # walks, and the kernel copies each page written while the other shares it.
            _freeze(config)
            state.sender = SenderProcess.fork(state)  # it imports the SDK (a replay: the cassette reader)
            config.add_cleanup(state.sender.close)
            if settings.record_mode == "none":
                state.sent_from = (
                    f"record mode none: nothing is sent; the rows are replayed from a process of their own "
                    f"(pid {state.sender.pid})"
                )
            else:
                state.sent_from = f"requests are sent from a process of their own (pid {state.sender.pid})"
            if not _judges_live(state):
                return
            # the drafts are judged here, as they arrive: the judge's first call would wait for
            # the SDK's import (2 s) while the sending process went on generating, past a
            # --batch-max-cost the verdicts' spend would have reached
        elif settings.record_mode == "none":
            state.sent_from = (
                f"record mode none: nothing is sent; each row is replayed when its first test runs ({why})"
            )
        else:
            state.sent_from = f"requests are sent from a thread of this process ({why})"
    preloader = Preloader(modules_for(settings)).start()
    # joined at the end, so no import is still running when pytest (or pytester) tears down
    config.add_cleanup(preloader.join)


def _judges_live(state: BatchState) -> bool:
    """Whether this process may ask a judge (a plan has judge lines, and the run may record)."""
    from .judge import has_judge_rules

    return state.settings.record_mode != "none" and any(has_judge_rules(run.rules) for run in state.runs)


def _register_plugins(config: pytest.Config, state: BatchState) -> None:
    """Register the concerns active in this run (each one's docstring says when it fires)."""
    from .dryrun import DryRunPlugin
    from .generation import GenerationPlugin
    from .jsonreport import JsonReportPlugin
    from .tally import TallyPlugin
    from .terminal import TerminalPlugin
    from .xdist import ControllerResults, XdistController

    settings = state.settings
    pm = config.pluginmanager
    tally = TallyPlugin(state)
    pm.register(tally, "batchgen-tally")
    if settings.role is not Role.CONTROLLER:  # a controller runs no items
        from .protocol import ItemProtocol

        pm.register(ItemProtocol(config), "batchgen-protocol")
    if settings.generates_here and settings.may_generate:
        pm.register(GenerationPlugin(config, state), "batchgen-generation")
    if settings.role is Role.CONTROLLER:
        pm.register(XdistController(config, state), "batchgen-xdist")
    if settings.role is Role.WORKER:
        state.generation = ControllerResults.of_worker(config)
    if settings.dry_run:
        pm.register(DryRunPlugin(config, state), "batchgen-dry-run")
        return
    if settings.role is not Role.WORKER:
        pm.register(TerminalPlugin(state, tally), "batchgen-terminal")
        if settings.collect_only:
            return  # it lists the items and writes nothing: no report, no step summary
        if settings.report is not None:
            pm.register(JsonReportPlugin(state, tally, settings.report), "batchgen-json-report")
        from .stepsummary import RunSummaryPlugin

        pm.register(RunSummaryPlugin(state, tally), "batchgen-run-summary")


def _collect_plans(config: pytest.Config, state: BatchState) -> None:
    """Point collection at the plans and the custom checks of ``batchgen_checks``: with no
    paths on the command line, instead of ``testpaths``; with paths, beside them, a named node
    of a plan (``plans/glossary.md::quorum.md``) selecting that row's items, custom tests
    included (see :mod:`pytest_batchgen.selection`)."""
    plans = [r.plan.path for r in state.runs]
    checks = state.settings.checks
    from .selection import collection_arg, not_found, select

    if config.args_source != pytest.Config.ArgsSource.ARGS:
        invocation_dir = state.settings.invocation_dir
        config.args = [collection_arg(p, invocation_dir) for p in [*plans, *checks]]
        return

    state.selection = select(config.args, state.settings.invocation_dir, plans, checks)
    s = state.settings

    def other_items(run: PlanRun, row: Row) -> tuple[str, ...]:  # as RowNode.collect makes them
        from .generation import wants

        return ("generate",) * (s.generates_here and wants(state, run, row)) + ("fresh",) * s.fail_stale

    problems = not_found(state.selection, state.runs, s.phases, other_items)
    if problems:
        raise pytest.UsageError("\n".join(problems))
    config.args = list(state.selection.args)


def _shown_error(exc: BatchgenError, rootdir: Path) -> str:
    """The error with its file relative to the rootdir, as the user wrote it."""
    if exc.path is not None and exc.path.is_relative_to(rootdir):
        exc.path = exc.path.relative_to(rootdir)
    return exc.format()


def _select(plan: Plan, phases: tuple[str, ...]) -> tuple[Row, ...]:
    if not phases:
        return plan.rows
    known = {p.number for p in plan.phases}
    unknown = [p for p in phases if p not in known]
    if unknown:
        raise BatchgenError(
            f"--batch-phase {', '.join(unknown)}: no such phase; the plan has phase " + ", ".join(sorted(known)),
            plan.path,
        )
    return tuple(r for r in plan.rows if r.phase in phases)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what collection built out of the garbage collector's reach (``gc.freeze``).

    The plans, their rules and some four items a row live until the session ends, with pytest's
    config, plugins and modules. CPython's full collections walk every object they track: the
    automatic ones while the tests run, the five pytest makes at its end, the interpreter's at
    exit. Walking these finds nothing to free: at 1,000 rows, 0.15 s in pytest's five and 0.4 s
    in the interpreter's exit, on the run's tail. See :func:`_collector_is_ours` for when."""
    _freeze(session.config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    state = state_of(parent.config)
    if state is None:
        return None
    run = state.run_for(file_path.resolve())
    if run is None:
        return None
    from .nodes import PlanFile

    plan_file: PlanFile = PlanFile.from_parent(parent, path=file_path, run=run)
    return plan_file


# -- batch_output / batch_row: ordinary tests parametrised over the selected rows ------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = state_of(metafunc.config)
    if state is None:
        return
    from .nodes import FIXTURE_NAMES, PARAM_NAME

    if not any(name in metafunc.fixturenames for name in FIXTURE_NAMES):
        return
    params = list(state.selected())
    ids = [run.row_id(row).param_id(state.several_plans) for run, row in params]
    metafunc.parametrize(PARAM_NAME, params, ids=ids, indirect=True)


@pytest.fixture
def _batchgen_param(request: pytest.FixtureRequest) -> tuple[PlanRun, Row] | None:
    """The (plan run, row) a batch test is parametrised with; None without --batch-plan."""
    return getattr(request, "param", None)


@pytest.fixture
def batch_row(_batchgen_param: tuple[PlanRun, Row] | None) -> Row:
    """The plan row this test is running for (parametrised over every selected row)."""
    if _batchgen_param is None:
        pytest.skip("batch_row needs --batch-plan")
    return _batchgen_param[1]


@pytest.fixture
def batch_output(request: pytest.FixtureRequest, _batchgen_param: tuple[PlanRun, Row] | None) -> BatchOutput:
    """The row's output, parsed once and shared with the checklist's rules."""
    state = state_of(request.config)
    if state is None or _batchgen_param is None:
        pytest.skip("batch_output needs --batch-plan")
    from .document import BatchOutput
    from .nodes import skip_unwritten, skip_without_output

    run, row = _batchgen_param
    result = state.result(run, row)
    if result is not None:
        skip_unwritten(result, run, row)
    skip_without_output(run, row, validate_only=state.settings.validate_only)
    return BatchOutput(row=row, path=run.output_path(row), document=run.document(row))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the judge's client, if a judge rule called it (every verdict is already on disk)."""
    state = state_of(config)
    if state is not None and state.judge is not None:
        state.judge.close()
