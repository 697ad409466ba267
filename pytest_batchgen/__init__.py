"""pytest-batchgen: test-driven batch generation of content with Claude.

The core (plan model, editor, checklist, documents, dispatch) works without pytest;
:mod:`pytest_batchgen.plugin` is the pytest glue.

The public names below are imported on first use (PEP 562): pytest imports this package in
every run of an environment it is installed in, and the checklist brings the plan parser and
the document model with it, which a run without ``--batch-plan`` never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .checklist import CheckContext, ChecklistForm, CompileContext, Failure

__all__ = ["CheckContext", "ChecklistForm", "CompileContext", "Failure", "__version__"]

_FROM_CHECKLIST = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _FROM_CHECKLIST:
        from . import checklist

        return getattr(checklist, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _FROM_CHECKLIST)
