"""Options and ini values: declared here, read and validated once into a frozen :class:`Settings`.

Nothing else calls ``config.getoption`` or ``config.getini``: every other module takes typed
values from the settings, so a value is parsed in one place and in one way. (An ini number
that was validated and then re-parsed raw elsewhere once turned ``batchgen_max_tokens =
8192.0`` into an INTERNALERROR.)
"""

from __future__ import annotations

import argparse
import enum
import errno
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest

from .defaults import DEFAULT_MAX_BYTES, DEFAULT_MAX_TOKENS, RECORD_MODES
from .errors import BatchgenError

#: ``--batch-max-attempts``'s default
DEFAULT_MAX_ATTEMPTS = 2

if TYPE_CHECKING:
    from .plan import Plan
    from .pricing import Price

#: one of :data:`pytest_batchgen.defaults.RECORD_MODES` (vcrpy's record modes)
RecordMode = Literal["none", "once", "new_episodes", "all"]

#: ``--batch-api``: one Messages request per row, or Message Batches
BatchApi = Literal["messages", "batches"]
BATCH_APIS = ("messages", "batches")


class Role(enum.Enum):
    """What this process is in the run: it decides who generates and who records."""

    PLAIN = "plain"  # no pytest-xdist: this process generates, checks and records
    CONTROLLER = "controller"  # the xdist controller: generates and records, runs no test
    WORKER = "worker"  # an xdist worker: runs checks on the controller's results

    @classmethod
    def of(cls, config: pytest.Config) -> Role:
        if hasattr(config, "workerinput"):
            return cls.WORKER
        option = config.option
        # ``-n``, or ``--dist``/``--tx`` without ``-n``; xdist leaves ``--collect-only`` to this
        # process (it starts no workers), which then lists the items of a plain run
        distributed = getattr(option, "numprocesses", None) or getattr(option, "dist", "no") != "no"
        if distributed and not getattr(option, "collectonly", False):
            return cls.CONTROLLER
        return cls.PLAIN


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


#: the most samples ``--batch-judge-samples`` takes: each is a paid call per row and ``Judge:``
#: line, asked one after another, and past a few dozen a majority no longer moves
MAX_JUDGE_SAMPLES = 25


def _judge_samples(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_JUDGE_SAMPLES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: at most {MAX_JUDGE_SAMPLES} (each sample is a paid call per row and Judge: line; "
            "an odd number such as 3 or 5 avoids ties, which fail)"
        )
    return value


def _dollars(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of dollars") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be zero or more (dollars)")
    return value


def add_options(parser: pytest.Parser) -> None:
    """Declare the command-line options (one group) and the ini values."""
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
        type=_positive_int,
        default=8,
        metavar="N",
        help="requests in flight at once (default: 8).",
    )
    group.addoption(
        "--batch-max-attempts",
        type=_positive_int,
        default=DEFAULT_MAX_ATTEMPTS,
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
        type=_dollars,
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
        default="300",
        help="seconds to wait for a model reply to start (a reply is sent whole once generated).",
    )
    parser.addini(
        "batchgen_total_timeout",
        default="900",
        help="seconds one model call may take in all, the SDK's retries and backoff included.",
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
    # -- judge rules (pytest_batchgen/judge.py) --
    group.addoption(
        "--batch-judge-samples",
        type=_judge_samples,
        default=1,
        metavar="K",
        help="ask the judge of each 'Judge:' checklist line K times and take the majority (default: 1, at most 25).",
    )
    group.addoption(
        "--batch-judge-required",
        action="store_true",
        default=False,
        help="a judge rule with no recorded verdict in a run that may not call the model fails "
        "(by default it is skipped, saying how to record it).",
    )
    parser.addini(
        "batchgen_judge_model",
        default="",
        help="model (alias or id) of 'Judge:' checklist lines that name none; a plan's '## Models' "
        "entry 'judge: ALIAS' wins.",
    )
    # -- issue 15: freshness, baselines and the run's Markdown summary -----------------------
    group.addoption(
        "--batch-fail-stale",
        action="store_true",
        default=False,
        help="CI gate: each row gets a 'fresh' item that fails when its output was generated from a "
        "prompt the plan would no longer send (format reference, content rules, title, model, ...).",
    )
    group.addoption(
        "--batch-regenerate-stale",
        action="store_true",
        default=False,
        help="regenerate the stale rows (and the pending ones); a new draft replaces a passing "
        "output only once it passes.",
    )
    group.addoption(
        "--batch-fail-on-regression",
        action="store_true",
        default=False,
        help="exit non-zero when a row whose previous output passed its checks was regenerated "
        "and its new draft fails them.",
    )
    group.addoption(
        "--batch-summary",
        default=None,
        metavar="PATH",
        help="write a Markdown summary of the run (rows, verdicts, freshness, cost, regressions, "
        "diffs) to PATH; it is also appended to $GITHUB_STEP_SUMMARY when that is set.",
    )
    # -- Message Batches (--batch-api batches; pytest_batchgen.batches) --------------------
    group.addoption(
        "--batch-api",
        choices=BATCH_APIS,
        default="messages",
        help="messages: one request per row as the run goes (default); batches: send the rows as "
        "Message Batches (half the price, results within 24 h), resumable after a crash or Ctrl-C.",
    )
    group.addoption(
        "--batch-cancel",
        action="store_true",
        default=False,
        help="with --batch-api batches: on Ctrl-C, cancel the batches still running (default: keep "
        "them running, keep the journal, and collect them with the next run).",
    )
    parser.addini(
        "batchgen_batch_poll_start",
        default="5",
        help="seconds before a running Message Batch is polled the first time; the wait doubles after each poll.",
    )
    parser.addini(
        "batchgen_batch_poll_max",
        default="120",
        help="the longest wait in seconds between two polls of a running Message Batch.",
    )
    # -- pacing (pytest_batchgen/pacing.py) --
    group.addoption(
        "--batch-no-pacing",
        action="store_true",
        default=False,
        help="send up to --batch-concurrency requests at once whatever the API's rate-limit headers say, "
        "and leave 429s to the SDK's retries (default: pace sends to the account's limits).",
    )
    parser.addini(
        "batchgen_sender",
        default="process",
        help="where a live run's requests are sent from: 'process' (default), a process of its own "
        "forked before collection, so that sending and pytest each have a core; 'thread', a thread of "
        "the pytest process. Runs that cannot fork safely use a thread (see the README).",
    )
    parser.addini(
        "batchgen_remember_limits",
        type="bool",
        default=True,
        help="keep the account's rate limits learnt by a run (in the user's cache folder, under a hash of "
        "the key) so that the next run paces its first wave too (default true).",
    )


#: shorter values are not credentials: replacing them would garble every message that holds them
MIN_SECRET = 8


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` without the credential values ``secrets`` (:attr:`Settings.secrets`).

    A check of yours, a custom test or a linter may put anything in its failure message (the
    environment it ran in, say), and that message goes into the plan's notes, the JSON report,
    the step summary and the CI annotations: none of them may hold the key."""
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


def redact_json(value: Any, secrets: tuple[str, ...]) -> Any:
    """A parsed JSON value (a reply) with :func:`redact` applied to every string in it, keys included."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(k, secrets): redact_json(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, secrets) for v in value]
    return value


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The credentials a URL carries in its userinfo (``http://user:password@host``, an
    authenticating gateway in ``ANTHROPIC_BASE_URL``): the password, as written and decoded,
    and the ``Authorization: Basic`` value the SDK's HTTP client makes of it."""
    if not url or "@" not in url:
        return ()
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url.strip())
        user, password = parts.username, parts.password
    except ValueError:
        return ()
    if not password:
        return ()
    import base64

    basic = base64.b64encode(f"{unquote(user or '')}:{unquote(password)}".encode()).decode("ascii")
    return tuple(dict.fromkeys((password, unquote(password), basic)))


@dataclass(frozen=True)
class Settings:
    """Every option and ini value of the run, validated; built once in ``pytest_configure``."""

    plans: tuple[str, ...]
    rootdir: Path
    invocation_dir: Path
    role: Role
    phases: tuple[str, ...] = ()
    validate_only: bool = False
    readonly: bool = False
    dry_run: bool = False
    #: ``pytest --collect-only``: collect, run nothing, so send nothing (and pay for nothing)
    collect_only: bool = False
    record_mode: RecordMode = "none"
    concurrency: int = 8
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    report: Path | None = None
    max_cost: float | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_retries: int = 2
    timeout: float = 300.0
    total_timeout: float = 900.0
    linter_timeout: float = 60.0
    max_output_bytes: int = DEFAULT_MAX_BYTES
    models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    prices: Mapping[str, Price] = field(default_factory=lambda: MappingProxyType({}))
    checks: tuple[Path, ...] = ()
    api_key: str | None = None
    judge_samples: int = 1
    judge_required: bool = False
    judge_model: str = ""
    fail_stale: bool = False
    regenerate_stale: bool = False
    fail_on_regression: bool = False
    summary: Path | None = None
    #: the file options of those two given on the command line itself (not from ``addopts``)
    typed_outputs: tuple[str, ...] = ()
    api: BatchApi = "messages"
    batch_cancel: bool = False
    batch_poll_start: float = 5.0
    batch_poll_max: float = 120.0
    pacing: bool = True
    remember_limits: bool = True
    sender: str = "process"
    #: what a printed command that runs rows again repeats of this run's command line (see
    #: :meth:`command_options`): the ini overrides (``-o``), the configuration file given
    #: (``-c``, resolved), the rootdir given (``--rootdir``, resolved)
    overrides: tuple[str, ...] = ()
    config_file: Path | None = None
    rootdir_given: Path | None = None

    def command_options(self) -> str:
        """This run's options that shape what it sends, as a printed command repeats them: each
        word after a space, quoted for the shell, paths relative to the current folder (where
        the user runs what is printed). A command that records or regenerates rows (a replay
        miss's "To record it", a retry hint, "Regenerate it", the judge's) printed without
        them sent another request than the run that printed it (``-o batchgen_max_tokens=4096``
        dropped: it recorded max_tokens 8192 again, and the run missed again). The ini
        overrides, the configuration file, the rootdir, and the batchgen options that change
        what is sent, when not their defaults: the attempts (a replay with more needs the repair
        turns recorded) and the judge's samples. Not the cost cap (``--batch-max-cost 0`` would
        make the command send nothing) nor ``--batch-api`` (a batch records the Messages request
        it stands for). The ini's ``addopts`` and ``PYTEST_ADDOPTS`` apply again by themselves."""
        from .rowid import command_path

        words: list[str] = []
        if self.config_file is not None:
            words += ["-c", shlex.quote(command_path(self.config_file))]
        if self.rootdir_given is not None:
            words += ["--rootdir", shlex.quote(command_path(self.rootdir_given))]
        for override in self.overrides:
            words += ["-o", shlex.quote(override)]
        if self.max_attempts != DEFAULT_MAX_ATTEMPTS:
            words += ["--batch-max-attempts", str(self.max_attempts)]
        if self.judge_samples != 1:
            words += ["--batch-judge-samples", str(self.judge_samples)]
        return "".join(" " + w for w in words)

    @property
    def credential(self) -> str | None:
        """What the SDK authenticates with: the key, or else ``ANTHROPIC_AUTH_TOKEN`` (read now)."""
        return self.api_key or os.environ.get("ANTHROPIC_AUTH_TOKEN") or None

    @property
    def may_generate(self) -> bool:
        """Whether this run sends requests at all: not validate-only (or read-only), not a dry
        run, not ``--collect-only`` (whose items are those of the run it lists)."""
        return not (self.validate_only or self.dry_run or self.collect_only)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The credential values no file the plugin writes may hold (see :func:`redact`): the
        key, ``ANTHROPIC_AUTH_TOKEN`` and the password of ``ANTHROPIC_BASE_URL`` (an
        authenticating gateway's, see :func:`url_secrets`), read now, longest first."""
        gateway = url_secrets(os.environ.get("ANTHROPIC_BASE_URL"))
        values = (self.api_key, os.environ.get("ANTHROPIC_AUTH_TOKEN"), *gateway)
        found = {v for v in values if v and len(v) >= MIN_SECRET}
        return tuple(sorted(found, key=len, reverse=True))

    @property
    def generates_here(self) -> bool:
        """Whether this process generates: a plain run that may call the model (its rows
        have ``generate`` items; ``--collect-only`` lists them and sends nothing).

        Under pytest-xdist the controller generates (see :mod:`pytest_batchgen.xdist`)."""
        return self.role is Role.PLAIN and not self.validate_only and not self.dry_run

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Read and validate every value; a bad one is a :class:`BatchgenError` naming it."""
        from .plan import ini_models  # (here: listing the options must not import the plan parser)
        from .pricing import ini_prices

        readonly = bool(config.getoption("batch_readonly"))
        report = config.getoption("batch_report")
        summary = config.getoption("batch_summary")
        invocation_dir = Path(config.invocation_params.dir)
        _check_no_call_options(config, readonly)
        if config.getoption("batch_cancel") and config.getoption("batch_api") != "batches":
            raise BatchgenError("--batch-cancel cancels Message Batches: it needs --batch-api batches")
        return cls(
            plans=tuple(config.getoption("batch_plan")),
            rootdir=Path(config.rootpath),
            invocation_dir=invocation_dir,
            role=Role.of(config),
            phases=tuple(str(p) for p in config.getoption("batch_phase")),
            validate_only=readonly or bool(config.getoption("batch_validate_only")),
            readonly=readonly,
            dry_run=bool(config.getoption("batch_dry_run")),
            collect_only=bool(config.getoption("collectonly", False)),
            record_mode=default_record_mode(config.getoption("batch_record_mode")),
            concurrency=config.getoption("batch_concurrency"),
            max_attempts=config.getoption("batch_max_attempts"),
            report=invocation_dir / report if report else None,
            max_cost=config.getoption("batch_max_cost"),
            max_tokens=int(_ini_number(config, "batchgen_max_tokens", whole=True)),
            max_retries=int(_ini_number(config, "batchgen_max_retries", whole=True, zero_ok=True)),
            timeout=_ini_number(config, "batchgen_timeout"),
            total_timeout=_ini_number(config, "batchgen_total_timeout"),
            linter_timeout=_ini_number(config, "batchgen_linter_timeout"),
            max_output_bytes=int(_ini_number(config, "batchgen_max_output_bytes", whole=True)),
            models=MappingProxyType(ini_models(config.getini("batchgen_models"))),
            prices=MappingProxyType(ini_prices(config.getini("batchgen_prices"))),
            checks=tuple(Path(p) for p in config.getini("batchgen_checks")),
            api_key=os.environ.get("ANTHROPIC_API_KEY") or None,
            judge_samples=config.getoption("batch_judge_samples"),
            judge_required=bool(config.getoption("batch_judge_required")),
            judge_model=str(config.getini("batchgen_judge_model") or "").strip(),
            fail_stale=bool(config.getoption("batch_fail_stale")),
            regenerate_stale=bool(config.getoption("batch_regenerate_stale")),
            fail_on_regression=bool(config.getoption("batch_fail_on_regression")),
            summary=invocation_dir / summary if summary else None,
            typed_outputs=_typed(config, ("--batch-report", "--batch-summary")),
            api=cast(BatchApi, config.getoption("batch_api")),
            batch_cancel=bool(config.getoption("batch_cancel")),
            batch_poll_start=_ini_number(config, "batchgen_batch_poll_start"),
            batch_poll_max=_ini_number(config, "batchgen_batch_poll_max"),
            pacing=not config.getoption("batch_no_pacing"),
            remember_limits=_ini_bool(config, "batchgen_remember_limits"),
            sender=_ini_choice(config, "batchgen_sender", ("process", "thread")),
            overrides=tuple(str(o) for o in (config.getoption("override_ini", None) or ())),
            config_file=Path(config.inipath) if config.getoption("inifilename", None) and config.inipath else None,
            rootdir_given=Path(config.rootpath) if config.getoption("rootdir", None) else None,
        )


def default_record_mode(given: str | None) -> RecordMode:
    """The command line wins; else ``new_episodes`` with a credential outside CI, else ``none``.

    Outside CI with a credential (``ANTHROPIC_API_KEY``, or ``ANTHROPIC_AUTH_TOKEN``, which the
    SDK sends when there is no key) the user means to generate; in CI (``CI`` set and not false)
    a run must never spend money by surprise, so it only replays unless told otherwise."""
    if given:
        return cast(RecordMode, given)
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    credential = os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")
    return "new_episodes" if credential and not in_ci else "none"


def _check_no_call_options(config: pytest.Config, readonly: bool) -> None:
    """Options that only a run calling the model uses, given with one that makes no call: each
    was ignored without a word (``--batch-record-mode all`` in a validate-only run records
    nothing), where the user meant one of the two."""
    if not (readonly or config.getoption("batch_validate_only")):
        return
    no_call = "--batch-readonly" if readonly else "--batch-validate-only"
    mode = config.getoption("batch_record_mode")
    given = [
        ("--batch-regenerate-stale generates outputs", config.getoption("batch_regenerate_stale")),
        (f"--batch-record-mode {mode} records model calls", mode not in (None, "none")),
        ("--batch-api batches sends Message Batches", config.getoption("batch_api") == "batches"),
    ]
    for what, on in given:
        if on:
            raise BatchgenError(f"{what}; {no_call} makes no model call. Drop one of them")


def _ini_bool(config: pytest.Config, name: str) -> bool:
    """A true/false ini value; pytest's own conversion raised a ValueError on anything else,
    which reached the user as an INTERNALERROR traceback (a UsageError that names no option,
    since pytest 9.2)."""
    try:
        return bool(config.getini(name))
    except (ValueError, pytest.UsageError) as exc:  # 9.0: a ValueError; 9.2: a UsageError naming no option
        # both say "invalid truth value 'maybe'": the value as written
        found = re.search(r"'(.*)'", str(exc))
        shown = f" = {found.group(1).strip()!r}" if found else ""
        raise BatchgenError(
            f"ini option {name}{shown} is not true or false (true, yes, on, 1 / false, no, off, 0)"
        ) from None


def _ini_choice(config: pytest.Config, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (case and spaces aside), or a :class:`BatchgenError` listing them."""
    raw = str(config.getini(name) or "").strip()
    value = raw.lower()
    if value not in choices:
        raise BatchgenError(f"ini option {name} = {raw!r} is not one of: {', '.join(choices)}")
    return value


def _ini_number(config: pytest.Config, name: str, *, whole: bool = False, zero_ok: bool = False) -> float:
    """A finite number above zero (or zero, with ``zero_ok``), whole when ``whole``.

    ``8192.0``, `` 60 `` and ``1e3`` are accepted (they are the numbers they look like); ``nan``,
    ``inf``, ``2.5`` for a whole number and ``0x10`` are refused with the option's name."""
    raw = config.getini(name)
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (whole and not value.is_integer()):
        what = "a whole number" if whole else "a number"
        raise BatchgenError(f"ini option {name} = {raw!r} is not {what}")
    if value < 0 or (value == 0 and not zero_ok):
        bound = "zero or more" if zero_ok else "more than zero"
        raise BatchgenError(f"ini option {name} = {raw!r} must be {bound}")
    return value


#: what each option writes, and the file name a folder given to it is told to use
_WRITTEN = {
    "--batch-report": ("report", "report.json", "JSON report"),
    "--batch-summary": ("summary", "summary.md", "summary"),
}


def check_written_paths(
    settings: Settings, plans: Sequence[Plan], tracking_files: Sequence[tuple[Plan, Path]] = ()
) -> None:
    """``--batch-report`` and ``--batch-summary`` name files the run writes at its very end: a
    folder, or a file of the plans, was found only then (a traceback after the whole run, the
    report lost), or overwritten (a plan replaced by JSON, in a ``--batch-readonly`` run too; a
    tracking file, of ``tracking_files``, replaced by the summary, every entry lost). An existing
    file that is not an earlier report (or summary) is refused too: ``--batch-summary pytest.ini``
    replaced pytest's configuration; and so is one file named by both (the report was lost under
    the summary). Refused up front, before anything is sent; and so are both
    when typed with ``--batch-dry-run``, which writes nothing (it wrote no report without a word;
    from ``addopts`` they are left unwritten, and the dry run says so)."""
    for option, path in (("--batch-report", settings.report), ("--batch-summary", settings.summary)):
        if path is None:
            continue
        _, example, kind_of_file = _WRITTEN[option]
        if path.is_dir():
            raise BatchgenError(f"{option} {path}: is a folder; name a file in it (e.g. {path / example})")
        kind = _unwritable_kind(path)
        if kind is not None:
            raise BatchgenError(
                f"{option} {path}: {kind}; name a file, a FIFO or a character device (such as a terminal)"
            )
        target = path.resolve()
        for plan in plans:
            owned = {plan.output_path(row).resolve(): f"row {row.filename}'s output in" for row in plan.rows}
            owned.update({plan.path.resolve(): "the plan", plan.format_reference.resolve(): "the format reference of"})
            owned.update({tracking.resolve(): "the tracking file of" for of, tracking in tracking_files if of is plan})
            what = owned.get(target)
            if what is None and plan.cassette_dir.resolve() in target.parents:
                what = "a file in the cassette folder of"
            if what is not None:
                raise BatchgenError(f"{option} {path}: is {what} {plan.rel(plan.path)}; name another file")
        if path.is_file() and not (_is_a_report(path) if option == "--batch-report" else _is_a_summary(path)):
            raise BatchgenError(
                f"{option} {path}: the file exists and is not a pytest-batchgen {kind_of_file}; "
                f"name another file (the {_WRITTEN[option][0]} replaces the file)"
            )
    report, summary = settings.report, settings.summary
    same = report is not None and summary is not None and report.resolve() == summary.resolve()
    if same and summary is not None and (not summary.exists() or summary.is_file()):  # a FIFO takes both
        raise BatchgenError(
            f"--batch-summary {summary}: is the file --batch-report writes too, and the one written last "
            "would replace the other; name another file"
        )
    if settings.dry_run and settings.typed_outputs:
        raise BatchgenError(
            f"--batch-dry-run writes nothing, {settings.typed_outputs[0]} included: leave out one of the two "
            "(a dry run prints each row's freshness and estimated cost instead)"
        )


def _typed(config: pytest.Config, options: Sequence[str]) -> tuple[str, ...]:
    """Which of ``options`` were typed on the command line, rather than come from ``addopts``
    (a project's report in its ini is no reason to refuse a dry run: it just writes none)."""
    args = [str(a) for a in config.invocation_params.args]
    return tuple(o for o in options if any(a == o or a.startswith(o + "=") for a in args))


def _unwritable_kind(path: Path) -> str | None:
    """What ``path`` is when the report cannot be written there (a symlink loop, a socket, a
    block device), else None. A symlink is followed and a FIFO or character device written
    (fsutil.write_through): ``--batch-report /dev/stdout`` prints it."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None  # missing, or a symlink to a file not there yet: created
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        return f"cannot be reached ({exc.strerror or exc})"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    if stat.S_ISBLK(mode):
        return "is a block device"
    return None


def _is_a_summary(path: Path) -> bool:
    """Whether ``path`` holds a summary of an earlier run (or nothing): safe to replace. A summary
    opens with its heading, ``## pytest-batchgen`` (:func:`pytest_batchgen.stepsummary.markdown`)."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return False
    # (as checked out with CRLF, or saved by an editor with a BOM: still the summary)
    head = head.removeprefix(b"\xef\xbb\xbf")
    return not head.strip() or head.startswith((b"## pytest-batchgen\n", b"## pytest-batchgen\r\n"))


def _is_a_report(path: Path) -> bool:
    """Whether ``path`` holds a JSON report of an earlier run (or nothing): safe to replace."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
        return not text.strip() or (isinstance(data := json.loads(text), dict) and "plans" in data)
    except (OSError, ValueError):
        return False
