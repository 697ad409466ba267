"""The modes and limits that options default to, in a module that imports nothing.

pytest imports every installed plugin in every run, a run without ``--batch-plan`` included,
and asks it for its options. Those need these few values, and the modules they belong to
import the plan parser, the front matter reader and the client; kept here, an unrelated test
run loads the plugin without them (see ``tests/test_plugin_load.py``).
"""

from __future__ import annotations

#: vcrpy's record modes, as ``--batch-record-mode`` takes them
RECORD_MODES = ("none", "once", "new_episodes", "all")

#: ``batchgen_max_tokens``: the ``max_tokens`` of each request
DEFAULT_MAX_TOKENS = 8192

#: ``batchgen_max_output_bytes``: an output larger than this fails without being parsed
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
