"""pytest-batchgen: test-driven batch generation of content with Claude.

The core (plan model, editor, checklist, documents, dispatch) works without pytest;
:mod:`pytest_batchgen.plugin` is the pytest glue.
"""

__version__ = "0.1.0"

from .checklist import CheckContext, ChecklistForm, CompileContext, Failure  # noqa: E402

__all__ = ["CheckContext", "ChecklistForm", "CompileContext", "Failure", "__version__"]
