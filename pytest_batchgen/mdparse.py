"""The markdown-it-py parsers, configured once for the whole plugin.

Plans and outputs are read for their block structure only (headings, lists, tables, with
``token.map`` line numbers; outputs without the table rule, see :func:`heading_parser`); the
tracking file also needs inline tokens, for its links. Each parser is built on first use and
shared: building one compiles its rules, parsing with it is thread-safe.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.token import Token


@lru_cache(maxsize=1)
def block_parser() -> MarkdownIt:
    """CommonMark with tables, without the inline pass (whether a setext heading of an output is
    a table; outputs are parsed with :func:`heading_parser`).

    Inline tokens keep their raw text in ``.content``; skipping the inline pass (links,
    emphasis) is a third of the parse time on large plans.
    """
    return MarkdownIt("commonmark").enable("table").disable("inline")


@lru_cache(maxsize=1)
def heading_parser() -> MarkdownIt:
    """CommonMark without tables or the inline pass: an output's headings.

    Outputs are read for their headings only, and the table rule is nearly all the cost of a
    wide table (a 5 MB table of 370,000 columns took 20 to 30 s, against 0.1 s without it). A
    table changes no ATX heading; it only stops a ``---``/``===`` line under it from making the
    table's lines a setext heading, which :func:`pytest_batchgen.document.parse_text` checks.
    Without the inline pass a heading's token holds its source (``**Definition**``); the few
    headings with inline markup are rendered one by one with :func:`inline_parser`.
    """
    return MarkdownIt("commonmark", {"maxNesting": HEADING_MAX_NESTING}).disable("inline")


#: how deep an output's blocks nest for :func:`heading_parser`: CommonMark's preset, stated
HEADING_MAX_NESTING = 20


@lru_cache(maxsize=1)
def deep_heading_parser() -> MarkdownIt:
    """:func:`heading_parser` nesting to :data:`DEEP_MAX_NESTING`: for an output whose blocks
    reach CommonMark's 20 levels (a list ten items deep), past which markdown-it skips the rest
    of the document and its headings with it. Not the default: on pathological input of the
    size limit (4 MB of ``- - - ...``) it is four to eight times slower."""
    return MarkdownIt("commonmark", {"maxNesting": DEEP_MAX_NESTING}).disable("inline")


#: how deep a plan's blocks may nest (lists and quotes inside one another; a list item counts
#: two levels), and an output's when it reaches :data:`HEADING_MAX_NESTING`: CommonMark's preset
#: reads 20 and skips the rest of the document past that, which a list ten items deep reached.
#: Each level is a few frames of Python's stack, well within its limit; deeper is refused
#: (:func:`nesting_limit_reached`)
DEEP_MAX_NESTING = 100


def nesting_limit_reached(tokens: list[Token], max_nesting: int) -> Token | None:
    """The first token as deep as a parser of ``max_nesting`` reads, or None: past that depth
    markdown-it skips the rest of the document, and what is there (a plan's phases, an
    output's headings) is gone without a word. (A block exactly that deep, with nothing
    skipped, is taken for one cut too: no such plan or output is written on purpose.)"""
    return next((t for t in tokens if t.level >= max_nesting - 1), None)


@lru_cache(maxsize=1)
def plan_parser() -> MarkdownIt:
    """:func:`block_parser` whose table rule makes one token per body row (see
    :mod:`pytest_batchgen.fasttable`): a 10,000-row phase table is 140,000 tokens otherwise.
    Nesting to :data:`DEEP_MAX_NESTING`."""
    from .fasttable import use_compact_tables

    md = MarkdownIt("commonmark", {"maxNesting": DEEP_MAX_NESTING}).enable("table").disable("inline")
    return use_compact_tables(md)


@lru_cache(maxsize=1)
def inline_parser() -> MarkdownIt:
    """Full CommonMark, inline pass included (the tracking file's links, an output heading's text)."""
    return MarkdownIt("commonmark")
