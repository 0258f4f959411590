"""The upstream config's values, checked before any work (issue 35): a key given twice in the
YAML, an infinite threshold, a layer number of the wrong type are one line each."""

from __future__ import annotations

import math

import pytest

from daisy_upstream.core.policy import DaisyConfig
from daisy_upstream.core.strict_yaml import DuplicateKey, load_unique


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path):
    """PyYAML kept the second ``rho`` without a word."""
    path = tmp_path / "daisy.yaml"
    path.write_text("rho: 0.7\nstrategy: none\nrho: 1.0\n")
    with pytest.raises(DuplicateKey, match=r"daisy.yaml: key 'rho' is given twice \(lines 1 and 3\); keep one"):
        DaisyConfig.from_yaml(path)
    nested = "a:\n  b: 1\n  b: 2\n"
    with pytest.raises(DuplicateKey, match="key 'b' is given twice"):
        load_unique(nested)
    assert load_unique("a: {b: 1}\nc: [1, 2]\n") == {"a": {"b": 1}, "c": [1, 2]}


@pytest.mark.parametrize(
    "values, match",
    [
        ({"tau": math.inf}, "tau=inf must be a finite number >= 0"),
        ({"tau": -0.1}, "tau=-0.1 must be a finite number >= 0"),
        ({"rho": math.nan}, "rho=nan must be a number in"),
        ({"span_threshold": math.inf}, "span_threshold=inf"),
        ({"fixed_layer": "3"}, "fixed_layer='3' must be a layer number >= 1"),
        ({"fixed_layer": 2.5, "strategy": "none"}, "fixed_layer=2.5 must be a layer number"),
    ],
)
def test_every_value_is_typed_ranged_and_finite(values, match):
    with pytest.raises(ValueError, match=match):
        DaisyConfig.from_mapping(values)


def test_good_values_pass():
    assert DaisyConfig.from_mapping({"tau": 0.5, "fixed_layer": 2, "strategy": "fixed"}).tau == 0.5


def test_merge_keys_still_work():
    assert load_unique("a: &x {r: 1}\nb:\n  <<: *x\n  s: 2\n") == {"a": {"r": 1}, "b": {"r": 1, "s": 2}}
