"""kb.deadline nests: an inner block neither switches off nor extends the enclosing per-source limit."""

from __future__ import annotations

import time

import pytest

from kb import SourceTimeout, deadline


def test_an_inner_deadline_leaves_the_outer_one_armed():
    with pytest.raises(SourceTimeout):
        with deadline(0.3):
            with deadline(30):
                pass  # finished well within both
            for _ in range(1000):  # ~10 s: the outer limit must end this long before
                time.sleep(0.01)


def test_an_inner_deadline_cannot_outlast_the_outer_one():
    with pytest.raises(SourceTimeout):
        with deadline(0.3):
            with deadline(30):
                for _ in range(1000):
                    time.sleep(0.01)
