"""The least a replay does, as pytest items: shared by the benchmarks that compare a replay
with validate-only (``bench_replay_count.py`` counts it, ``bench_whole_run.py`` times it).

A replay of a plan runs an item per row more than validate-only of the same outputs (the
``generate`` item), reads each row's cassette and writes its output. :data:`FLOOR_CONFTEST`,
written beside a recorded plan with an empty ``floor.txt``, adds one item per recorded cassette
to a validate-only run, selected by ``BATCHGEN_FLOOR``:

- ``item``: a trivial item (pytest's own cost of one item more), run as the checkout runs its
  own items (through ``pytest_batchgen.protocol`` where the checkout has it);
- ``read-write``: the item reads the row's cassette with PyYAML's C loader and writes its reply
  to a file in ``floor-out/``, the least a replay must do.

No replay can run fewer items than ``item`` does; one that did no other work than reading and
writing would cost what ``read-write`` costs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: the floor's items, collected from ``floor.txt`` beside the plan: one per recorded cassette
FLOOR_CONFTEST = '''\
import json, os
from pathlib import Path

import pytest
import yaml


class RowFloor(pytest.Item):
    """One row's least replay: read its cassette, write its reply (or nothing: trivial)."""

    def __init__(self, *, cassette, out, **kwargs):
        super().__init__(**kwargs)
        self.cassette, self.out = cassette, out

    def runtest(self):
        if self.out is None:
            return
        data = yaml.load(self.cassette.read_bytes(), Loader=yaml.CSafeLoader)
        reply = json.loads(data["interactions"][0]["response"]["body"]["string"])
        self.out.write_text(reply["content"][0]["text"], encoding="utf-8")

    def reportinfo(self):
        return self.path, None, self.name


class FloorFile(pytest.File):
    def collect(self):
        trivial = os.environ["BATCHGEN_FLOOR"] == "item"
        scratch = self.path.parent / "floor-out"
        scratch.mkdir(exist_ok=True)
        for cassette in sorted((self.path.parent / "cassettes" / "plan").glob("*.yaml")):
            out = None if trivial else scratch / cassette.stem
            yield RowFloor.from_parent(self, name=cassette.name, cassette=cassette, out=out)


def pytest_collect_file(file_path, parent):
    if file_path.name == "floor.txt" and os.environ.get("BATCHGEN_FLOOR"):
        return FloorFile.from_parent(parent, path=file_path)


try:  # run as the checkout runs its own items, where it has a way of its own (protocol.py)
    from pytest_batchgen.protocol import ItemProtocol
except ImportError:  # a checkout from before it: pytest's protocol, as its items
    ItemProtocol = None

if ItemProtocol is not None:
    # through the plugin's own hook: a pytest_runtest_protocol of this conftest's would make
    # every item of the run fall back to pytest's protocol (a plugin that runs items its own way)
    _lean = ItemProtocol.lean
    ItemProtocol.lean = lambda self, item: isinstance(item, RowFloor) or _lean(self, item)
'''


def add_floor(folder: Path) -> None:
    """Make ``folder`` (a recorded plan's) able to run the floor's items: its conftest and the
    ``floor.txt`` that collects them (nothing is collected unless ``BATCHGEN_FLOOR`` is set)."""
    (folder / "conftest.py").write_text(FLOOR_CONFTEST)
    (folder / "floor.txt").write_text("")


def clear_floor_output(folder: Path) -> None:
    """Delete what a ``read-write`` run wrote: the next one creates each file again, as a replay
    of deleted outputs does."""
    shutil.rmtree(folder / "floor-out", ignore_errors=True)
