"""The built-in checklist forms (PRODUCT.md section 4).

They are registered through the same ``pytest_batchgen_checklist_forms`` hook users implement,
so a user's form can shadow one of these simply by matching first.
"""

from __future__ import annotations

import datetime
import os
import re
import reprlib
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .checklist import (
    CheckContext,
    ChecklistForm,
    CheckSkipped,
    CompileContext,
    Failure,
    Rule,
    parse_count,
    split_list,
)
from .document import OutputDocument
from .errors import ChecklistError
from .fsutil import failed_file, lock_timeout, signature
from .judge import JUDGE_FORM
from .plan import Plan, Row
from .tracking import TrackingError, is_registered, register, retitle

DEFAULT_LINTER_TIMEOUT = 60.0


def _blank(value: Any) -> bool:
    """Null, empty or whitespace strings, and lists or mappings holding only blanks are blank.

    Iterative, and each container is visited once: YAML anchors can nest lists a thousand deep,
    refer to themselves (``&a [*a]``) or share one list exponentially often ("billion laughs").
    """
    stack = [value]
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        if v is None:
            continue
        if isinstance(v, str):
            if v.strip():
                return False
            continue
        if isinstance(v, (list, tuple, set)):
            if id(v) not in seen:
                seen.add(id(v))
                stack.extend(v)
            continue
        if isinstance(v, dict):
            if v:
                return False
            continue
        return False
    return True


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 78, 78


def _show(value: Any) -> str:
    text = _REPR.repr(value)  # bounded: front matter values can be huge, deep or self-referential
    return text if len(text) <= 80 else text[:77] + "..."


def _front_matter_problem(doc: OutputDocument) -> Failure | None:
    if doc.error:
        return Failure(doc.error)
    if not doc.has_front_matter:
        return Failure("the output has no YAML front matter (it must start with a '---' line)", 1)
    if doc.front_matter_error:
        return Failure(doc.front_matter_error, doc.front_matter_error_line)
    return None


# -- Front matter includes K1, K2[,] and at least N K3 ------------------------------------

# Matching is linear: the line is cut with plain patterns (one lazy group followed by optional
# whitespace, as the old single pattern had, backtracks quadratically over a run of spaces).
_FRONT_MATTER = r"front[- ]matter (?:includes|has|contains)\s+(?P<rest>.+)"
# the list key may be backticked or quoted, as the other keys may (a quoted key with a space in it is
# caught by the builder, which says how to write it)
_AT_LEAST = re.compile(
    r"at least (?P<count>\w+) (?P<listkey>`[^`]*`|\"[^\"]*\"|'[^']*'|“[^”]*”|[\w\-]+)\Z", re.IGNORECASE
)
_AT_LEAST_ANYWHERE = re.compile(r"(?:^|\s)at least \S+ \S", re.IGNORECASE)
_TRAILING_AND = re.compile(r"(?:^|\s)and\Z", re.IGNORECASE)


def _front_matter_parts(rest: str) -> tuple[str, str | None, str | None]:
    """``"term, tags, and at least 2 tags"`` -> (``"term, tags"``, ``"2"``, ``"tags"``)."""
    rest = " ".join(rest.split())  # one space between words, whatever the line had
    count = list_key = None
    m = _AT_LEAST.search(rest)
    if m and (m.start() == 0 or rest[m.start() - 1] in " ,"):
        count, list_key = m.group("count"), m.group("listkey").strip("`\"'“”")
        rest = rest[: m.start()].rstrip(" ,")
        rest = _TRAILING_AND.sub("", rest).rstrip(" ,")
    return rest, count, list_key


def _case_hint(missing: list[str], meta: Mapping[str, Any]) -> str:
    """The missing keys present under another case (``Title:`` for ``title``): keys are
    case-sensitive, and a bare "missing key title" sent the user looking for a key that is there."""
    present = {str(k).lower(): str(k) for k in meta}
    near = [f"{present[k.lower()]!r} for {k!r}" for k in missing if k.lower() in present]
    return f" (keys are case-sensitive: found {', '.join(near)})" if near else ""


def _build_front_matter(m: re.Match, ctx: CompileContext):
    keys_text, count_word, list_key = _front_matter_parts(m.group("rest"))
    keys = split_list(keys_text) if keys_text else []
    if list_key is not None and (not list_key or list_key != "".join(list_key.split())):
        raise ctx.error(
            f"the list key {list_key!r} in 'at least {count_word} ...' must be one word, e.g. 'at least 2 tags'"
        )
    # an "at least" that was not read as the list clause would otherwise become a key named
    # "at least 2 tags items", missing from every output
    stray = next((k for k in keys if _AT_LEAST_ANYWHERE.search(k)), None)
    if stray is not None:
        raise ctx.error(
            f"cannot read {stray!r} as a front matter key: write 'at least N KEY' last, with KEY one word "
            "(e.g. 'Front matter includes title and at least 2 tags')"
        )

    # a remark in parentheses ("tags (at least 2)") or words around a key ("2 or more tags",
    # "term & category") became a key no output has, failed by every row; a key that really
    # holds a space or '(' is written in backticks or quotes
    def quoted(key: str) -> bool:
        return any(f"{a}{key}{b}" in keys_text for a, b in ("``", '""', "''", "“”"))

    remark = next((k for k in keys if "(" in k and not quoted(k)), None)
    if remark is not None:
        raise ctx.error(
            f"cannot read {remark!r} as a front matter key: a remark in parentheses is not part of a key; "
            "ask for a list as 'and at least 2 tags', or write a key that holds '(' in backticks"
        )
    phrase = next((k for k in keys if k != "".join(k.split()) and not quoted(k)), None)
    if phrase is not None:
        raise ctx.error(
            f"cannot read {phrase!r} as a front matter key: keys are separated by commas and 'and', "
            "and a list is asked for as 'and at least 2 tags'; write a key that holds a space in backticks"
        )
    count = 0  # the list's least length, read only when the line names a list (list_key)
    if list_key and count_word is not None:  # _front_matter_parts finds the two together
        parsed = parse_count(count_word)
        if parsed is None:
            raise ctx.error(f"cannot read the number {count_word!r}; write it in digits or words")
        count = parsed
    if not keys and not list_key:
        raise ctx.error("name at least one front matter key")

    def check(c: CheckContext):
        doc = c.doc
        problem = _front_matter_problem(doc)
        if problem:
            return problem
        meta = doc.metadata
        missing = [k for k in keys if k not in meta]
        blank = [k for k in keys if k in meta and _blank(meta[k])]
        msgs = []
        line = None
        if missing:
            msgs.append(
                "missing key" + ("s " if len(missing) > 1 else " ") + ", ".join(missing) + _case_hint(missing, meta)
            )
            line = 1
        if blank:
            msgs.append(", ".join(f"{k} is blank ({_show(meta[k])})" for k in blank))
            line = line or doc.line_of(blank[0])
        if list_key:
            value = meta.get(list_key)
            kline = doc.line_of(list_key)
            if list_key not in meta:
                msgs.append(f"missing key {list_key} (expected a list of at least {count})")
                line = line or 1
            elif not isinstance(value, list):
                msgs.append(
                    f"{list_key} is a {type(value).__name__} ({_show(value)}), expected a list of at least {count}"
                )
                line = line or kline
            else:
                filled = [v for v in value if not _blank(v)]
                if len(filled) < count:
                    msgs.append(
                        f"{list_key} has {len(filled)} non-blank item{'s' if len(filled) != 1 else ''} "
                        f"({_show(value)}), expected at least {count}"
                    )
                    line = line or kline
        if msgs:
            return Failure("front matter: " + "; ".join(msgs), line)
        return None

    return check


# -- K is one of ... ------------------------------------------------------------------------


def _yaml_kind(value: object) -> str | None:
    """What YAML made of an unquoted scalar that is not text (``1``, ``yes``, ``2024-01-01``), or
    None for a list or a mapping: "category is a int (1), not a single value" was false of them."""
    if value is None:
        return "null (empty)"
    if isinstance(value, bool):
        return "a boolean (yes, no, on, off, true and false are)"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    return None


def _one_of_check(key: str, allowed: list[str]):
    def check(c: CheckContext):
        doc = c.doc
        problem = _front_matter_problem(doc)
        if problem:
            return problem
        expected = "expected one of: " + ", ".join(allowed)
        if key not in doc.metadata:
            return Failure(f"front matter has no {key}; {expected}", 1)
        value = doc.metadata[key]
        line = doc.line_of(key)
        if not isinstance(value, str):
            kind = _yaml_kind(value)
            if kind is None:
                return Failure(
                    f"{key} is a {type(value).__name__} ({_show(value)}), not a single value; {expected}", line
                )
            return Failure(
                f"{key} is {_show(value)}, which YAML reads as {kind}, not text; {expected} (quote the value in the "
                f'front matter to make it text: {key}: "...")',
                line,
            )
        if value in allowed:
            return None
        hint = ""
        near = [a for a in allowed if a.lower() == value.strip().lower()]
        if near:
            hint = f" (values are case-sensitive: did you mean {near[0]!r}?)"
        # bounded: the value is the model's and may be 60 KB, and the message goes into the plan's notes
        return Failure(f"{key} is {_show(value)}, {expected}{hint}", line)

    return check


_RULE_LIST_RE = r"^`?(?P<key>{key})`?\s+(?:must be|is) one of\s*(?::\s*)?(?P<values>\S.*)$"


#: prose after the last value of a Content Rules list, which is written for the model: a remark
#: in parentheses with a space in it (``(pick one)``; ``Go (lang)`` stays a value), a ``;``
_TRAILING_PROSE_RE = re.compile(r"(?:\s+\([^()]*\s[^()]*\))?\s*[.;,:]?\s*$")


def _without_trailing_prose(values: str) -> str:
    """The values of a Content Rules list without a remark after the last one: "Consistency,
    Concurrency (pick one)" allowed 'Concurrency (pick one)', and every output failed."""
    return _TRAILING_PROSE_RE.sub("", values, count=1)


def _build_one_of_listed(m: re.Match, ctx: CompileContext):
    key = m.group("key")
    pattern = re.compile(_RULE_LIST_RE.format(key=re.escape(key)), re.IGNORECASE)
    for rule in ctx.plan.content_rules:
        found = pattern.match(rule.text.strip())
        if found:
            values = split_list(_without_trailing_prose(found.group("values")), alternatives=True)
            if found.group("key") != key:
                # found case-insensitively, but front matter keys are case-sensitive: every output
                # would fail "front matter has no Category" while writing the key as the rules say
                raise ctx.error(
                    f"this line names the key {key!r} and the Content Rules line {rule.line} names "
                    f"{found.group('key')!r}: front matter keys are case-sensitive; write the key the same "
                    "way in both",
                    rule.line,
                )
            break
    else:
        raise ctx.error(
            f"this line needs a Content Rules line '{key} must be one of: A, B, C', and the plan has none",
            ctx.plan.content_rules_line,
        )
    if m.group("count"):
        n = parse_count(m.group("count"))
        if n is None:
            raise ctx.error(f"cannot read the number {m.group('count')!r}")
        if n != len(values):
            raise ctx.error(
                f"says {m.group('count')} values, but Content Rules lists {len(values)} ({', '.join(values)})",
                rule.line,
            )
    return _one_of_check(key, values)


def _build_one_of_inline(m: re.Match, ctx: CompileContext):
    values = split_list(m.group("values"), alternatives=True)
    if not values:
        raise ctx.error("list the allowed values after 'is one of:'")
    return _one_of_check(m.group("key"), values)


# -- S1, S2 and S3 sections present[, in that order] --------------------------------------


#: headings a missing-section failure lists: an output may have thousands, and the message goes into
#: the terminal, repair prompts and the plan's notes
MAX_HEADINGS_SHOWN = 10


def _shown_headings(headings: list) -> str:
    """The first :data:`MAX_HEADINGS_SHOWN` headings' texts (each bounded), then how many more."""
    shown = ", ".join(_show(h.text) for h in headings[:MAX_HEADINGS_SHOWN]) or "none"
    more = len(headings) - MAX_HEADINGS_SHOWN
    return shown + (f", … and {more:,} more" if more > 0 else "")


def _as_rendered(text: str) -> str:
    """A section name as a reader sees it: whitespace runs (two spaces, a tab, a line break in a
    setext heading, a no-break space) as one space, and composed characters (NFC: ``e`` and a
    combining accent are ``é``). ``## Related  Terms`` and ``## Cafe\u0301`` render as the names
    they were compared with, and were reported missing."""
    return " ".join(unicodedata.normalize("NFC", text).split())


#: the typographic quotes a heading may hold for the straight ones a checklist line has
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def _loosely(text: str) -> str:
    """A section name for the "close but not the same" hint: as rendered, in lower case, with
    typographic quotes straight (``What’s new`` for ``What's new``)."""
    return _as_rendered(text).lower().translate(_QUOTES)


def _near(doc: OutputDocument, section: str, name: str) -> str | None:
    """What the output has instead of the missing ``section`` (``name`` as compared), if
    anything: a level-2 heading of that text nested in a blockquote or a list item (a renderer
    shows it inside the quote or the list, so it heads no section; the user wants to know why the
    heading they see does not count), else a heading close to it, nested or not."""
    for h in doc.headings:
        if h.level == 2 and h.container is not None and _as_rendered(h.text) == name:
            return (
                f"{section!r} is a heading inside a {h.container} at line {h.line}, not a section: "
                f"write it at the start of a line, {_UNNEST.get(h.container, 'outside it')}"
            )
    close = [h for h in doc.headings if _loosely(h.text) == _loosely(section)]
    if not close:
        return None
    h = min(close, key=lambda h: h.container is not None)  # the document's own heading first
    written = f" (written {_show(h.source)})" if h.source is not None else ""
    inside = f", inside a {h.container}," if h.container else ""
    return f"{'#' * h.level} {h.text!r}{written} at line {h.line}{inside} is close but not the same"


#: how a nested heading is made a section, by its container
_UNNEST = {
    "blockquote": "without the '>' before it",
    "list item": "outside the list (not after a list marker, nor indented under an item)",
}


def _build_sections(m: re.Match, ctx: CompileContext):
    wanted = split_list(m.group("sections"))
    names = [_as_rendered(s) for s in wanted]  # as compared: once, not once per output
    ordered = bool(m.group("order"))
    if not wanted:
        raise ctx.error("name the sections, e.g. 'Definition, Details and Related Terms sections present'")

    def check(c: CheckContext):
        doc = c.doc
        if doc.error:
            return Failure(doc.error)
        # a heading nested in a blockquote or a list item heads no section (see Heading.container)
        h2 = [h for h in doc.sections if h.level == 2]
        first: dict[str, int] = {}
        for idx, h in enumerate(h2):
            first.setdefault(_as_rendered(h.text), idx)
        missing = [s for s, name in zip(wanted, names, strict=True) if name not in first]
        if missing:
            found = _shown_headings(h2)
            hints = [
                hint
                for s, name in zip(wanted, names, strict=True)
                if name not in first
                if (hint := _near(doc, s, name))
            ]
            hint = ("; " + "; ".join(hints)) if hints else ""
            return Failure(
                f"missing section{'s' if len(missing) > 1 else ''} "
                + ", ".join(repr(s) for s in missing)
                + f" (level-2 headings found: {found}){hint}",
                None,
            )
        if ordered:
            positions = [first[name] for name in names]
            if positions != sorted(positions):
                actual = [s for _, s in sorted(zip(positions, wanted, strict=True))]
                bad = next(i for i in range(1, len(positions)) if positions[i] < positions[i - 1])
                return Failure(
                    "sections out of order: found " + ", ".join(actual) + "; expected " + ", ".join(wanted),
                    h2[positions[bad]].line,
                )
        return None

    return check


# -- Linter passes: `COMMAND` ---------------------------------------------------------------


def _build_linter(m: re.Match, ctx: CompileContext):
    command = m.group("cmd").strip().strip("`").strip()
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ctx.error(f"cannot split the linter command: {exc}") from None
    if not argv:
        raise ctx.error("the linter command is empty")
    timeout = float(ctx.options.get("linter_timeout", DEFAULT_LINTER_TIMEOUT))
    rootdir = ctx.plan.rootdir
    if "{paths}" in argv:
        if argv.count("{paths}") > 1 or any("{path}" in a for a in argv):
            raise ctx.error("write {paths} once, as an argument of its own, and not with {path}")
        return LinterBatch(argv, rootdir, timeout).check

    def check(c: CheckContext):
        return run_linter(argv, c.plan.rel(c.path), rootdir, timeout)

    return check


def resolve_command(name: str) -> str:
    """Find a bare command on PATH, else beside the running interpreter (an unactivated venv)."""
    if os.sep in name or (os.altsep and os.altsep in name):
        return name
    found = shutil.which(name)
    if found:
        return found
    beside = shutil.which(name, path=str(Path(sys.executable).parent))
    return beside or name


#: words in an environment variable's name that mark it as a credential a linter must not see
_SECRET_NAME_WORDS = (
    "API_KEY",
    "APIKEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "PRIVATE_KEY",
    "ACCESS_KEY",
)


def _is_credential(name: str) -> bool:
    upper = name.upper()
    return upper.startswith("ANTHROPIC_") or any(w in upper for w in _SECRET_NAME_WORDS)


def linter_env(environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], tuple[str, ...]]:
    """The environment a linter runs in, and the secret values withheld from it.

    A linter is a third-party program run on model output; it needs PATH, HOME, locale and its
    own settings, never the API key. Dropped: every ``ANTHROPIC_*`` variable and every variable
    whose name says it is a credential (``*_API_KEY``, ``*_TOKEN``, ``*SECRET*``,
    ``*PASSWORD*``, ``*CREDENTIAL*``, ``*ACCESS_KEY*``, ``*PRIVATE_KEY*``), plus any variable
    holding the same value as one of those. The withheld values (8 characters or more) are also
    blanked out of whatever the linter prints, which ends up in repair turns and the plan's notes.
    """
    environ = os.environ if environ is None else environ
    secrets = {v for k, v in environ.items() if _is_credential(k) and len(v) >= 8}
    env = {k: v for k, v in environ.items() if not _is_credential(k) and v not in secrets}
    env["NO_COLOR"] = "1"
    return env, tuple(sorted(secrets, key=len, reverse=True))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


def safe_path(path: str) -> str:
    """A relative path that no program can read as an option (``--help`` -> ``./--help``)."""
    return f".{os.sep}{path}" if path.startswith("-") else path


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the linter and every process it started (they share its new session)."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


#: linters running at once in this process: drafts are checked as many at once as requests
#: are in flight (a judge call waits on the network), but a linter takes a core while it runs
_LINTERS = threading.BoundedSemaphore(min(32, (os.cpu_count() or 1) + 4))


def _invoke(args: list[str], cwd: Path, timeout: float) -> tuple[Failure | None, int, str]:
    """Run without a shell: (a failure to run at all, exit code, combined output).

    The linter starts in a session of its own, so that on a timeout its whole process group is
    killed: a ``sh -c "..."`` wrapper's children must not outlive the check (or pytest). At most
    :data:`_LINTERS` run at once.
    """
    with _LINTERS:
        return _invoke_now(args, cwd, timeout)


def _invoke_now(args: list[str], cwd: Path, timeout: float) -> tuple[Failure | None, int, str]:
    args = [resolve_command(args[0]), *args[1:]]
    shown = " ".join(shlex.quote(a) for a in args)
    env, secrets = linter_env()
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=os.name == "posix",
        )
    except FileNotFoundError:
        return Failure(f"linter command not found: {args[0]!r}; install it or fix the checklist line"), -1, ""
    except PermissionError:
        return Failure(f"linter command {args[0]!r} is not executable"), -1, ""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        out = _redact(((stdout or b"") + (stderr or b"")).decode("utf-8", "replace").strip(), secrets)
        return Failure(f"linter timed out after {timeout:g}s and was killed: {shown}", detail=out or None), -1, out
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    _kill_group(proc)  # anything it left running in the background goes with it
    out = _redact((stdout + stderr).decode("utf-8", "replace").strip(), secrets)
    return None, proc.returncode, out


def _shown(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _path_pattern(*names: str) -> re.Pattern:
    """Any of ``names`` as a whole path in a linter's output: not a substring of a longer path.

    ``a.md`` must not match ``data.md:3:1`` (nor ``out/a.md`` match ``about/a.md``), or a clean
    file takes the blame for another's lines. A name starts at the line's start or after a space,
    quote, bracket or ``=,;``, optionally as ``./name`` (how :func:`safe_path` passes it), and
    ends where a path character does not follow (``a.md:3``, ``a.md)``, ``a.md.`` all match).
    """
    alternatives = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
    return re.compile(r"(?<![^\s'\"(\[<=,;])(?:\./)?(?:" + alternatives + r")(?!\.?[\w/\\\-])", re.MULTILINE)


def _first_line(out: str, *names: str) -> int | None:
    """The line number after the first mention of one of ``names`` (``path:LINE``), if any."""
    pattern = _path_pattern(*names)
    for lm in pattern.finditer(out):
        number = re.match(r":(\d+)", out[lm.end() : lm.end() + 24])
        if number:
            return int(number.group(1))
    return None


def run_linter(argv: list[str], path: str, cwd: Path, timeout: float) -> Failure | None:
    """Run a linter on one file; exit 0 passes, anything else fails with its output."""
    arg = safe_path(path)
    args = [a.replace("{path}", arg) for a in argv]
    if not any("{path}" in a for a in argv):
        args.append(arg)
    error, code, out = _invoke(args, cwd, timeout)
    if error is not None:
        return error
    if code == 0:
        return None
    # a linter may print the path as given or resolved (pymarkdown prints it absolute)
    line = _first_line(out, path, str((cwd / path).resolve()))
    return Failure(f"linter exited {code}: {_shown(args)}", line, detail=out or None)


class LinterBatch:
    """A linter that takes many paths (``{paths}``): one run per batch of files, not per file.

    The first check runs the linter over every existing output of the session's rows whose
    verdict is not known yet (in chunks of ``chunk`` paths); later checks read the verdict while the file is
    unchanged. Output lines naming a file are that file's failure; when the linter fails without
    naming any file, each file is linted alone so the verdicts stay exact.
    """

    def __init__(self, argv: list[str], cwd: Path, timeout: float, chunk: int = 200) -> None:
        self.argv = argv
        self.cwd = cwd
        self.timeout = timeout
        self.chunk = chunk
        self.runs = 0
        self._lock = threading.Lock()
        self._verdicts: dict[str, tuple[tuple[int, int, int] | None, Failure | None]] = {}

    _sig = staticmethod(signature)  # (size, mtime_ns, inode): atomic writes make a new inode

    def check(self, c: CheckContext) -> Failure | None:
        rel = c.plan.rel(c.path)
        with self._lock:
            sig = self._sig(c.path)
            hit = self._verdicts.get(rel)
            if hit is not None and hit[0] == sig and sig is not None:
                return hit[1]
            stale: dict[str, tuple[Path, tuple[int, int, int] | None]] = {}
            for row in c.selected or c.plan.rows:
                path = c.plan.output_path(row)
                r, s = c.plan.rel(path), self._sig(path)
                old = self._verdicts.get(r)
                if s is not None and (old is None or old[0] != s):
                    stale[r] = (path, s)
            stale[rel] = (c.path, sig)
            names = list(stale)
            for i in range(0, len(names), self.chunk):
                self._run({n: stale[n] for n in names[i : i + self.chunk]})
            return self._verdicts[rel][1]

    def _run(self, files: dict[str, tuple[Path, tuple[int, int, int] | None]]) -> None:
        at = self.argv.index("{paths}")
        args = self.argv[:at] + [safe_path(n) for n in files] + self.argv[at + 1 :]
        self.runs += 1
        error, code, out = _invoke(args, self.cwd, self.timeout)
        if error is not None:
            for name, (_, sig) in files.items():
                self._verdicts[name] = (sig, error)
            return
        if code == 0:
            for name, (_, sig) in files.items():
                self._verdicts[name] = (sig, None)
            return
        lines = out.splitlines()
        named = {}
        for name, (path, _) in files.items():
            mentions = _path_pattern(name, str(path.resolve()))  # whole paths only, see _path_pattern
            mine = [ln for ln in lines if mentions.search(ln)]
            if mine:
                named[name] = mine
        for name, (path, sig) in files.items():
            if not named:  # nothing attributable: lint each file alone
                one = [*self.argv[:at], "{path}", *self.argv[at + 1 :]]
                self._verdicts[name] = (sig, run_linter(one, name, self.cwd, self.timeout))
                self.runs += 1
            elif name in named:
                detail = "\n".join(named[name])
                self._verdicts[name] = (
                    sig,
                    Failure(
                        f"linter exited {code}: {_shown(args[:at] + [safe_path(name)] + args[at + len(files) :])}",
                        _first_line(detail, name, str(path.resolve())),
                        detail=detail,
                    ),
                )
            else:
                self._verdicts[name] = (sig, None)


# -- Output registered in `PATH` ------------------------------------------------------------


def _build_registered(m: re.Match, ctx: CompileContext):
    raw = m.group("path").strip().strip("`\"'")
    tracking = (ctx.plan.rootdir / raw).resolve()
    root = ctx.plan.rootdir
    if Path(raw).is_absolute() or (tracking != root and root not in tracking.parents):
        raise ctx.error(f"tracking file {raw!r} lies outside the rootdir {root}; name a path inside it")
    if tracking == ctx.plan.path.resolve():
        raise ctx.error("the tracking file cannot be the plan itself")
    if tracking == ctx.plan.format_reference:
        # every registration would add a link to it, and every later prompt would change
        raise ctx.error(
            f"the tracking file {raw!r} is the format reference (line {ctx.plan.format_reference_line}); "
            "name another file, e.g. an INDEX.md in the output directory"
        )
    if tracking.suffix.lower() not in (".md", ".markdown"):
        raise ctx.error(f"tracking file {raw!r} must be a Markdown file (.md): the plugin appends links to it")

    order = tuple(ctx.plan.output_path(row).resolve() for row in ctx.plan.rows)
    taken = _taken_by(tracking, ctx.plan, dict(zip(order, ctx.plan.rows, strict=True)), own=True)
    if taken is not None:
        raise ctx.error(_taken_message(raw, taken))
    #: set once its lock could not be had: another process holds it, and every later row of
    #: this run would wait the whole lock timeout again (a minute each)
    held_elsewhere: list[str] = []

    def check(c: CheckContext):
        """The tracking file lists the outputs that pass, under the row's current title.

        A passing output is registered (in plan order) or its entry retitled; an output that
        fails its other checks while listed fails this check too, saying so: the entry is the
        team's published index, so it is not removed behind their back, nor left silently."""
        output = c.path.resolve()
        rel = c.plan.rel(output)
        title = c.row.title or c.row.filename

        def write(edit: Callable[[], Any]) -> Failure | None:
            """An edit of the tracking file, under its lock, unless another process held that
            lock past the timeout already in this run (every row would wait a minute again)."""
            if held_elsewhere:
                return Failure(held_elsewhere[0])
            edit()
            return None

        try:
            listed = is_registered(tracking, output)
            others = False if c.doc.error else c.others_pass()
            if others is None:  # nothing fails, but a judge rule has no verdict on this output
                if listed:  # the entry stands: a missing verdict only skips (the judge's item says so)
                    return None if c.readonly else write(lambda: retitle(tracking, output, title))
                raise CheckSkipped(f"not registered in {raw}: a judge rule has no verdict on this output yet")
            if others:
                if not c.readonly:
                    if listed:
                        return write(lambda: retitle(tracking, output, title))
                    return write(lambda: register(tracking, output, title, order))
                return None if listed else Failure(f"{raw} has no Markdown link to {rel}")
            if listed:
                return Failure(f"{raw} lists {rel}, which fails its other checks: fix the output, or remove its entry")
            # an unreadable output (doc.error) and a read-only run included: a link is not the fix
            return Failure(f"not registered in {raw}: the output is registered once its other checks pass")
        except TrackingError as exc:  # named as the checklist names it, so its file:line opens in an editor
            return Failure(f"tracking file: {str(exc).replace(str(tracking), raw)}")
        except lock_timeout() as exc:  # not a permission: another process holds the lock
            held_elsewhere.append(
                f"tracking file {raw} not updated: another process holds its lock ({c.plan.rel(Path(exc.lock_file))}: "
                "a run still going, or stopped?); run again once it ends"
            )
            return Failure(held_elsewhere[0])
        except OSError as exc:  # its lock file or temporary beside it: a read-only folder, a full disk
            failed = failed_file(exc)
            shown = f": {c.plan.rel(failed)}" if failed is not None else ""
            folder = c.plan.rel(tracking.parent)
            return Failure(
                f"tracking file {raw} cannot be written: {exc.strerror or exc}{shown}; make {folder}/ and "
                f"{raw} writable (the plugin writes a lock file and a temporary beside it), then run again"
            )

    check.tracking_file = (tracking, raw)  # type: ignore[attr-defined]  # see check_tracking_files
    return check


def _taken_by(tracking: Path, plan: Plan, outputs: Mapping[Path, Row], own: bool) -> str | None:
    """What ``tracking`` (resolved) already is to ``plan``, if the plugin writes or reads it as
    something else: a row's output (checked, then changed by the links appended to it), a file
    of the drafts or cassette folder, and, for another plan of the run (``own`` False), the plan
    or its format reference (the builder names those of its own plan itself)."""
    where = "" if own else f" of {plan.rel(plan.path)}"
    if not own and tracking == plan.path:
        return f"the plan {plan.rel(plan.path)}, another plan of this run"
    if not own and tracking == plan.format_reference:
        return f"the format reference of {plan.rel(plan.path)} (line {plan.format_reference_line})"
    row = outputs.get(tracking)
    if row is not None:
        return f"the output of row {row.filename!r}{where} (line {row.line})"
    for folder, what in ((plan.drafts_dir, "drafts"), (plan.cassette_dir, "cassette")):
        folder = folder.resolve()
        if folder in tracking.parents:
            return f"a file in {plan.rel(folder)}/, the {what} folder{where}"
    return None


def _taken_message(raw: str, taken: str) -> str:
    return (
        f"the tracking file {raw!r} is {taken}: the plugin appends a link to it for every passing "
        "output; name another file, e.g. an INDEX.md in the output directory"
    )


def tracking_files(rules: Sequence[Rule]) -> list[Path]:
    """The tracking files the ``Output registered in`` rules of one plan name: files of the plan,
    which ``--batch-report`` and ``--batch-summary`` may not replace."""
    return [rule.check.tracking_file[0] for rule in rules if hasattr(rule.check, "tracking_file")]


def check_tracking_files(plans: Sequence[tuple[Plan, Sequence[Rule]]]) -> None:
    """Across the plans of one run: a tracking file that is another plan, its format reference,
    a row's output or a file of its drafts or cassette folder. Each plan's builder refuses
    these of its own plan; here the others (links were appended to the other plan, under its
    last table). A :class:`ChecklistError` at the checklist line naming the tracking file."""
    if len(plans) < 2:
        return
    named = [
        (plan, rule, rule.check.tracking_file)
        for plan, rules in plans
        for rule in rules
        if hasattr(rule.check, "tracking_file")
    ]
    if not named:
        return
    outputs = {plan.path: {plan.output_path(row).resolve(): row for row in plan.rows} for plan, _ in plans}
    for plan, rule, (tracking, raw) in named:
        for other, _ in plans:
            if other is plan:
                continue
            taken = _taken_by(tracking, other, outputs[other.path], own=False)
            if taken is not None:
                raise ChecklistError(_taken_message(raw, taken), plan.path, rule.line)


BUILTIN_FORMS: tuple[ChecklistForm, ...] = (
    ChecklistForm(
        name="front-matter",
        pattern=_FRONT_MATTER,
        build=_build_front_matter,
        example="Front matter includes term, category, and at least 2 tags",
        quick=True,
    ),
    ChecklistForm(
        name="{key}-value",
        pattern=(
            r"`?(?P<key>[\w\-]+)`? (?:is|must be) one of the "
            r"(?:(?P<count>(?!allowed\b)\w+) )?(?:allowed )?values listed in content rules"
        ),
        build=_build_one_of_listed,
        example="category is one of the four values listed in Content Rules",
        quick=True,
    ),
    ChecklistForm(
        name="{key}-value",
        pattern=r"`?(?P<key>[\w\-]+)`? (?:is|must be) one of\s*:\s*(?P<values>.+)",
        build=_build_one_of_inline,
        example="status is one of: draft, review, published",
        quick=True,
    ),
    ChecklistForm(
        name="sections",
        pattern=r"(?P<sections>.+?) sections? (?:are )?present(?P<order>,? in (?:that|this|the same) order)?",
        build=_build_sections,
        example="Definition, Details, and Related Terms sections present, in that order",
        quick=True,
    ),
    ChecklistForm(
        name="lint",
        pattern=r"linter passes\s*:\s*(?P<cmd>.+)",
        build=_build_linter,
        example="Linter passes: `pymarkdown --config .pymarkdown.json scan {path}`",
    ),
    ChecklistForm(
        name="registered",
        pattern=r"output (?:is )?registered in\s+(?P<path>.+)",
        build=_build_registered,
        example="Output registered in `output/INDEX.md`",
        runs_last=True,
    ),
)


@pytest.hookimpl(trylast=True)
def pytest_batchgen_checklist_forms():
    """The built-ins, offered through the same hook users implement (last, so users' forms win).

    The judge form (pytest_batchgen/judge.py) comes first: "Judge: ... sections present" is a
    judge line, not a sections line."""
    return [JUDGE_FORM, *BUILTIN_FORMS]


def is_builtin(form: ChecklistForm) -> bool:
    """Whether ``form`` is one of the plugin's own (their checks print and log nothing, and a
    linter's output goes to a pipe): their items may skip pytest's per-phase hooks
    (:mod:`~pytest_batchgen.protocol`)."""
    return form is JUDGE_FORM or any(form is builtin for builtin in BUILTIN_FORMS)
