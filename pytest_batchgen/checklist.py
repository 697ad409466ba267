"""The checklist compiler: each Validation Checklist line becomes one rule.

A *form* is a pattern plus a builder; the first form whose pattern matches a line builds the
rule's check. The built-in forms (:mod:`pytest_batchgen.rules`) and users' forms (from the
``pytest_batchgen_checklist_forms`` hook in a ``conftest.py``) go through the same path.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .document import OutputDocument
from .errors import BatchgenError, ChecklistError
from .plan import ListItem, Plan, Row


@dataclass(frozen=True)
class Failure:
    """Why a check failed: what was found and what was expected, at an output line if known."""

    message: str
    line: int | None = None
    detail: str | None = None  # longer text shown under the message (a linter's output)
    #: False when no new draft can fix it, so a repair is never paid for: the check itself raised
    #: (a bug in the check), or the judge's call failed or gave no verdict (not the draft's fault)
    repairable: bool = True


CheckResult = Failure | str | None


class CheckSkipped(Exception):
    """A check that cannot give a verdict on this output now (a judge rule whose row's other
    checks fail, or with no recorded verdict in a run that may not call the model): its item
    is skipped with the message, and a draft is not repaired for it."""


@dataclass(frozen=True)
class CheckContext:
    """What a check sees: the parsed output, its row, the plan and the run's mode."""

    doc: OutputDocument
    row: Row
    plan: Plan
    readonly: bool = False
    #: whether the row's other rules pass (None: none fails, a judge rule has no verdict)
    others_pass: Callable[[], bool | None] = field(default=lambda: True, compare=False)
    #: the rows this session checks (phase-selected); batch checks lint only these
    selected: tuple[Row, ...] = ()
    #: the failures of the row's mechanical rules (not model-graded, not run-last) on this output
    mechanical_failures: Callable[[], list] = field(default=lambda: [], compare=False)

    @property
    def path(self) -> Path:
        return self.doc.path


Check = Callable[[CheckContext], CheckResult]
Builder = Callable[[re.Match, "CompileContext"], Check]


@dataclass(frozen=True)
class CompileContext:
    """What a form's builder may consult while compiling a line."""

    plan: Plan
    item: ListItem
    options: dict = field(default_factory=dict, compare=False)

    def error(self, message: str, *other_lines: int) -> ChecklistError:
        also = ""
        if other_lines:
            also = " (see also line " + ", ".join(str(n) for n in other_lines) + ")"
        return ChecklistError(message + also, self.plan.path, self.item.line)


@dataclass(frozen=True)
class ChecklistForm:
    """A checklist form: lines matching ``pattern`` (whole line, case-insensitive) become rules.

    ``build(match, ctx)`` returns the check, and may raise ``ctx.error(...)`` when the line
    refers to something the plan lacks. For a check that needs nothing from the line, pass
    ``check`` instead of ``build``. ``example`` is a checklist line the form accepts, shown
    when a line matches no form. ``name`` names the rule in test ids (``{group}`` in it is
    replaced by that named group of the match, e.g. ``"{key}-value"``). ``runs_last`` rules run
    after the row's other rules (the tracking-file registration needs their verdicts).
    ``quick`` says the check only reads the parsed document (no process, no file beside the
    output, no model call): the generation checks drafts of a checklist of quick rules on its
    event loop, rather than on a worker thread (a thread hop per draft cost more than the
    checks themselves). A user's form is not quick unless it says so.
    """

    name: str
    pattern: str | re.Pattern
    build: Builder | None = None
    check: Check | None = None
    example: str = ""
    runs_last: bool = False
    #: graded by a model (judge rules): runs after the row's mechanical rules, before run-last ones
    model_graded: bool = False
    #: reads only the parsed document: cheap enough to run on the dispatcher's event loop
    quick: bool = False
    #: the file and line that made the form (a conftest's ``ChecklistForm(...)``): where an error
    #: about the form itself points, a pattern that is no regular expression matching no line
    defined_at: tuple[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        caller = sys._getframe(2)  # above the dataclass's __init__
        object.__setattr__(self, "defined_at", (caller.f_code.co_filename, caller.f_lineno))

    def describe(self) -> str:
        """The form as a user writes it: its example (a raw regex helps nobody reword a line)."""
        if self.example:
            return self.example
        return f'(a line for the {self.name!r} form, which has no example: give its ChecklistForm example="...")'

    def regex(self) -> re.Pattern:
        if isinstance(self.pattern, re.Pattern):
            return self.pattern
        return re.compile(self.pattern, re.IGNORECASE)

    def make(self, match: re.Match, ctx: CompileContext) -> Check:
        if self.build is not None:
            return self.build(match, ctx)
        if self.check is not None:
            return self.check
        raise TypeError(f"checklist form {self.name!r} has neither build nor check")

    def rule_name(self, match: re.Match) -> str:
        groups = {k: (v or "") for k, v in match.groupdict().items()}
        try:
            name = self.name.format(**groups)
        except (KeyError, IndexError, AttributeError, ValueError, TypeError):
            name = self.name  # ("{k.x}", "{k!z}", "{": a name, not a template; INTERNALERROR before)
        return re.sub(r"[^A-Za-z0-9_.\-]+", "-", name.strip().lower()).strip("-") or "check"


@dataclass(frozen=True)
class Rule:
    """A compiled checklist line."""

    name: str
    item: ListItem
    form: ChecklistForm
    check: Check = field(compare=False)

    @property
    def line(self) -> int:
        return self.item.line

    def run(self, ctx: CheckContext) -> Failure | None:
        result = self.check(ctx)
        if result is None or result is True:
            return None
        if isinstance(result, Failure):
            return _checked(result)
        if isinstance(result, str) and result.strip():
            return Failure(_bounded(result))
        return _returned(result)


#: how long a check's own message may be (a user's check returned 200,000 characters, which
#: went whole into the plan's notes and would go into a repair prompt)
MAX_MESSAGE_CHARS = 2000


def _bounded(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS] + f"… ({len(text) - MAX_MESSAGE_CHARS:,} more characters)"


def _returned(result: object) -> Failure:
    """False, 42, "": a failure all the same, saying what the check gave and what it may give."""
    shown = repr(result)
    shown = shown if len(shown) <= 200 else shown[:200] + "…"
    return Failure(
        f"the check returned {shown}: it fails the output; return None to pass, "
        "or a message or a Failure(message, line=...) saying what is wrong"
    )


def _checked(failure: Failure) -> Failure:
    """A :class:`Failure` a check made, as the rest of the plugin can take it: its message a
    text (``Failure(404)`` crashed the end of the run, in the plan's notes and the terminal),
    its line a line of the output or None (``line=-3`` and ``2.5`` reached GitHub's
    annotations), its detail a text or None."""
    message = failure.message
    if not isinstance(message, str) or not message.strip():
        return _returned(failure)
    line = failure.line
    bad_line = line is not None and (isinstance(line, bool) or not isinstance(line, int) or line < 1)
    detail = failure.detail if failure.detail is None or isinstance(failure.detail, str) else repr(failure.detail)
    if bad_line or len(message) > MAX_MESSAGE_CHARS or detail is not failure.detail:
        note = f" (the check gave line={line!r}, not a line of the output)" if bad_line else ""
        return replace(failure, message=_bounded(message) + note, line=None if bad_line else line, detail=detail)
    return failure


#: the items a row has besides its rules (nodes.RowNode): no rule takes their names
ROW_ITEM_NAMES = ("generate", "fresh")


def compile_checklist(plan: Plan, forms: Sequence[ChecklistForm], options: dict | None = None) -> tuple[Rule, ...]:
    """Compile every checklist line; raise :class:`ChecklistError` for the first bad line."""
    if not plan.checklist:
        raise ChecklistError(
            "the Validation Checklist has no numbered lines; add at least one check",
            plan.path,
            plan.checklist_line,
        )
    rules: list[Rule] = []
    # the names of a row's own items are taken: a form named "generate" made a second
    # plan.md::row.md::generate, and failures of the two read as one
    used: dict[str, int] = dict.fromkeys(ROW_ITEM_NAMES, 1)
    for item in plan.checklist:
        text = item.text.strip().rstrip(".").strip()
        for form in forms:
            m = _form_regex(form).fullmatch(text)
            if m is None:
                continue
            check = _built(form, m, CompileContext(plan, item, options or {}))
            name = form.rule_name(m)
            used[name] = used.get(name, 0) + 1
            if used[name] > 1:
                name = f"{name}-{used[name]}"
            rules.append(Rule(name=name, item=item, form=form, check=check))
            break
        else:
            known = "\n".join(dict.fromkeys(f"  - {f.describe()}" for f in forms))
            raise ChecklistError(
                f"checklist line {item.text!r} matches no checklist form. Reword it as one of:\n{known}\n"
                "or add a form in conftest.py with the pytest_batchgen_checklist_forms hook",
                plan.path,
                item.line,
            )
    return tuple(sorted(rules, key=lambda r: (r.form.runs_last, r.form.model_graded)))


def _form_regex(form: ChecklistForm) -> re.Pattern:
    """The form's pattern, compiled; a form a user defined wrongly (a pattern that is no regular
    expression or no text, a name that is no text) is an error at the line that made the form:
    not at the checklist line being compiled, which the form may never have been meant for."""
    fix = "fix it where the form is defined (a conftest's pytest_batchgen_checklist_forms)"
    path, line = form.defined_at or (None, None)
    if not isinstance(form.name, str):
        raise ChecklistError(f"a checklist form has the name {form.name!r}, not a text; {fix}", path, line)
    if not isinstance(form.pattern, (str, re.Pattern)):
        raise ChecklistError(
            f"the checklist form {form.name!r} has the pattern {form.pattern!r:.40}, not a text or a compiled "
            f"regular expression; {fix}",
            path,
            line,
        )
    try:
        return form.regex()
    except re.error as exc:
        raise ChecklistError(
            f"the checklist form {form.name!r} has a pattern that is not a regular expression ({exc}); {fix}",
            path,
            line,
        ) from None


def _built(form: ChecklistForm, match: re.Match, ctx: CompileContext) -> Check:
    """The form's check for this line; a builder's bug is an error naming the form and the
    line (the plan's own mistakes come through ``ctx.error`` as they are)."""
    where = f"the checklist form {form.name!r}"
    try:
        check = form.make(match, ctx)
    except BatchgenError:
        raise
    except Exception as exc:
        raise ChecklistError(
            f"{where} failed to build a check for this line: {type(exc).__name__}: {exc}; fix its builder "
            "(a conftest's pytest_batchgen_checklist_forms) or reword the line",
            ctx.plan.path,
            ctx.item.line,
        ) from None
    if not callable(check):
        raise ChecklistError(
            f"{where} built {type(check).__name__} {check!r:.40}, not a check: its builder must return a "
            "function of the check context",
            ctx.plan.path,
            ctx.item.line,
        )
    return check


# A straight quote delimits a name only at its edges (not after or before a letter), so an
# apostrophe is text: "What's new and Who's affected" is two names, "won't fix" one. Inside a quoted
# name, an apostrophe between letters stays text too ('won't fix'). The alternatives are disjoint,
# so matching stays linear.
_QUOTED = re.compile(
    r"`([^`]*)`"
    r"|(?<!\w)\"((?:[^\"]|(?<=\w)\"(?=\w))*)\"(?!\w)"
    r"|(?<!\w)'((?:[^']|(?<=\w)'(?=\w))*)'(?!\w)"
    r"|“([^”]*)”"
)


def split_list(text: str, alternatives: bool = False) -> list[str]:
    """Split ``A, B, and C`` into names; quoted or backticked names may hold commas or "and".

    ``alternatives`` (lists of allowed values: ``is one of: A, B, or C``) splits on "or" as on
    "and", so the last value is ``C``, not ``or C``; a value holding "or" is then quoted.

    A quote mark opens or closes a name only at the name's edge: inside a word it is an
    apostrophe (``What's new``), part of the name."""
    placeholders: list[str] = []

    def hide(m: re.Match) -> str:
        placeholders.append(next(g for g in m.groups() if g is not None))
        return f"\x00{len(placeholders) - 1}\x00"

    hidden = " ".join(_QUOTED.sub(hide, text).split())  # single spaces: the split below stays linear
    # "&" is not a separator: it is part of common headings ("Pros & Cons", "Q & A")
    word = "and|or" if alternatives else "and"
    parts = re.split(rf"\s*,\s*(?:(?:{word})\s+)?|\s+(?:{word})\s+", hidden.strip().rstrip("."))
    out = []
    for part in parts:
        part = part.strip()
        lead = re.match(rf"(?:{word})\s+", part, re.IGNORECASE)
        if lead:
            part = part[lead.end() :].strip()
        if not part:
            continue
        out.append(re.sub(r"\x00(\d+)\x00", lambda m: placeholders[int(m.group(1))], part).strip())
    return [p for p in out if p]


_NUMBER_WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}


def parse_count(word: str) -> int | None:
    """``"2"`` or ``"two"`` -> 2; anything else -> None."""
    word = word.strip().lower()
    if word.isdigit():
        return int(word)
    return _NUMBER_WORDS.get(word)


HOOK = "pytest_batchgen_checklist_forms"


def call_forms_hook(hook: Callable[[], Iterable[Any]]) -> list[Any]:
    """Call the forms hook; a hook that raises is a :class:`ChecklistError` at its own line.

    The hook runs users' conftest code while the plugin is configured, where an exception
    would end the run in an INTERNALERROR and a page of pluggy's frames. The error names the
    implementation's file and line, and where it raised when that is elsewhere (a helper)."""
    try:
        # a generator's body (a hook that yields its forms) runs here too, where its error is caught
        return [_materialised(group) for group in hook()]
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        impl = next((f for f in reversed(frames) if f.name == HOOK), frames[-1] if frames else None)
        raised = frames[-1] if frames else None
        where = ""
        if raised is not None and impl is not None and (raised.filename, raised.lineno) != (impl.filename, impl.lineno):
            at = f"line {raised.lineno}" if raised.filename == impl.filename else f"{raised.filename}:{raised.lineno}"
            where = f" (at {at}, in {raised.name})"
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ChecklistError(
            f"{HOOK} raised {what}{where}; fix the hook: the checklist's forms are read from it "
            "before any plan is compiled",
            impl.filename if impl is not None else None,
            impl.lineno if impl is not None else None,
        ) from None


def forms_from_hook(hook: Callable[[], Iterable[Any]]) -> list[ChecklistForm]:
    """Every implementation's forms, flattened (:func:`call_forms_hook`, :func:`collect_forms`).

    A result that is no form is named at the line of the implementation that returned it, as a
    hook that raises is: with a conftest in each of several folders, "returned str 'x'" left the
    user to find which. pluggy gives the results without their implementations, so on that
    error path only each implementation is asked again, alone (a hook's forms are pure data)."""
    results = call_forms_hook(hook)
    try:
        return collect_forms(results)
    except ChecklistError as exc:
        where = None if exc.path is not None else _implementation_returning_no_form(hook)
        if where is None:
            raise
        raise ChecklistError(exc.message, *where) from None


def _implementation_returning_no_form(hook: Any) -> tuple[str, int] | None:
    """The file and ``def`` line of the first implementation of ``hook`` whose result alone is
    refused by :func:`collect_forms`; None when none is found so (or ``hook`` is no pluggy hook).
    Wrappers are not called: they pass on what the others return."""
    get_impls = getattr(hook, "get_hookimpls", None)
    if get_impls is None:
        return None
    for impl in reversed(get_impls()):  # pluggy's call order
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue  # a wrapper returns no forms of its own (alone, its generator gives None)
        try:
            collect_forms([_materialised(impl.function())])
        except ChecklistError:
            code = getattr(impl.function, "__code__", None)
            return (code.co_filename, code.co_firstlineno) if code is not None else None
        except Exception:
            continue
    return None


def _materialised(group: Any) -> Any:
    """One implementation's result, with an iterable of forms made a list (what is not one is
    left for :func:`collect_forms` to name)."""
    if group is None or isinstance(group, (ChecklistForm, str, bytes)) or not isinstance(group, Iterable):
        return group
    return list(group)


def collect_forms(results: Iterable[Iterable[ChecklistForm] | ChecklistForm]) -> list[ChecklistForm]:
    """Flatten the hook's results (users' conftest forms come before the built-ins). A hook that
    returns one form rather than a list is taken at its word, and one that returns None gives
    none; anything else is an error that names what it returned."""
    forms: list[ChecklistForm] = []
    for group in results:
        if isinstance(group, ChecklistForm):
            group = [group]
        elif group is None:
            group = []
        elif isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
            group = [group]  # named below, whole (a text, not its first character)
        for form in group:
            if not isinstance(form, ChecklistForm):
                raise ChecklistError(
                    f"{HOOK} returned {type(form).__name__} {form!r:.60}; "
                    "it must return a list of pytest_batchgen.ChecklistForm"
                )
            forms.append(form)
    return forms
