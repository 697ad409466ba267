"""The markdown-it-py parsers, configured once for the whole plugin.

Plans and outputs are read for their block structure only (headings, lists, tables, with
``token.map`` line numbers); the tracking file also needs inline tokens, for its links. Each
parser is built on first use and shared: building one compiles its rules, parsing with it is
thread-safe.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt


@lru_cache(maxsize=1)
def block_parser() -> MarkdownIt:
    """CommonMark with tables, without the inline pass (plans and outputs).

    Inline tokens keep their raw text in ``.content``; skipping the inline pass (links,
    emphasis) is a third of the parse time on large plans.
    """
    return MarkdownIt("commonmark").enable("table").disable("inline")


@lru_cache(maxsize=1)
def plan_parser() -> MarkdownIt:
    """:func:`block_parser` whose table rule makes one token per body row (see
    :mod:`pytest_batchgen.fasttable`): a 10,000-row phase table is 140,000 tokens otherwise."""
    from .fasttable import use_compact_tables

    return use_compact_tables(MarkdownIt("commonmark").enable("table").disable("inline"))


@lru_cache(maxsize=1)
def inline_parser() -> MarkdownIt:
    """Full CommonMark, inline pass included (the tracking file's links)."""
    return MarkdownIt("commonmark")
