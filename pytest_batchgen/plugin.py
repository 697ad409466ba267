"""pytest glue: options, collection of plan rows as items, fixtures and the RECORD step.

Everything that decides something lives in the core modules; this file only connects them to
pytest's hooks. Without ``--batch-plan`` every hook returns at once and the run is untouched.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import hookspecs
from .checklist import Failure, Rule, collect_forms, compile_checklist
from .client import RECORD_MODES
from .document import DEFAULT_MAX_BYTES, BatchOutput, DocumentCache
from .errors import BatchgenError
from .plan import Plan, Row, load_plan
from .planedit import apply_updates
from .pricing import PriceTable, ini_prices, with_aliases
from .prompts import DEFAULT_MAX_TOKENS, build_prompt
from .report import Progress, build_rows, github_annotations, json_report, summary_lines, write_json
from .results import ItemFailure, RowTally, plan_updates
from .run import PlanRun

FIXTURE_NAMES = ("batch_output", "batch_row")


@dataclass
class BatchState:
    """The session's plugin state (kept in ``config.stash``)."""

    runs: list[PlanRun]
    validate_only: bool
    readonly: bool
    is_worker: bool
    dry_run: bool = False
    record_mode: str = "none"
    generate_here: bool = True
    dispatcher: Any = None
    prices: PriceTable = field(default_factory=PriceTable)
    progress: Any = None
    tallies: dict[str, dict[str, RowTally]] = field(default_factory=dict)
    item_counts: dict[str, int] = field(default_factory=dict)  # by PlanRun.key
    partial: set[str] = field(default_factory=set)  # keys of rows with a deselected item
    recorded: dict[str, bool] = field(default_factory=dict)
    results_file: Path | None = None  # an xdist worker: where the controller wrote its results
    _loaded_results: dict[str, Any] | None = None

    def generation_results(self) -> dict[str, Any]:
        """The dispatcher's results; on an xdist worker, the controller's (read once)."""
        if self.dispatcher is not None:
            return self.dispatcher.results()
        if self._loaded_results is None:
            self._loaded_results = {}
            if self.results_file is not None:
                from .dispatch import RowResult

                try:
                    data = json.loads(self.results_file.read_text(encoding="utf-8") or "{}")
                except (OSError, ValueError):
                    data = {}
                self._loaded_results = {k: RowResult.from_dict(v) for k, v in data.items()}
        return self._loaded_results

    def run_for(self, plan_path: Path) -> PlanRun | None:
        for run in self.runs:
            if run.plan.path == plan_path:
                return run
        return None

    def selected(self) -> Iterator[tuple[PlanRun, Row]]:
        for run in self.runs:
            for row in run.rows:
                yield run, row

    def to_generate(self, run: PlanRun, row: Row) -> bool:
        """Pending rows; and in record mode ``all``, complete rows that were recorded before."""
        if not row.complete:
            return True
        return self.record_mode == "all" and run.plan.cassette_path(row).exists()


state_key = pytest.StashKey[BatchState]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("batchgen", "batch generation with Claude (pytest-batchgen)")
    group.addoption(
        "--batch-plan",
        action="append",
        default=[],
        metavar="PATH",
        help="plan file to run: each row becomes tests, pending rows are generated (repeatable). "
        "Without it the plugin does nothing.",
    )
    group.addoption(
        "--batch-phase",
        action="append",
        default=[],
        metavar="N",
        help="only run the rows of phase N of the plan (repeatable; default: all phases).",
    )
    group.addoption(
        "--batch-validate-only",
        action="store_true",
        default=False,
        help="make no model call: validate the outputs that exist and record the results; "
        "pending rows without an output are skipped.",
    )
    group.addoption(
        "--batch-readonly",
        action="store_true",
        default=False,
        help="pure CI gate: implies --batch-validate-only and changes no file at all "
        "(plan, outputs, tracking file, cassettes).",
    )
    group.addoption(
        "--batch-dry-run",
        action="store_true",
        default=False,
        help="print each pending row's model and resolved prompt; send nothing, write nothing.",
    )
    group.addoption(
        "--batch-record-mode",
        choices=RECORD_MODES,
        default=None,
        help="vcrpy record mode for the model calls' cassettes (plans/cassettes/<plan>/): none, once, "
        "new_episodes, all. Default: new_episodes with ANTHROPIC_API_KEY set outside CI, else none.",
    )
    group.addoption(
        "--batch-concurrency",
        type=int,
        default=8,
        metavar="N",
        help="requests in flight at once (default: 8).",
    )
    group.addoption(
        "--batch-max-attempts",
        type=int,
        default=2,
        metavar="N",
        help="attempts per row: the first request plus repairs that re-ask with the failed checks (default: 2).",
    )
    group.addoption(
        "--batch-report",
        default=None,
        metavar="PATH",
        help="write a JSON report (schema pytest-batchgen-report v1): per row its statuses, attempts, "
        "tokens, estimated cost and failures.",
    )
    group.addoption(
        "--batch-max-cost",
        type=float,
        default=None,
        metavar="USD",
        help="send no new request once the estimated spend reaches USD; rows not sent are skipped.",
    )
    parser.addini(
        "batchgen_prices",
        type="linelist",
        default=[],
        help="price overrides, one 'model-or-prefix: input, output[, cache_write, cache_read]' per line "
        "(dollars per million tokens).",
    )
    parser.addini(
        "batchgen_max_tokens",
        default=str(DEFAULT_MAX_TOKENS),
        help="max_tokens of each generation request; a reply cut off there fails the row as truncated.",
    )
    parser.addini(
        "batchgen_max_retries",
        default="2",
        help="retries the anthropic SDK makes on 429, 5xx and 529 (with backoff, honouring retry-after).",
    )
    parser.addini(
        "batchgen_timeout",
        default="600",
        help="seconds one model request may take.",
    )
    parser.addini(
        "batchgen_models",
        type="linelist",
        default=[],
        help="model aliases, one 'alias = model-id' per line (a plan's '## Models' section wins).",
    )
    parser.addini(
        "batchgen_linter_timeout",
        default="60",
        help="seconds a 'Linter passes' command may run before it is killed and the check fails.",
    )
    parser.addini(
        "batchgen_max_output_bytes",
        default=str(DEFAULT_MAX_BYTES),
        help="outputs larger than this fail their checks unread.",
    )
    parser.addini(
        "batchgen_checks",
        type="paths",
        default=[],
        help="test files with custom checks (tests using batch_output / batch_row) collected "
        "with the plan when no paths are given on the command line.",
    )


def _ini_models(config: pytest.Config) -> dict[str, str]:
    models: dict[str, str] = {}
    for line in config.getini("batchgen_models"):
        if "=" not in line and ":" not in line:
            raise pytest.UsageError(f"batchgen_models: cannot read {line!r}; write 'alias = model-id'")
        sep = "=" if "=" in line else ":"
        alias, _, model = line.partition(sep)
        models[alias.strip().lower()] = model.strip()
    return models


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    plans = config.getoption("batch_plan")
    if not plans:
        return
    config.addinivalue_line("markers", "batchgen(plan, filename, model): an item that checks a plan row's output")
    config.pluginmanager.import_plugin("pytest_batchgen.rules")
    readonly = bool(config.getoption("batch_readonly"))
    validate_only = readonly or bool(config.getoption("batch_validate_only"))
    rootdir = Path(config.rootpath)
    phases = [str(p) for p in config.getoption("batch_phase")]
    numbers = {}
    for name, kind, minimum in (
        ("batchgen_linter_timeout", float, 0),
        ("batchgen_max_output_bytes", int, 0),
        ("batchgen_max_tokens", int, 0),
        ("batchgen_max_retries", int, -1),
        ("batchgen_timeout", float, 0),
    ):
        numbers[name] = _ini_number(config, name, kind, minimum)
    timeout = numbers["batchgen_linter_timeout"]
    max_bytes = numbers["batchgen_max_output_bytes"]
    forms = collect_forms(config.hook.pytest_batchgen_checklist_forms())
    runs: list[PlanRun] = []
    docs = DocumentCache(max_bytes)
    try:
        models = _ini_models(config)
        for raw in plans:
            plan = load_plan(raw, rootdir, models)
            if any(r.plan.path == plan.path for r in runs):
                continue
            rules = compile_checklist(plan, forms, {"linter_timeout": timeout})
            rows = _select(plan, phases)
            runs.append(PlanRun(plan=plan, rules=rules, rows=rows, docs=docs, readonly=readonly))
        ini = ini_prices(config.getini("batchgen_prices"))
        overrides = {}
        for run in runs:  # aliases resolve through each plan's models; the plan's prices win
            overrides.update(with_aliases(ini, run.plan.models))
        for run in runs:
            overrides.update(with_aliases(run.plan.prices, run.plan.models))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    except BatchgenError as exc:
        raise pytest.UsageError(_shown_error(exc, rootdir)) from None
    max_cost = config.getoption("batch_max_cost")
    if max_cost is not None and max_cost < 0:
        raise pytest.UsageError("--batch-max-cost must be zero or more (dollars)")
    is_worker = hasattr(config, "workerinput")
    dry_run = bool(config.getoption("batch_dry_run"))
    for name in ("batch_concurrency", "batch_max_attempts"):
        if config.getoption(name) < 1:
            raise pytest.UsageError(f"--{name.replace('_', '-')} must be at least 1")
    state = BatchState(
        runs=runs,
        validate_only=validate_only,
        readonly=readonly,
        is_worker=is_worker,
        dry_run=dry_run,
        record_mode=_record_mode(config),
        # with pytest-xdist the controller generates before the workers start; workers only check
        generate_here=not validate_only and not dry_run and not _xdist_active(config),
        prices=PriceTable(overrides),
    )
    config.stash[state_key] = state
    config.pluginmanager.register(SessionHooks(config, state), "batchgen-session")
    if is_worker:
        sent = config.workerinput.get("batchgen_results_file")  # type: ignore[attr-defined]
        state.results_file = Path(sent) if sent else None
    elif _xdist_active(config):
        config.pluginmanager.register(XdistHooks(config, state), "batchgen-xdist")
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        # no paths on the command line: collect the plans (and the custom checks), not testpaths
        config.args = [str(r.plan.path) for r in runs] + [str(p) for p in config.getini("batchgen_checks")]
    else:
        # add each plan unless a node of it was named (``plans/glossary.md::quorum.md``)
        named = {(Path(config.invocation_params.dir) / a.split("::")[0]).resolve() for a in config.args}
        config.args = list(config.args) + [str(r.plan.path) for r in runs if r.plan.path not in named]


def _ini_number(config: pytest.Config, name: str, kind: type, minimum: float) -> float:
    """A finite number above ``minimum`` (whole when ``kind`` is int), else a usage error."""
    raw = config.getini(name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or (kind is int and not value.is_integer()):
        what = "a whole number" if kind is int else "a number"
        raise pytest.UsageError(f"ini option {name} = {raw!r} is not {what}")
    if value <= minimum:
        bound = "zero or more" if minimum < 0 else "more than zero"
        raise pytest.UsageError(f"ini option {name} = {raw!r} must be {bound}")
    return kind(value)


def _shown_error(exc: BatchgenError, rootdir: Path) -> str:
    """The error with its file relative to the rootdir, as the user wrote it."""
    if exc.path is not None:
        try:
            exc.path = exc.path.relative_to(rootdir)
        except ValueError:
            pass
    return exc.format()


def _record_mode(config: pytest.Config) -> str:
    mode = config.getoption("batch_record_mode")
    if mode:
        return mode
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
    return "new_episodes" if os.environ.get("ANTHROPIC_API_KEY") and not in_ci else "none"


def _xdist_active(config: pytest.Config) -> bool:
    """pytest-xdist distributes this run (``-n``, or ``--dist``/``--tx`` without ``-n``)."""
    if hasattr(config, "workerinput"):
        return True
    return bool(getattr(config.option, "numprocesses", None)) or getattr(config.option, "dist", "no") != "no"


def _select(plan: Plan, phases: list[str]) -> tuple[Row, ...]:
    if not phases:
        return plan.rows
    known = {p.number for p in plan.phases}
    unknown = [p for p in phases if p not in known]
    if unknown:
        raise BatchgenError(
            f"--batch-phase {', '.join(unknown)}: no such phase; the plan has phase "
            + ", ".join(sorted(known)),
            plan.path,
        )
    return tuple(r for r in plan.rows if r.phase in phases)


def _state(config: pytest.Config) -> BatchState | None:
    return config.stash.get(state_key, None)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    state = _state(parent.config)
    if state is None:
        return None
    run = state.run_for(file_path.resolve())
    if run is None:
        return None
    return PlanFile.from_parent(parent, path=file_path, run=run)


class PlanFile(pytest.File):
    """A plan: collects one node per selected row."""

    def __init__(self, *, run: PlanRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run

    def collect(self) -> Iterator[pytest.Collector]:
        for row in self.run.rows:
            yield RowNode.from_parent(self, name=row.filename, row=row, run=self.run)


class RowNode(pytest.Collector):
    """A row of the plan: one check item per compiled checklist line."""

    def __init__(self, *, row: Row, run: PlanRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row = row
        self.run = run

    def collect(self) -> Iterator[pytest.Item]:
        state = _state(self.config)
        if state is not None and state.generate_here and state.to_generate(self.run, self.row):
            yield GenerateItem.from_parent(self, name="generate", row=self.row, run=self.run)
        for rule in self.run.rules:
            yield CheckItem.from_parent(self, name=rule.name, row=self.row, run=self.run, rule=rule)

    def reportinfo(self):
        return self.run.plan.path, self.row.line - 1, f"{self.row.filename} (plan line {self.row.line})"


class CheckFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class RowItem(pytest.Item):
    """An item of one plan row, marked ``batchgen(plan, filename, model)`` for ``-m`` and reports."""

    def __init__(self, *, row: Row, run: PlanRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row = row
        self.run = run
        self.add_marker(pytest.mark.batchgen(plan=run.plan.name, filename=row.filename, model=row.model))


class CheckItem(RowItem):
    """One checklist line applied to one row's output."""

    def __init__(self, *, rule: Rule, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rule = rule

    def runtest(self) -> None:
        state = _state(self.config)
        assert state is not None
        result = _wait_for_generation(state, self.run, self.row)
        _record_properties(self, self.run, self.row, result)
        if result is not None and not state.generate_here and result.outcome in ("error", "refused", "truncated"):
            # an xdist worker: no generate item of this row here to carry the failure
            raise CheckFailed(Failure(f"generation failed: {result.outcome}: {result.error}"))
        if result is not None and not result.wrote and result.outcome in ("error", "refused", "skipped"):
            why = f"{result.outcome}: {result.error}" if result.error else result.outcome
            pytest.skip(f"not checked: generation wrote no output ({why})")
        path = self.run.path(self.row)
        if state.validate_only and not self.row.complete and not path.exists():
            pytest.skip(f"pending row without an output ({self.run.plan.rel(path)}); validate-only makes no model call")
        failure = self.run.evaluate(self.row, self.rule)
        if failure is not None:
            raise CheckFailed(failure)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        if isinstance(excinfo.value, CheckFailed):
            return format_failure(self.run, self.row, self.rule, excinfo.value.failure)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        plan = self.run.plan
        return plan.path, self.rule.line - 1, f"{self.row.filename}: {self.rule.item.text}"


def _wait_for_generation(state: BatchState, run: PlanRun, row: Row):
    """Block until the row's generation ended, redrawing the progress line meanwhile."""
    dispatcher = state.dispatcher
    key = run.key(row)
    if dispatcher is None:  # an xdist worker gets the controller's results, or there are none
        return state.generation_results().get(key)
    waited = False
    while True:
        try:
            result = dispatcher.result(key, timeout=0.25)
        except concurrent.futures.TimeoutError:
            waited = True
            if state.progress is not None:
                state.progress.update(dispatcher)
            continue
        if waited and state.progress is not None:
            state.progress.update(dispatcher)
        return result


def _record_properties(item: pytest.Item, run: PlanRun, row: Row, result: Any) -> None:
    """Row properties for ``--junitxml`` (and any other reader of ``user_properties``)."""
    attempts = list(result.attempts) if result is not None else []
    props = {
        "batchgen_filename": row.filename,
        "batchgen_model": row.model,
        "batchgen_attempts": str(len(attempts)),
        "batchgen_cost_usd": f"{sum(a.cost for a in attempts):.6f}",
    }
    if attempts:
        props["batchgen_calls"] = "replayed" if all(a.replayed for a in attempts) else "live"
    names = {name for name, _ in item.user_properties}
    item.user_properties.extend((k, v) for k, v in props.items() if k not in names)


class GenerationFailed(Exception):
    pass


class GenerateItem(RowItem):
    """A pending row's generation: passes once a draft was written (the checks judge it)."""

    def runtest(self) -> None:
        state = _state(self.config)
        assert state is not None
        result = _wait_for_generation(state, self.run, self.row)
        _record_properties(self, self.run, self.row, result)
        if result is None:
            pytest.skip("not dispatched in this run")
        if result.outcome == "skipped":
            pytest.skip(result.error or "not sent")
        if result.outcome in ("error", "truncated", "refused"):
            raise GenerationFailed(f"{result.outcome}: {result.error}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GenerationFailed):
            plan = self.run.plan
            return (
                f"{plan.rel(self.run.path(self.row))}: generation failed: {excinfo.value}\n"
                f"  row: {plan.rel(plan.path)}:{self.row.line}: {self.row.title} ({self.row.model})"
            )
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.run.plan.path, self.row.line - 1, f"{self.row.filename}: generate with {self.row.model}"


def format_failure(run: PlanRun, row: Row, rule: Rule, failure: Failure) -> str:
    plan = run.plan
    output = plan.rel(run.path(row))
    where = f"{output}:{failure.line}" if failure.line else output
    lines = [
        f"{where}: {failure.message}",
        f"  check: {plan.rel(plan.path)}:{rule.line}: {rule.item.text}",
        f"  row:   {plan.rel(plan.path)}:{row.line}: {row.title} ({row.filename}, {row.status})",
    ]
    if failure.detail:
        lines.append("  output of the check:")
        lines.extend("    " + ln for ln in failure.detail.splitlines()[:60])
    return "\n".join(lines)


# -- batch_output / batch_row: ordinary tests parametrised over the selected rows ------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = _state(metafunc.config)
    if state is None or not any(name in metafunc.fixturenames for name in FIXTURE_NAMES):
        return
    params = [(run, row) for run, row in state.selected()]
    ids = [row.filename if len(state.runs) == 1 else f"{run.plan.name}/{row.filename}" for run, row in params]
    metafunc.parametrize("_batchgen_param", params, ids=ids, indirect=True)


@pytest.fixture
def _batchgen_param(request: pytest.FixtureRequest):
    """The (plan run, row) a batch test is parametrised with; None without --batch-plan."""
    return getattr(request, "param", None)


@pytest.fixture
def batch_row(_batchgen_param) -> Row:
    """The plan row this test is running for (parametrised over every selected row)."""
    if _batchgen_param is None:
        pytest.skip("batch_row needs --batch-plan")
    return _batchgen_param[1]


@pytest.fixture
def batch_output(request: pytest.FixtureRequest, _batchgen_param) -> BatchOutput:
    """The row's output, parsed once and shared with the checklist's rules."""
    state = _state(request.config)
    if state is None or _batchgen_param is None:
        pytest.skip("batch_output needs --batch-plan")
    run, row = _batchgen_param
    path = run.path(row)
    _wait_for_generation(state, run, row)
    if state.validate_only and not row.complete and not path.exists():
        pytest.skip(f"pending row without an output ({run.plan.rel(path)})")
    return BatchOutput(row=row, path=path, document=run.document(row))


def _row_of(item: pytest.Item) -> tuple[PlanRun, Row] | None:
    if isinstance(item, RowItem):
        return item.run, item.row
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "_batchgen_param" in callspec.params:
        return callspec.params["_batchgen_param"]
    return None


# -- the session's bookkeeping: counting items per row, tallying reports, recording --------


class SessionHooks:
    """Hooks that need the session's state; registered only when a plan is given.

    ``pytest_runtest_logreport`` sees every report, from this process or from xdist workers,
    so the controller tallies all rows and is the one process that records into the plan.
    """

    def __init__(self, config: pytest.Config, state: BatchState) -> None:
        self.config = config
        self.state = state

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            found = _row_of(item)
            if found:
                key = found[0].key(found[1])
                self.state.item_counts[key] = self.state.item_counts.get(key, 0) + 1
        # registration and other run-last rules go after every other item of their row
        items.sort(key=lambda it: isinstance(it, CheckItem) and it.rule.form.runs_last)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        state = self.state
        if not state.generate_here:
            return
        wanted = {run.key(row): (run, row) for run, row in state.selected() if state.to_generate(run, row)}
        picked = []
        for item in session.items:
            found = _row_of(item)
            if found and found[0].key(found[1]) in wanted:
                picked.append(wanted.pop(found[0].key(found[1])))
        if picked:
            state.dispatcher = make_dispatcher(self.config, state, picked)
            state.progress = _progress(self.config)
            state.dispatcher.start()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session):
        if not self.state.dry_run:
            return None
        tw = self.config.get_terminal_writer()
        max_tokens = int(self.config.getini("batchgen_max_tokens"))
        shown = set()
        # under xdist the controller has no items: then every selected row is shown
        candidates = [_row_of(item) for item in session.items] or list(self.state.selected())
        for found in candidates:
            if not found or not self.state.to_generate(*found) or (found[0].plan.path, found[1].filename) in shown:
                continue
            run, row = found
            shown.add((run.plan.path, row.filename))
            prompt = build_prompt(run.plan, row, max_tokens)
            tw.sep("-", f"{row.filename} -> {prompt.model}")
            tw.line("system (shared, cached):")
            tw.line(prompt.system)
            tw.line("")
            tw.line("user:")
            tw.line(prompt.user)
        tw.sep("-", f"dry run: {len(shown)} pending row(s); nothing sent, nothing written")
        return True

    def pytest_keyboard_interrupt(self) -> None:
        if self.state.dispatcher is not None:
            self.state.dispatcher.cancel("the run was interrupted before this row was sent")

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            found = _row_of(item)
            if found:
                self.state.partial.add(found[0].key(found[1]))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        found = _row_of(item)
        if found is not None:
            report.batchgen = _report_info(self.state, item, call, report, *found)  # type: ignore[attr-defined]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        info = getattr(report, "batchgen", None)
        if not info:
            return
        rows = self.state.tallies.setdefault(info["plan"], {})
        tally = rows.get(info["filename"])
        if tally is None:
            tally = rows[info["filename"]] = RowTally(filename=info["filename"], status_before=info["status"])
        tally.expected = max(tally.expected, info["expected"])
        tally.partial = tally.partial or info["partial"]
        if report.failed:
            tally.failures.append(ItemFailure(**info.get("failure", {"check": "?", "message": "failed"})))
        elif report.skipped and report.when in ("setup", "call"):
            tally.skipped += 1
        elif report.passed and report.when == "call":
            tally.passed += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.state
        if state.dispatcher is not None:
            if exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail:
                state.dispatcher.cancel("the run was stopped before this row was sent")
            state.dispatcher.join()  # requests in flight finish and are recorded
        if state.dry_run and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK  # a dry run runs no test by design (xdist)
        if state.is_worker or state.readonly or state.dry_run:
            return
        if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR):
            return
        for run in state.runs:
            updates = plan_updates(state.tallies.get(str(run.plan.path), {}))
            state.recorded[str(run.plan.path)] = apply_updates(run.plan.path, updates)

    @pytest.hookimpl(specname="pytest_sessionfinish", trylast=True)
    def pytest_sessionfinish_write_report(self, session: pytest.Session, exitstatus: int) -> None:
        """Write ``--batch-report`` after the plan was recorded (also in read-only runs).

        The name must start with ``pytest_``: pytest ignores any other method, ``specname``
        or not, so a plain ``write_report`` was never called."""
        state = self.state
        target = self.config.getoption("batch_report")
        if not target or state.is_worker or state.dry_run:
            return
        meta = {
            "record_mode": state.record_mode,
            "validate_only": state.validate_only,
            "readonly": state.readonly,
            "exit_status": int(exitstatus),
        }
        path = Path(self.config.invocation_params.dir) / target
        write_json(path, json_report(self._rows(), state.prices, meta=meta, budget_note=self._budget_note()))

    def _rows(self):
        state = self.state
        results = state.generation_results()
        reports = []
        for run in state.runs:
            reports += build_rows(
                run.plan.rel(run.plan.path),
                run.rows,
                state.tallies.get(str(run.plan.path), {}),
                results,
                run.key,
                state.readonly or state.dry_run,
            )
        return reports

    def _budget_note(self) -> str:
        d = self.state.dispatcher
        if d is not None and d.budget_stopped:
            return f"stopped dispatching: {d.stop_reason}; the rows not sent were skipped"
        return ""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        state = self.state
        if state.is_worker or state.dry_run:
            return
        tr = terminalreporter
        tr.section("pytest-batchgen")
        reports = self._rows()
        for line in summary_lines(reports, state.prices, self._budget_note()):
            tr.write_line(line)
        for run in state.runs:
            if state.readonly:
                action = "plan unchanged (read-only)"
            else:
                action = "plan updated" if state.recorded.get(str(run.plan.path)) else "plan unchanged"
            tr.write_line(f"{run.plan.rel(run.plan.path)}: {action}")
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for line in github_annotations(reports):
                tr.write_line(line)


def _progress(config: pytest.Config) -> Progress | None:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return None

    capman = config.pluginmanager.get_plugin("capturemanager")

    def uncaptured(fn):
        # the line is drawn while a test waits, i.e. while pytest captures output: step outside
        def call(text: str) -> None:
            if capman is None:
                fn(text)
                return
            with capman.global_and_fixture_disabled():
                fn(text)

        return call

    def write(text: str) -> None:
        tr.ensure_newline()
        tr.write_line(text)
        tr.currentfspath = None  # pytest starts a fresh line for the next results

    def rewrite(text: str) -> None:
        tr.ensure_newline()  # leave the results line as it is; draw on a line of its own
        tr.rewrite(text, erase=True)
        tr.currentfspath = None

    return Progress(uncaptured(write), uncaptured(rewrite) if tr.isatty() else None)


def make_dispatcher(config: pytest.Config, state: BatchState, rows: list[tuple[PlanRun, Row]]):
    """Build the dispatcher and its client; the SDK and vcrpy are imported only here."""
    from .client import ClientSettings, ModelClient
    from .dispatch import Dispatcher, Job
    from .recording import Recorder

    jobs = [Job(run, row, rerecord=state.record_mode == "all") for run, row in rows]
    paths = {j.key: j.run.plan.cassette_path(j.row) for j in jobs}
    hints = {
        j.key: (
            f"pytest --batch-plan {j.run.plan.rel(j.run.plan.path)} --batch-record-mode all "
            f"'{j.run.plan.rel(j.run.plan.path)}::{j.row.filename}'"
        )
        for j in jobs
    }
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    mode = state.record_mode
    recorder = Recorder(paths, mode, hints, secrets=(api_key,) if api_key else ())
    recorder.labels = {j.key: j.run.plan.rel(paths[j.key]) for j in jobs}
    settings = ClientSettings(
        max_retries=int(config.getini("batchgen_max_retries")),
        timeout=float(config.getini("batchgen_timeout")),
        # replay needs no key; the placeholder never leaves this process (the recorder answers)
        api_key=api_key or ("replay-without-a-key" if mode == "none" else None),
    )
    return Dispatcher(
        jobs,
        lambda: ModelClient(settings, recorder),
        concurrency=config.getoption("batch_concurrency"),
        max_attempts=config.getoption("batch_max_attempts"),
        max_tokens=int(config.getini("batchgen_max_tokens")),
        cost=state.prices.cost,
        max_cost=config.getoption("batch_max_cost"),
    )


def _selected_by(ids: list[str], run: PlanRun, row: Row, rootpath: Path, n_plans: int) -> bool:
    """Whether any collected node id is one of the row's items (checks or ``batch_output`` tests)."""
    for nodeid in ids:
        parts = nodeid.split("::")
        if len(parts) >= 3 and parts[1] == row.filename:
            first = (rootpath / parts[0]).resolve() if parts[0] else None
            if first == run.plan.path or n_plans == 1:
                return True
        elif parts[-1].endswith("]") and "[" in parts[-1]:
            param = parts[-1][parts[-1].index("[") + 1 : -1]  # test_x[quorum.md] -> quorum.md
            for ident in (row.filename, f"{run.plan.name}/{row.filename}"):
                if param == ident or param.startswith(ident + "-") or param.endswith("-" + ident) or f"-{ident}-" in param:
                    return True
    return False


class XdistHooks:
    """Only with pytest-xdist, on the controller: generate once, for every worker.

    The controller learns the selected items when the first worker reports its collection
    (after ``-k`` and node ids); it generates those rows' outputs before the items are
    scheduled, and writes the results to a file the workers read, so that each row is
    generated exactly once and its checks see the final output.
    """

    def __init__(self, config: pytest.Config, state: BatchState) -> None:
        self.config = config
        self.state = state
        fd, name = tempfile.mkstemp(prefix="pytest-batchgen-results-", suffix=".json")
        os.close(fd)
        self.results_file = Path(name)
        self.done = False

    def pytest_configure_node(self, node) -> None:
        node.workerinput["batchgen_results_file"] = str(self.results_file)

    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        state = self.state
        if self.done or state.validate_only or state.dry_run:
            return
        self.done = True
        rows = [(run, row) for run, row in state.selected() if state.to_generate(run, row)]
        rows = [(run, row) for run, row in rows if _selected_by(ids, run, row, self.config.rootpath, len(state.runs))]
        if not rows:
            return
        dispatcher = state.dispatcher = make_dispatcher(self.config, state, rows)
        state.progress = _progress(self.config)
        dispatcher.start()
        try:
            while not dispatcher.join(0.25):
                if state.progress is not None:
                    state.progress.update(dispatcher)
        except KeyboardInterrupt:
            dispatcher.cancel("the run was interrupted before this row was sent")
            dispatcher.join()  # the requests in flight finish and are recorded; a second Ctrl-C aborts
            raise
        write_json(self.results_file, {k: r.to_dict() for k, r in dispatcher.results().items()})

    def pytest_unconfigure(self) -> None:
        self.results_file.unlink(missing_ok=True)


def _report_info(
    state: BatchState, item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport, run: PlanRun, row: Row
) -> dict[str, Any]:
    """Plain data about the row an item belongs to; it travels with the report across xdist."""
    key = run.key(row)
    info: dict[str, Any] = {
        "plan": str(run.plan.path),
        "filename": row.filename,
        "status": row.status,
        "expected": state.item_counts.get(key, 0),
        "partial": key in state.partial,
    }
    if report.failed:
        if isinstance(item, CheckItem) and call.excinfo is not None and isinstance(call.excinfo.value, CheckFailed):
            f = call.excinfo.value.failure
            info["failure"] = {
                "check": item.rule.name,
                "message": f.message,
                "checklist_line": item.rule.line,
                "output": run.plan.rel(run.path(row)),
                "output_line": f.line,
            }
        elif isinstance(item, GenerateItem) and call.excinfo is not None:
            info["failure"] = {"check": "generate", "message": str(call.excinfo.value)}
        else:
            if call.excinfo is not None:
                message = call.excinfo.exconly().strip()
            else:
                lines = report.longreprtext.strip().splitlines()
                message = lines[-1] if lines else "failed"
            info["failure"] = {
                "check": item.rule.name if isinstance(item, CheckItem) else item.name,
                "message": " ".join(message.split())[:300],
            }
    return info
