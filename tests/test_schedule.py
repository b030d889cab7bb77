"""The one learning-rate schedule: known values of both shapes."""

from __future__ import annotations

import math

import pytest

from diffing.schedule import lr_at


def test_linear_warmup_then_linear_tail():
    # 10 warm-up steps, the last 20% of 100 steps decay to 0
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, decay_frac=0.2) == 1.0
    assert lr_at(50, 100, 1.0, 10, decay_frac=0.2) == 1.0
    assert lr_at(90, 100, 1.0, 10, decay_frac=0.2) == pytest.approx(0.5)
    assert lr_at(99, 100, 1.0, 10, decay_frac=0.2) == pytest.approx(0.05)
    assert lr_at(50, 100, 2.0, 10, decay_frac=0.0) == 2.0  # no decay


def test_cosine_to_a_floor():
    assert lr_at(4, 104, 1.0, 5, shape="cosine", floor=0.1) == pytest.approx(1.0)
    assert lr_at(5, 105, 1.0, 5, shape="cosine", floor=0.1) == pytest.approx(1.0)
    mid = lr_at(55, 105, 1.0, 5, shape="cosine", floor=0.1)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(105, 105, 1.0, 5, shape="cosine", floor=0.1) == pytest.approx(0.1)
