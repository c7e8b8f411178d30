"""hack/mutate.py's CI options: the sample is stable per seed and the option combinations that
make no sense are refused before mutmut is started (a CI gate that silently ran nothing would
pass whatever the code does)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mutate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("imagegate_hack_mutate", ROOT / "hack/mutate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


mutate = _mutate()
NAMES = [f"webhook.m.x_f__mutmut_{i}" for i in range(1, 200)]


def test_a_sample_is_the_same_for_a_seed_and_another_for_another_seed() -> None:
    first = mutate.sample(NAMES, 60, "abc")
    assert first == mutate.sample(NAMES, 60, "abc")
    assert len(first) == 60
    assert set(first) <= set(NAMES)
    assert first != mutate.sample(NAMES, 60, "abd")
    assert mutate.sample(NAMES[:10], 60, "abc") == NAMES[:10]


@pytest.mark.parametrize(
    "argv",
    [
        ["--or-sample", "60"],  # a fallback without --changed-since
        ["--changed-since", "HEAD", "--or-sample", "0"],
        ["--max-mutants", "0"],
    ],
)
def test_options_that_would_run_nothing_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        mutate.main(argv)
    assert stopped.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_the_ci_target_gates_on_unexplained_survivors() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nmutate-ci:", 1)[1].split("\n\n", 1)[0]
    for option in ("--changed-since $(MUTATE_BASE)", "--or-sample", "--max-unexplained 0"):
        assert option in recipe
    assert "make mutate-ci" in (ROOT / ".ci/run").read_text()
