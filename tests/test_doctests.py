"""The Examples in the public API's docstrings run and print what they say (``tailscope.__all__``,
methods included)."""

from __future__ import annotations

import doctest

import pytest

import tailscope

PUBLIC = [n for n in tailscope.__all__ if not n.startswith("__")]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _tests(name: str) -> list[doctest.DocTest]:
    obj = getattr(tailscope, name)
    finder = doctest.DocTestFinder(recurse=True, exclude_empty=True)
    return [t for t in finder.find(obj, name, module=False, globs={}) if t.examples]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_docstring_examples_run(name):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _tests(name):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {name}'s docstrings"


def test_the_examples_are_there():
    """PowerLawSVD's example (built lazily on scikit-learn) and the fit's are found and run."""
    found = {name: sum(len(t.examples) for t in _tests(name)) for name in PUBLIC}
    assert found["PowerLawSVD"] >= 3 and found["fit_power_law"] >= 1, found
