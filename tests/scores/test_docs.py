"""The examples in the docstrings of latentlens.scores run and print what they show."""

from __future__ import annotations

import doctest

import pytest

from latentlens.scores import drift, outliers, per_class


@pytest.mark.parametrize("module", [drift, per_class, outliers], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    results = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0
    assert results.failed == 0
