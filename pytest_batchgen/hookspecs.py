"""Hooks that pytest-batchgen adds; implement them in a ``conftest.py`` or a plugin."""

from __future__ import annotations

import pytest


@pytest.hookspec
def pytest_batchgen_checklist_forms():
    """Return a list of :class:`pytest_batchgen.checklist.ChecklistForm` to compile checklist lines.

    Every implementation is called and the lists are concatenated, users' conftest forms first
    and the built-in forms last, so a line is compiled by the first form (in that order) whose
    pattern matches the whole line. Example::

        from pytest_batchgen import ChecklistForm

        def pytest_batchgen_checklist_forms():
            def no_todo(ctx):
                if "TODO" in ctx.path.read_text():
                    return "the output still contains TODO"

            return [ChecklistForm(name="no-todo", pattern=r"no TODO left", check=no_todo)]
    """
