"""markdown-it's GFM table rule, with one token per body row instead of fourteen.

A 10,000-row plan is one table of 10,000 rows; markdown-it's rule builds ``tr_open``, then
``td_open``/``inline``/``td_close`` per cell, then ``tr_close``: 140,000 tokens, half of a cold
plan load. Only the cells' texts and each row's line are read (:func:`pytest_batchgen.plan.scan`),
so this rule lets markdown-it's own rule validate the header and delimiter lines and build the
header's tokens, then reads the body lines exactly as that rule does (same terminators, same
cell split, same trimming, same cap on autocompleted cells) into one ``tr_compact`` token per
row: ``map`` is the row's line, ``meta["cells"]`` its cell texts, padded or cut to the header's
column count as markdown-it pads or cuts them, and ``meta["overflow"]`` the cells cut.
"""

from __future__ import annotations

import importlib

from markdown_it import MarkdownIt
from markdown_it.common.utils import mdTrim
from markdown_it.rules_block.state_block import StateBlock

# the module (``markdown_it.rules_block.table`` is also the name of the function it exports)
_gfm = importlib.import_module("markdown_it.rules_block.table")

#: the type of the one token per body row
ROW_TOKEN = "tr_compact"

_MAX_AUTOCOMPLETED = getattr(_gfm, "MAX_AUTOCOMPLETED_CELLS", None)


def _split(line: str) -> list[str]:
    columns = _gfm.escapedSplit(line)
    if columns and columns[0] == "":
        columns.pop(0)
    if columns and columns[-1] == "":
        columns.pop()
    return columns


def compact_table(state: StateBlock, startLine: int, endLine: int, silent: bool) -> bool:
    """The table rule (see the module docstring)."""
    if startLine + 2 > endLine or not _gfm.table(state, startLine, endLine, True):
        return False
    if silent:
        return True
    first = len(state.tokens)
    # markdown-it builds table_open, the header row and table_close (no body line in range)
    if not _gfm.table(state, startLine, startLine + 2, False):  # pragma: no cover - validated above
        return False
    close = state.tokens.pop()  # table_close: the body goes before it
    columns = sum(1 for t in state.tokens[first:] if t.type == "th_open")
    old_parent = state.parentType
    state.parentType = "table"
    terminators = state.md.block.ruler.getRules("blockquote")
    autocompleted = 0
    line = startLine + 2
    state.level += 1
    while line < endLine:
        if state.sCount[line] < state.blkIndent:
            break
        if any(rule(state, line, endLine, True) for rule in terminators):
            break
        text = mdTrim(_gfm.getLine(state, line))
        if not text or state.is_code_block(line):
            break
        cells = _split(text)
        autocompleted += columns - len(cells)
        if _MAX_AUTOCOMPLETED is not None and autocompleted > _MAX_AUTOCOMPLETED:
            break
        token = state.push(ROW_TOKEN, "tr", 0)
        token.map = [line, line + 1]
        token.meta = {
            "cells": tuple((mdTrim(c) if c else "") for c in cells[:columns]) + ("",) * (columns - len(cells)),
            # the cells markdown-it drops past the header's count (GFM ignores them): a '|' inside
            # a cell splits it even in a code span, and the parser must say so (plan._read_phase)
            "overflow": tuple(mdTrim(c) for c in cells[columns:]),
        }
        line += 1
    state.level -= 1
    state.parentType = old_parent
    state.tokens.append(close)
    close.level = state.level
    first_map = state.tokens[first].map
    if first_map is not None:
        first_map[1] = line
    state.line = line
    return True


def use_compact_tables(md: MarkdownIt) -> MarkdownIt:
    """Replace ``md``'s table rule (enabled) by :func:`compact_table`."""
    ruler = md.block.ruler
    alt = next((list(r.alt) for r in ruler.__rules__ if r.name == "table"), ["paragraph", "reference"])
    ruler.at("table", compact_table, {"alt": alt})  # same chains: a table still ends a paragraph
    return md
