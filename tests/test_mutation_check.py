"""The mutation check's mechanism (experiments/mutation_check.py), without running any mutant:
a mutant that no longer applies must fail loudly, before anything runs, and here in the normal
suite as soon as the code it mutates changes; a run against the wrong package must not count."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import adaptscope

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "mutation_check.py"


@pytest.fixture(scope="module")
def mc():
    spec = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_every_mutant_applies_to_todays_source(mc):
    """A change to mutated code must update its mutant now, not when the check next runs."""
    assert mc.stale(mc.MUTANTS, ROOT) == []


def test_every_guarding_test_exists(mc):
    """A renamed test would make its mutants' runs collect nothing."""
    for m in mc.MUTANTS:
        for test in m.tests:
            path, _, name = test.partition("::")
            source = (ROOT / path).read_text()
            if name:
                function = re.sub(r"\[.*\]$", "", name)
                assert f"def {function}(" in source, (m.id, test)


def test_stale_mutants_are_all_listed_and_nothing_runs(mc, tmp_path, monkeypatch, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\ny = 1\n")
    monkeypatch.setattr(mc, "ROOT", tmp_path)
    ran = []
    monkeypatch.setattr(mc, "run_tests", lambda *args, **kwargs: ran.append(args))
    mutants = [
        mc.Mutant("applies", "pkg/code.py", "x = 1", "x = 2", ("tests/test_a.py",)),
        mc.Mutant("text-gone", "pkg/code.py", "z = 1", "z = 2", ("tests/test_a.py",)),
        mc.Mutant("text-twice", "pkg/code.py", " = 1", " = 2", ("tests/test_a.py",)),
        mc.Mutant("file-gone", "pkg/gone.py", "x", "y", ("tests/test_a.py",)),
    ]
    assert mc.main([], mutants) == 2
    assert mc.main(["applies"], mutants) == 2  # every mutant is checked, chosen or not
    err = capsys.readouterr().err
    for line in ("text-gone: its text occurs 0 times", "text-twice: its text occurs 2 times",
                 "file-gone: pkg/gone.py does not exist"):
        assert line in err
    assert "applies:" not in err
    assert ran == []


def test_only_a_failing_test_is_a_kill(mc, tmp_path):
    def outcome(code, first):
        return mc.Outcome(code, first, 1.0, tmp_path / "log")

    assert outcome(1, "tests/test_a.py::test_x").killed
    assert outcome(2, "tests/test_a.py (collection)").killed  # the mutant broke an import
    assert not outcome(0, None).killed and outcome(0, None).passed
    for code in (3, 4, 5):  # internal error, usage error (the guard's refusal), no tests
        assert not outcome(code, "x").killed and not outcome(code, "x").passed


def load_guard(mc, tmp_path, monkeypatch, tree: Path):
    """The plugin each run loads, as the check writes it, reading `tree` from the environment."""
    (tmp_path / "guard.py").write_text(mc.GUARD_SOURCE)
    monkeypatch.setenv("MUTATION_TREE", str(tree))
    monkeypatch.setenv("MUTATION_REPORT", str(tmp_path / "first"))
    spec = importlib.util.spec_from_file_location("mutation_guard", tmp_path / "guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guard_refuses_a_package_outside_the_scratch_copy(mc, tmp_path, monkeypatch):
    """The virtual environment's editable install imports the checkout's package: a run that
    picked it up instead of the scratch copy's would test unmutated code."""
    guard = load_guard(mc, tmp_path, monkeypatch, tmp_path)
    with pytest.raises(pytest.UsageError, match="not from"):
        guard.pytest_configure(None)
    guard = load_guard(mc, tmp_path, monkeypatch, Path(adaptscope.__file__).parents[1])
    guard.pytest_configure(None)  # the package's own tree passes


def test_the_guard_records_the_first_failure_only(mc, tmp_path, monkeypatch):
    guard = load_guard(mc, tmp_path, monkeypatch, tmp_path)

    def report(nodeid, failed, when="call"):
        return SimpleNamespace(nodeid=nodeid, failed=failed, when=when)

    guard.pytest_runtest_logreport(report("tests/t.py::test_passes", False))
    guard.pytest_runtest_logreport(report("tests/t.py::test_fixture", True, "setup"))
    guard.pytest_runtest_logreport(report("tests/t.py::test_later", True))
    assert (tmp_path / "first").read_text() == "tests/t.py::test_fixture (setup)"
