"""An output file, read and parsed once, shared by all of its rules.

Front matter is split and loaded with python-frontmatter's YAML handler; the body is parsed
with markdown-it-py, whose token maps give each heading's line in the file. A heading's text is
what it renders as (``## **Pros \\& Cons**`` is "Pros & Cons"): the body is parsed without the
inline pass, so only headings that hold inline markup are rendered, each on its own.

Nothing here raises on bad content: a file that cannot be read or parsed yields a document whose
``error`` (or ``front_matter_error``) says why, and the rules turn that into a failure.

Parsing is bounded before it starts: YAML and Markdown parsing cost far more per byte than
reading, so an output with more front matter, lines or headings than any batch file needs
(:data:`MAX_FRONT_MATTER_BYTES`, :data:`MAX_LINES`, :data:`MAX_HEADINGS`) fails at once with a
message naming the limit, instead of taking seconds to minutes and hundreds of megabytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from frontmatter.default_handlers import YAMLHandler
from markdown_it.token import Token

from .defaults import DEFAULT_MAX_BYTES
from .fsutil import Signature, signature
from .mdparse import (
    DEEP_MAX_NESTING,
    HEADING_MAX_NESTING,
    block_parser,
    deep_heading_parser,
    heading_parser,
    inline_parser,
    nesting_limit_reached,
)

#: YAML parsing of a 4.8 MB front matter list took 37 s and 867 MB; a batch file's front matter
#: is a few keys, so 64 KiB is generous and parses in a fraction of a second
MAX_FRONT_MATTER_BYTES = 64 * 1024
#: the Markdown parse costs up to ~60 us per line (tight lists, tables, nested quotes): 20,000 lines
#: parse in about a second on a busy 2-core machine, and are far more than a 64k-token reply holds
MAX_LINES = 20_000
#: 150,000 headings took 12 s to parse; no batch file has 10,000 sections
MAX_HEADINGS = 10_000
# a line that may be an ATX heading or a setext underline: counted before parsing (an upper bound,
# since lines inside code fences count too)
_HEADING_LINE = re.compile(r"^ {0,3}(?:#{1,6}(?:[ \t]|$)|=+[ \t]*$)", re.MULTILINE)
# greedy up to the first colon (linear; a lazy group before ``\s*:`` is quadratic on long blank runs)
_KEY_RE = re.compile(r"^([^\s:#\-][^:]*):(?:\s|$)")
# a front matter boundary: a line of three or more dashes (python-frontmatter's own pattern ends
# in ``\s*$``, which also swallows the blank lines after the boundary and shifts every line number)
_FM_BOUNDARY = re.compile(r"^-{3,}[ \t]*$", re.MULTILINE)
# a character that may start inline markup (escape, entity, emphasis, code span, link or image,
# autolink or HTML) or a line break: a heading without one renders as its source
_INLINE_MARKUP = re.compile(r"[\\&*_`\[<\n]")
#: the inline pass costs up to ~50 us per character of pathological heading text (``![![![...``):
#: heading source beyond this many characters per document keeps its source as its text. A
#: document's headings are a few hundred characters; 16 KiB renders in well under a second
MAX_RENDERED_HEADING_CHARS = 16 * 1024
#: libyaml's loader dies with SIGSEGV (the whole pytest run, no message) on front matter nested
#: some 25,000 levels deep, which fits in 64 KiB (``k: [[[[...``, ``- - - - ...``); no batch
#: file's front matter nests more than a few levels
MAX_FRONT_MATTER_DEPTH = 200


@dataclass(frozen=True)
class Heading:
    """A heading of the output. ``text`` is its rendered plain text, what a reader sees and what
    section names are compared with: escapes and entities resolved, emphasis, link and code
    markup dropped (a link's text, a code span's and an image's alt text kept), surrounding
    whitespace stripped. ``source`` is the Markdown as written when it differs from ``text``
    (``**Definition**``), else None, so a failure can show both.

    ``container`` is the outermost block the heading sits in, ``"blockquote"`` or ``"list item"``
    (``> ## Definition``, ``- ## Definition``, a heading in a list item's body), or None for a
    heading of the document itself: a renderer shows a nested heading inside its quote or list,
    so it heads no section of the document (see :attr:`OutputDocument.sections`)."""

    level: int
    text: str
    line: int
    source: str | None = None
    container: str | None = None


@dataclass(frozen=True)
class OutputDocument:
    """What the rules need to know about one output file.

    ``error`` is set when the file could not be read as text at all (missing, binary, too
    large); ``front_matter_error`` when it has front matter that is not a YAML mapping, or one
    that writes a key twice in a mapping (``metadata`` is then still what YAML loads, the last
    value winning: a custom check may read it, the front matter rules fail on the error).
    """

    path: Path
    error: str | None = None
    has_front_matter: bool = False
    front_matter_error: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    key_lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    headings: tuple[Heading, ...] = ()
    front_matter_end: int = 0  # line of the closing ``---``, 0 without front matter
    #: the file line a ``front_matter_error`` is about (the YAML error's line), 1 if none is known
    front_matter_error_line: int = 1

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key)

    @property
    def sections(self) -> tuple[Heading, ...]:
        """The headings of the document itself, those that head its sections: every heading but
        those nested in a blockquote or a list item, which a renderer shows inside it."""
        return tuple(h for h in self.headings if h.container is None)


_YAML = YAMLHandler()
# python-frontmatter's own loader: libyaml's where PyYAML has it
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _KeysAsWritten(_BaseLoader):
    """The safe loader, with the front matter's own keys kept as the strings written.

    YAML 1.1 (PyYAML's) reads plain ``on``, ``yes``, ``no``, ``true``, ``null``, ``~`` and ``1``
    as True, False, None and 1, so ``on: push`` gave the key ``'True'``: ``Front matter
    includes on`` reported a key the output has as missing, and ``on:`` and ``yes:`` became one
    key. A plain key of the top-level mapping is read as a string, as written (what the checklist
    names, and what :data:`_KEY_RE` finds for ``key_lines``); values, and the keys of mappings
    inside values, keep YAML's types."""

    _top: Any = None

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: each key written more than once in one mapping: its source text and the marks of its keys
        self.duplicates: list[tuple[str, list[Any]]] = []
        #: how many pairs each mapping node (by id) has of its own, counted before its merge keys
        #: are flattened: a merge (``<<: *b``) flattens the mapping it brings in, which may be
        #: constructed later, its merged keys then standing ahead of its own
        self._own: dict[int, int] = {}

    def construct_document(self, node: Any) -> Any:
        self._top = node
        return super().construct_document(node)

    def flatten_mapping(self, node: Any) -> None:
        self._own.setdefault(id(node), sum(1 for key, _ in node.value if key.tag != _MERGE_TAG))
        super().flatten_mapping(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            # merge keys (``<<: *base``) first: the merged keys are plain too, and come first
            self.flatten_mapping(node)
            own = self._own[id(node)]
            if node is self._top:
                node.value = [
                    (
                        yaml.ScalarNode(_STR_TAG, key.value, key.start_mark, key.end_mark)
                        if isinstance(key, yaml.ScalarNode) and not key.style
                        else key,
                        value,
                    )
                    for key, value in node.value
                ]
            self._note_duplicates(node.value[len(node.value) - own :])
        return super().construct_mapping(node, deep=deep)

    def _note_duplicates(self, pairs: list[tuple[Any, Any]]) -> None:
        """Record the keys written more than once among a mapping's own ``pairs``: PyYAML keeps
        the last value without a word (``category: A`` then ``category: B`` reads as B), so the
        output says one thing to a reader and another to the checks. A key a merge (``<<``)
        brought in is not among them: overriding it is what a merge is for. Keys compare as
        loaded (``a`` and ``'a'`` are one key; at the top, ``on`` and ``true`` are as written)."""
        seen: dict[Any, list[Any]] = {}
        for key_node, _ in pairs:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key: rare, and unhashable to YAML anyway
            key = self.construct_object(key_node)
            try:
                seen.setdefault(key, []).append(key_node)
            except TypeError:
                continue
        for nodes in seen.values():
            if len(nodes) > 1:
                self.duplicates.append((nodes[0].value, [n.start_mark for n in nodes]))


def _too_big(body: str) -> str | None:
    """Why the Markdown ``body`` is too large to parse, or None; linear and cheap (C-level counting)."""
    body = body.replace("\r", "\n")  # markdown-it ends a line at a lone "\r" too
    headings = sum(1 for _ in _HEADING_LINE.finditer(body))
    if headings > MAX_HEADINGS:
        return (
            f"the output has {headings:,} heading lines, above the {MAX_HEADINGS:,}-heading limit for parsing; "
            "split it into smaller files"
        )
    lines = body.count("\n") + (not body.endswith("\n"))
    if lines > MAX_LINES:
        return (
            f"the output has {lines:,} lines, above the {MAX_LINES:,}-line limit for parsing; "
            "split it into smaller files"
        )
    return None


#: an output nested as deep as the default parser reads is parsed again nesting deeper when it
#: is at most this long (a real document so nested is short; 4 MB of ``- - -`` took 22 s so)
MAX_DEEP_REPARSE = 256 * 1024
_TOO_DEEP = (
    "the output's blocks (lists or quotes inside one another) are nested deeper than the Markdown "
    "parser reads, so the rest of it could not be read; nest less deep"
)


def parse_text(path: Path, text: str) -> OutputDocument:
    """Parse decoded text; never raises."""
    if not text.strip():
        return OutputDocument(path=path, error="the output is empty")
    if "\r" in text:  # markdown-it breaks lines at a lone \r too: one line model for all that follows
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    metadata: Mapping[str, Any] = MappingProxyType({})
    key_lines: dict[str, int] = {}
    fm_error = None
    fm_error_line = 1
    has_fm = False
    body = text
    body_line = 1  # the file line (1-based) of the body's first line
    front_matter_end = 0
    parts = _FM_BOUNDARY.split(text, 2) if _FM_BOUNDARY.match(text) else []
    if len(parts) == 2:
        # it starts like front matter but never ends: say so, rather than "no front matter"; the
        # whole file is the body, as a Markdown renderer would see it
        has_fm = True
        opening = text.split("\n", 1)[0].rstrip()
        fm_error = (
            f"the front matter opened by {opening!r} on line 1 is never closed: add a '---' line after its last key"
        )
    elif len(parts) == 3:
        _, fm, body = parts
        has_fm = True
        body_line = front_matter_end = 1 + fm.count("\n")
        metadata, fm_error, fm_error_line = _load_front_matter(fm, key_lines)
    too_big = _too_big(body)
    if too_big:
        return OutputDocument(path=path, error=too_big)
    headings: list[Heading] = []
    try:
        env: dict[str, Any] = {}  # the link reference definitions, for links in headings
        tokens = heading_parser().parse(body, env)
        if nesting_limit_reached(tokens, HEADING_MAX_NESTING):
            # it may have skipped the rest, and its headings: a list ten items deep hid them
            if len(body) > MAX_DEEP_REPARSE:
                return OutputDocument(path=path, error=_TOO_DEEP)
            env = {}
            tokens = deep_heading_parser().parse(body, env)
            if nesting_limit_reached(tokens, DEEP_MAX_NESTING):
                return OutputDocument(path=path, error=_TOO_DEEP)
        budget = MAX_RENDERED_HEADING_CHARS
        table_budget = _MAX_TABLE_CHECK  # for the whole document: each check parses its span
        body_lines: list[str] | None = None
        containers: list[str] = []  # the blocks the current token sits in, outermost first
        for i, tok in enumerate(tokens):
            if tok.type in _CONTAINERS:
                containers.append(_CONTAINERS[tok.type])
            elif tok.type in _CONTAINER_ENDS and containers:
                containers.pop()
            elif tok.type == "heading_open" and i + 1 < len(tokens):
                content = tokens[i + 1].content
                if tok.markup in ("-", "=") and "|" in content and tok.map:
                    # a setext heading that may be a table with a ---/=== line under it
                    body_lines = body.split("\n") if body_lines is None else body_lines
                    span = "\n".join(body_lines[tok.map[0] : tok.map[1]])
                    table_budget -= len(span)
                    if table_budget < 0 or _is_table(span):  # past the budget: taken for a table
                        continue
                line = body_line + (tok.map[0] if tok.map else 0)
                source = content.strip()
                text = source
                if len(source) <= budget and _INLINE_MARKUP.search(source):
                    budget -= len(source)
                    text = _rendered(source, env)
                headings.append(
                    Heading(
                        int(tok.tag[1:]),
                        text,
                        line,
                        None if text == source else source,
                        containers[0] if containers else None,
                    )
                )
    except Exception as exc:  # markdown-it is total on str input; guard anyway, never crash a run
        return OutputDocument(path=path, error=f"the Markdown could not be parsed: {exc}")
    return OutputDocument(
        path=path,
        has_front_matter=has_fm,
        front_matter_error=fm_error,
        front_matter_error_line=fm_error_line,
        metadata=metadata,
        key_lines=MappingProxyType(key_lines),
        headings=tuple(headings),
        front_matter_end=front_matter_end,
    )


#: the blocks a heading may sit in, by their opening token (CommonMark has no other container
#: blocks; a table or an HTML block holds no heading), and their closing tokens
_CONTAINERS = {"blockquote_open": "blockquote", "list_item_open": "list item"}
_CONTAINER_ENDS = frozenset({"blockquote_close", "list_item_close"})

#: setext headings holding a ``|`` are checked for being a table, up to this many characters of
#: their lines per document; past that, they are taken for tables without parsing them as one
#: (the table rule is what takes seconds on wide rows; no document has 16 KiB of such headings)
_MAX_TABLE_CHECK = 16 * 1024


def _is_table(span: str) -> bool:
    """Whether the lines of a setext heading (text lines, then a ``---``/``===`` line) hold a GFM
    table, which would end the paragraph, so the heading is not one (see
    :func:`~pytest_batchgen.mdparse.heading_parser`). Such a heading holds a ``|``: a table's
    header row must."""
    return any(t.type == "table_open" for t in block_parser().parse(span))


def _rendered(source: str, env: dict[str, Any]) -> str:
    """The plain text ``source`` (a heading's inline content) renders as.

    The inline pass runs on this one heading (the body's parse skips it, see
    :func:`~pytest_batchgen.mdparse.heading_parser`), with the body's ``env`` so that a
    reference link (``## [Definition][def]``) resolves as it does in the rendered file."""
    inline = inline_parser().parseInline(source, env)
    return "".join(_plain(inline[0].children or [] if inline else [])).strip()


def _plain(tokens: list[Token]) -> list[str]:
    """The text of inline ``tokens``: text and code spans as shown, an image by its alt text,
    a line break as a newline; tags and markup (emphasis, link, raw HTML) contribute nothing."""
    parts: list[str] = []
    for t in tokens:
        if t.type in ("text", "code_inline", "text_special"):
            parts.append(t.content)
        elif t.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif t.type == "image":
            parts.extend(_plain(t.children or []))
    return parts


_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def _load_front_matter(fm: str, key_lines: dict[str, int]) -> tuple[Mapping[str, Any], str | None, int]:
    """The front matter's mapping, what is wrong with it (or None) and the file line that is
    about (the YAML error's own line, so the failure's location agrees with its message); fills
    ``key_lines`` (key -> file line).

    A key written twice (in any mapping) is an error, as invalid YAML is: every front matter
    rule fails on it, whichever key it reads. The mapping is still the one YAML loads (the last
    value wins), for a custom check that reads it. A key written twice points at its last line:
    that is the line whose value YAML keeps."""
    for i, line in enumerate(fm.split("\n")):  # linear, so done whatever the size
        m = _KEY_RE.match(line)
        if m and i > 0:
            key_lines[m.group(1).strip().strip("'\"")] = 1 + i
    size = len(fm.encode("utf-8"))
    if size > MAX_FRONT_MATTER_BYTES:
        return (
            _NO_METADATA,
            f"the front matter is {size:,} bytes, above the {MAX_FRONT_MATTER_BYTES:,}-byte limit for parsing; "
            "keep long content in the body",
            1,
        )
    depth = _nesting_depth(fm)
    if depth > MAX_FRONT_MATTER_DEPTH:
        return (
            _NO_METADATA,
            f"the front matter nests more than {MAX_FRONT_MATTER_DEPTH} levels deep, the limit for parsing; "
            "keep nested content in the body",
            1,
        )
    loaders: list[_KeysAsWritten] = []  # the one the handler makes, for the duplicates it found

    def loader(stream: str) -> _KeysAsWritten:
        loaders.append(_KeysAsWritten(stream))
        return loaders[-1]

    try:
        loaded = _YAML.load(fm, Loader=loader)
    except Exception as exc:  # yaml raises many error types; all mean "invalid YAML"
        mark = getattr(exc, "problem_mark", None)
        at: int = _file_lines(fm)(mark.line) if mark is not None else 1
        where = f" at line {at}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = _break_hint(fm, at) if mark is not None else ""
        return _NO_METADATA, f"front matter is not valid YAML{where}: {problem}{hint}", at
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        return _NO_METADATA, f"front matter is a YAML {type(loaded).__name__}, not a mapping of keys to values", 1
    metadata = MappingProxyType({str(k): v for k, v in loaded.items()})
    duplicates = loaders[0].duplicates
    if duplicates:
        # the key repeated first in the file (YAML's lines run in the file's order)
        key, marks = min(duplicates, key=lambda d: (d[1][1].line, d[1][1].column))
        file_line = _file_lines(fm)
        error, at = _duplicate_key_error(key, [file_line(m.line) for m in marks], len(duplicates) - 1)
        return metadata, error, at
    return metadata, None, 1


#: what YAML counts as a line break, and of those what the file's lines do not (U+0085 NEL,
#: U+2028 LS, U+2029 PS: an editor shows them inside a line, and so do our line numbers, which
#: count "\n" only; a "\r" is a "\n" by the time YAML reads the text)
_YAML_BREAK = re.compile("[\n\x85\u2028\u2029]")
_YAML_ONLY_BREAKS = {
    "\x85": "U+0085 (next line)",
    "\u2028": "U+2028 (line separator)",
    "\u2029": "U+2029 (paragraph separator)",
}
_YAML_ONLY_BREAK = re.compile("[\x85\u2028\u2029]")


def _file_lines(fm: str) -> Callable[[int], int]:
    """The file line of each of YAML's (0-based) lines of the front matter ``fm``, whose line 0
    is the rest of the opening ``---`` line, the file's line 1.

    YAML ends a line at U+0085, U+2028 and U+2029 too, so past one of them its line numbers ran
    ahead of the file's: an error was reported lines below the one an editor shows. The map is
    made in one linear pass, and only for front matter holding such a character."""
    if not _YAML_ONLY_BREAK.search(fm):
        return lambda yaml_line: yaml_line + 1
    starts = [1]  # the file line each YAML line starts on
    for brk in _YAML_BREAK.finditer(fm):
        starts.append(starts[-1] + (brk.group() == "\n"))
    return lambda yaml_line: starts[min(yaml_line, len(starts) - 1)]


def _break_hint(fm: str, line: int) -> str:
    """A note on a U+0085, U+2028 or U+2029 on the file ``line`` of a YAML error or the line
    before it: YAML broke the line there, so its error is about a line break the user cannot
    see (``term: a<NEL>b`` is ``term: a`` and a line ``b`` to YAML). Or on a key whose colon a
    no-break space follows (``category:<NBSP>A``, from a word processor or a web page): an
    editor shows a key, YAML reads one plain word, and its error is about the next line."""
    lines = fm.split("\n")  # fm line i is file line i + 1
    for at in (line - 1, line):
        text = lines[at - 1] if 1 <= at <= len(lines) else ""
        found = _YAML_ONLY_BREAK.search(text)
        if found:
            return (
                f" (line {at} holds a {_YAML_ONLY_BREAKS[found.group()]} character, which YAML reads as a "
                "line break: remove it)"
            )
        key = _KEY_THEN_OTHER_SPACE.match(text)
        if key:
            space = key.group(2)
            return (
                f" (line {at} has a U+{ord(space):04X} ({_OTHER_SPACES[space]}) after {key.group(1)!r}, "
                "where YAML needs an ordinary space: replace it)"
            )
    return ""


#: spaces that look like one in an editor but are no separator to YAML
_OTHER_SPACES = {
    "\u00a0": "no-break space",
    "\u2007": "figure space",
    "\u202f": "narrow no-break space",
    "\u3000": "ideographic space",
}
#: a line that starts as a key (``name:``) followed by one of them
_KEY_THEN_OTHER_SPACE = re.compile(r"\s*(?:- )?([^\s:#'\"][^:]*:)([\u00a0\u2007\u202f\u3000])")


def _duplicate_key_error(key: str, lines: list[int], more: int) -> tuple[str, int]:
    """The message for a ``key`` written on each of the file ``lines`` of one mapping, ``more``
    other keys being written twice too, and the line of its last occurrence (the value YAML
    kept). Bounded: a key may be written thousands of times, and the message goes into the
    plan's notes and repair prompts."""
    shown = repr(key) if len(key) <= 60 else repr(key[:57] + "...")
    two = len(lines) == 2
    times = "twice" if two else f"{len(lines):,} times"
    if len(set(lines)) == 1:
        where, lost = f"on line {lines[0]}", "the earlier value" + ("" if two else "s")
    else:
        where = f"(lines {_and(lines)})"
        lost = f"the value on line {lines[0]}" if two else f"the values on lines {_and(lines[:-1])}"
    others = ""
    if more:
        keys = "1 more key appears" if more == 1 else f"{more:,} more keys appear"
        others = f" ({keys} twice or more)"
    return (
        f"front matter key {shown} appears {times} {where}; YAML keeps the last, so {lost} "
        f"{'is' if two else 'are'} lost: keep one{others}",
        lines[-1],
    )


def _and(numbers: list[int], most: int = 5) -> str:
    """``[2, 3, 4]`` -> ``"2, 3 and 4"``; past ``most`` numbers, the first few, an ellipsis and the last."""
    if len(numbers) == 1:
        return str(numbers[0])
    head = numbers[:-1] if len(numbers) <= most else [*numbers[: most - 1], "…"]
    return ", ".join(map(str, head)) + " and " + str(numbers[-1])


def _nesting_depth(fm: str) -> int:
    """An upper bound of how deep the front matter nests, in one linear pass, whatever quotes
    say (a stray quote must not hide what follows from it, since libyaml would not be fooled):
    the open flow brackets, plus on each line its block indicators (``-``, ``?`` or ``:`` before
    a space, a tab or the line's end) and its indentation. Over-counting only refuses odd text,
    the safe side. Checked before YAML loading: see :data:`MAX_FRONT_MATTER_DEPTH`."""
    deepest = flow = 0
    for line in fm.split("\n"):
        opened = line.count("[") + line.count("{")
        closed = line.count("]") + line.count("}")
        indicators = len(_BLOCK_INDICATOR.findall(line))
        indent = len(line) - len(line.lstrip(" "))
        deepest = max(deepest, flow + opened + indicators + indent // 2)
        flow = max(0, flow + opened - closed)
    return deepest


# a block indicator: a sequence entry, a complex key or a value, before a blank or the line's end
_BLOCK_INDICATOR = re.compile(r"[-?:](?=[ \t]|$)")


def parse_bytes(path: Path, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> OutputDocument:
    """Decode and parse; binary, oversized or non-UTF-8 content gives an ``error``."""
    if len(data) > max_bytes:
        return OutputDocument(path=path, error=f"the output is {len(data):,} bytes, above the {max_bytes:,}-byte limit")
    if b"\x00" in data:
        return OutputDocument(path=path, error="the output is binary (it contains NUL bytes), not Markdown text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return OutputDocument(path=path, error=f"the output is not UTF-8 text ({exc.reason} at byte {exc.start})")
    if text.startswith("\ufeff"):
        text = text[1:]
    return parse_text(path, text.replace("\r\n", "\n"))


def load_document(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> OutputDocument:
    """Read ``path`` and parse it; a missing or unreadable file gives an ``error``."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return OutputDocument(path=path, error=f"the output is {size:,} bytes, above the {max_bytes:,}-byte limit")
        data = path.read_bytes()
    except FileNotFoundError:
        return OutputDocument(path=path, error="the output file does not exist")
    except IsADirectoryError:
        return OutputDocument(path=path, error="the output path is a folder, not a file")
    except OSError as exc:
        return OutputDocument(path=path, error=f"the output cannot be read: {exc.strerror or exc}")
    return parse_bytes(path, data, max_bytes)


class DocumentCache:
    """Parsed documents by path, re-read only when the file's signature (size, mtime, inode) changes."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._docs: dict[Path, tuple[Signature | None, OutputDocument]] = {}
        self.parses = 0

    def forget(self, path: Path) -> None:
        """Drop a cached parse (the file was just rewritten; mtime may not have moved)."""
        self._docs.pop(path, None)

    def get(self, path: Path) -> OutputDocument:
        sig = signature(path)
        hit = self._docs.get(path)
        if hit is not None and hit[0] == sig and sig is not None:
            return hit[1]
        doc = load_document(path, self.max_bytes)
        self.parses += 1
        self._docs[path] = (sig, doc)
        return doc


@dataclass(frozen=True)
class BatchOutput:
    """What the ``batch_output`` fixture gives a custom check: the row, its file and its parse."""

    row: Any
    path: Path
    document: OutputDocument

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.document.metadata
