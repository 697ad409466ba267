"""The suite's bytecode folder (``bytecode_folder.py``): what it links and writes is what
Python and pytest then read, and nothing is written through a link."""

from __future__ import annotations

import importlib.util
import json.decoder
import os
import py_compile
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import bytecode_folder


def _python(code: str, *, prefix: Path, path: Path) -> str:
    """``code`` run by a fresh interpreter that reads and writes bytecode in ``prefix``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(prefix), PYTHONPATH=str(path))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_installed_bytecode_is_linked_where_python_looks_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    source = json.decoder.__file__
    monkeypatch.setattr(sys, "pycache_prefix", None)
    installed = importlib.util.cache_from_source(source)
    if not os.path.exists(installed):
        pytest.skip(f"this interpreter's standard library has no bytecode ({installed})")
    prefix = tmp_path / "pycache"
    bytecode_folder.link_installed(str(prefix), roots=[sysconfig.get_path("stdlib")])
    monkeypatch.setattr(sys, "pycache_prefix", str(prefix))
    looked_up = importlib.util.cache_from_source(source)
    assert os.path.islink(looked_up) and os.path.realpath(looked_up) == os.path.realpath(installed)
    stdlib = Path(os.path.dirname(os.__file__))
    assert not (prefix / stdlib.relative_to(stdlib.anchor) / "test").exists()


def test_a_stale_link_is_replaced_and_the_installed_file_left_alone(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    tag = sys.implementation.cache_tag
    for name in ("kept", "edited"):
        (site / f"{name}.py").write_text(f"VALUE = '{name} as installed'\n")
        py_compile.compile(str(site / f"{name}.py"), str(site / "__pycache__" / f"{name}.{tag}.pyc"), doraise=True)
    # python -O's bytecode, which a run without -O never reads
    py_compile.compile(str(site / "kept.py"), str(site / "__pycache__" / f"kept.{tag}.opt-1.pyc"), optimize=1)
    installed = {p.name: p.read_bytes() for p in (site / "__pycache__").iterdir()}
    prefix = tmp_path / "pycache"
    bytecode_folder.link_installed(str(prefix), roots=[str(site)])
    mirror = prefix / site.relative_to(site.anchor)
    assert sorted(p.name for p in mirror.iterdir()) == [f"edited.{tag}.pyc", f"kept.{tag}.pyc"]
    assert all(p.is_symlink() for p in mirror.iterdir())
    (site / "edited.py").write_text("VALUE = 'edited since, and longer than it was'\n")

    out = _python("import kept, edited; print(kept.VALUE, '|', edited.VALUE)", prefix=prefix, path=site)

    assert out == "kept as installed | edited since, and longer than it was"
    assert {p.name: p.read_bytes() for p in (site / "__pycache__").iterdir()} == installed
    assert (mirror / f"kept.{tag}.pyc").is_symlink()
    assert not (mirror / f"edited.{tag}.pyc").is_symlink()


def test_the_test_modules_rewritten_ahead_are_what_pytest_then_loads(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    pytester.mkdir("tests")
    pytester.path.joinpath("tests", "test_a.py").write_text("def test_a():\n    x = 1\n    assert x == 2\n")
    pytester.path.joinpath("tests", "conftest.py").write_text("")
    pytester.path.joinpath("tests", "helper.py").write_text("")
    prefix = pytester.path / "pycache"
    monkeypatch.setattr(sys, "pycache_prefix", str(prefix))
    config = pytester.parseconfig()

    def written(folder: Path) -> list[str]:
        """The modules of ``folder`` (and below) with bytecode in the folder ``prefix``."""
        return sorted(p.name.split(".")[0] for p in (prefix / folder.relative_to(folder.anchor)).rglob("*.pyc"))

    # this module, which pytest's hook loaded (as it loads a plugin's modules), and json, which it did not
    bytecode_folder.rewrite_ahead(config, loaded=[sys.modules[__name__], json.decoder])

    assert written(Path(__file__).parent) == [Path(__file__).stem]
    assert written(Path(json.decoder.__file__).parent) == []
    assert written(pytester.path) == ["conftest", "test_a"]
    (pyc,) = prefix.rglob("test_a.*.pyc")
    before = pyc.stat()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # pytest would write a pyc it made itself
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*assert 1 == 2*"])  # the asserts rewritten
    after = pyc.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # read, not written again
    assert written(pytester.path) == ["conftest", "test_a"]  # and none written beside it
