"""An output file, read and parsed once, shared by all of its rules.

Front matter is split and loaded with python-frontmatter's YAML handler; the body is parsed
with markdown-it-py, whose token maps give each heading's line in the file. Nothing here
raises on bad content: a file that cannot be read or parsed yields a document whose
``error`` (or ``front_matter_error``) says why, and the rules turn that into a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
# greedy up to the first colon (linear; a lazy group before ``\s*:`` is quadratic on long blank runs)
_KEY_RE = re.compile(r"^([^\s:#\-][^:]*):(?:\s|$)")
# a front matter boundary: a line of three or more dashes (python-frontmatter's own pattern ends
# in ``\s*$``, which also swallows the blank lines after the boundary and shifts every line number)
_FM_BOUNDARY = re.compile(r"^-{3,}[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    line: int


@dataclass(frozen=True)
class OutputDocument:
    """What the rules need to know about one output file.

    ``error`` is set when the file could not be read as text at all (missing, binary, too
    large); ``front_matter_error`` when it has front matter that is not a YAML mapping.
    """

    path: Path
    error: str | None = None
    has_front_matter: bool = False
    front_matter_error: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    key_lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    headings: tuple[Heading, ...] = ()
    front_matter_end: int = 0  # line of the closing ``---``, 0 without front matter

    @property
    def ok(self) -> bool:
        return self.error is None

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key)


@lru_cache(maxsize=1)
def _markdown():
    from markdown_it import MarkdownIt

    # block structure only: inline tokens keep their raw text in .content, and skipping the
    # inline pass (links, emphasis) is a third of the parse time on large plans
    return MarkdownIt("commonmark").enable("table").disable("inline")


@lru_cache(maxsize=1)
def _yaml_handler():
    from frontmatter.default_handlers import YAMLHandler

    return YAMLHandler()


def parse_text(path: Path, text: str) -> OutputDocument:
    """Parse decoded text; never raises."""
    if not text.strip():
        return OutputDocument(path=path, error="the output is empty")
    handler = _yaml_handler()
    metadata: Mapping[str, Any] = MappingProxyType({})
    key_lines: dict[str, int] = {}
    fm_error = None
    has_fm = False
    body = text
    body_offset = 0  # file line of the body's line 0
    if _FM_BOUNDARY.match(text):
        try:
            _, fm, body = _FM_BOUNDARY.split(text, 2)
        except ValueError:
            fm = None
        if fm is not None:
            has_fm = True
            body_offset = 1 + fm.count("\n")
            for i, line in enumerate(fm.split("\n")):
                m = _KEY_RE.match(line)
                if m and i > 0:
                    key_lines.setdefault(m.group(1).strip().strip("'\""), 1 + i)
            try:
                loaded = handler.load(fm)
            except Exception as exc:  # yaml raises many error types; all mean "invalid YAML"
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark is not None else ""  # fm line 0 is the opening --- line
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                fm_error = f"front matter is not valid YAML{where}: {problem}"
            else:
                if loaded is None:
                    loaded = {}
                if isinstance(loaded, dict):
                    metadata = MappingProxyType({str(k): v for k, v in loaded.items()})
                else:
                    fm_error = f"front matter is a YAML {type(loaded).__name__}, not a mapping of keys to values"
    headings: list[Heading] = []
    try:
        tokens = _markdown().parse(body)
    except Exception as exc:  # markdown-it is total on str input; guard anyway, never crash a run
        return OutputDocument(path=path, error=f"the Markdown could not be parsed: {exc}")
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and i + 1 < len(tokens):
            line = body_offset + (tok.map[0] if tok.map else 0) + (0 if has_fm else 1)
            headings.append(Heading(int(tok.tag[1:]), tokens[i + 1].content.strip(), line))
    return OutputDocument(
        path=path,
        has_front_matter=has_fm,
        front_matter_error=fm_error,
        metadata=metadata,
        key_lines=MappingProxyType(key_lines),
        headings=tuple(headings),
        front_matter_end=body_offset if has_fm else 0,
    )


def parse_bytes(path: Path, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> OutputDocument:
    """Decode and parse; binary, oversized or non-UTF-8 content gives an ``error``."""
    if len(data) > max_bytes:
        return OutputDocument(
            path=path, error=f"the output is {len(data):,} bytes, above the {max_bytes:,}-byte limit"
        )
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
            return OutputDocument(
                path=path, error=f"the output is {size:,} bytes, above the {max_bytes:,}-byte limit"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        return OutputDocument(path=path, error="the output file does not exist")
    except IsADirectoryError:
        return OutputDocument(path=path, error="the output path is a folder, not a file")
    except OSError as exc:
        return OutputDocument(path=path, error=f"the output cannot be read: {exc.strerror or exc}")
    return parse_bytes(path, data, max_bytes)


class DocumentCache:
    """Parsed documents by path, re-read only when the file changes (size or mtime)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._docs: dict[Path, tuple[tuple[int, int, int] | None, OutputDocument]] = {}
        self.parses = 0

    def forget(self, path: Path) -> None:
        """Drop a cached parse (the file was just rewritten; mtime may not have moved)."""
        self._docs.pop(path, None)

    def get(self, path: Path) -> OutputDocument:
        try:
            st = path.stat()
            sig: tuple[int, int, int] | None = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            sig = None
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
