"""The `requires_slurm` fixture: a test that needs SLURM is skipped with the reason where SLURM
is missing, failed instead under ADAPTSCOPE_REQUIRE_SLURM=1 (so CI cannot pass by skipping)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import slurm_cluster
from slurm_cluster import REQUIRE_ENV, require_slurm

pytest_plugins = ["pytester"]
TESTS = Path(__file__).parent


@pytest.fixture
def no_srun(tmp_path, monkeypatch):
    """A PATH with no SLURM binary on it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    assert slurm_cluster.slurm_unavailable_reason() is not None


def test_missing_slurm_skips_with_the_reason(no_srun):
    with pytest.raises(pytest.skip.Exception) as raised:
        require_slurm()
    assert "SLURM" in str(raised.value)


@pytest.mark.parametrize("value", ["1", "true"])
def test_missing_slurm_fails_when_it_is_required(no_srun, monkeypatch, value):
    monkeypatch.setenv(REQUIRE_ENV, value)
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_ENV}=1 but .*SLURM"):
        require_slurm()


def test_required_is_off_for_0_and_empty(no_srun, monkeypatch):
    for value in ("0", ""):
        monkeypatch.setenv(REQUIRE_ENV, value)
        with pytest.raises(pytest.skip.Exception):
            require_slurm()


def test_available_slurm_runs_the_test(monkeypatch):
    monkeypatch.setattr(slurm_cluster, "slurm_unavailable_reason", lambda: None)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    require_slurm()  # neither skips nor fails


@pytest.mark.parametrize("required", [False, True])
def test_slurm_tests_skip_or_fail_through_conftest(pytester, monkeypatch, required):
    """The fixture as the test modules use it, in a pytest run with this suite's conftest."""
    pytester.makepyfile(test_marked="""
        import pytest

        @pytest.fixture(scope="module")
        def cluster(requires_slurm):
            raise AssertionError("set up although SLURM is missing")

        def test_needs_slurm(cluster):
            pass

        @pytest.mark.usefixtures("requires_slurm")
        def test_needs_srun():
            pass

        def test_plain():
            pass
    """)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(TESTS),
                                                                   os.environ.get("PYTHONPATH")))))
    monkeypatch.setenv("PATH", str(pytester.path))  # no srun; the interpreter is run by path
    if required:
        monkeypatch.setenv(REQUIRE_ENV, "1")
    else:
        monkeypatch.delenv(REQUIRE_ENV, raising=False)
    result = pytester.runpytest_subprocess("-p", "conftest", "-rs", "-p", "no:cacheprovider")
    if required:
        result.assert_outcomes(passed=1, errors=2)
        result.stdout.fnmatch_lines([f"*{REQUIRE_ENV}=1 but SLURM*"])
    else:
        result.assert_outcomes(passed=1, skipped=2)
        result.stdout.fnmatch_lines(["SKIPPED*test_marked.py:*SLURM*"] * 2)
    result.stdout.no_fnmatch_line("*set up although*")
