"""The README's demo figures are the committed results file's: ``docs/results/demo.json``,
written by ``daisy demo --results docs/results/demo.json`` (``make demo``).

The README quotes the demo's summary as the demo prints it (:func:`format_summary`); each
figure below must stand in it as printed there, and the README names the results file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from daisy_upstream.evaluation.demo import format_summary

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "demo.json"
README = REPO / "README.md"


def quoted_figures(results: Dict[str, Any]) -> List[str]:
    """The summary's phrases that carry the demo's figures: accuracy, mean exit layer, time saved."""
    summary = format_summary(results, Path("exp_sid"), Path("daisy_upstream.yaml"))
    patterns = (r"test accuracy\s*:\s*\S+", r"mean layer [\d.]+", r"[\d.]+% saved \(ideal [\d.]+%")
    found = [re.search(p, summary) for p in patterns]
    assert all(found), summary  # the summary still prints every figure the README quotes
    return [re.sub(r"\s+", " ", m.group(0)) for m in found]


def mismatches(readme: str, results: Dict[str, Any]) -> List[str]:
    """The figures of ``results`` the README text does not show as the demo printed them."""
    text = re.sub(r"[ \t]+", " ", readme)
    missing = [f for f in quoted_figures(results) if f not in text]
    if "docs/results/demo.json" not in readme:
        missing.append("the name of the results file, docs/results/demo.json")
    return missing


def _results(accuracy: float, mean: float, saved: float, ideal: float) -> Dict[str, Any]:
    return {
        "settings": {"rho": 1.0, "strategy": "threshold"},
        "tau": 1.5,
        "num_layers": 3,
        "test_accuracy": accuracy,
        "test_utterances": 16,
        "speakers": 8,
        "training_exits": [10, 20, 30],
        "evaluation_span": [2, 3],
        "test_exits": [0, 9, 7],
        "mean_exit_layer": mean,
        "upstream_seconds": {"full": 0.5, "daisy": 0.4},
        "saved": saved,
        "ideal_saved": ideal,
        "efficiency": saved / ideal,
        "timing": {"batch_size": 1, "repeats": 5},
    }


def test_the_check_finds_stale_and_accepts_current_figures():
    results = _results(0.8125, 2.4375, 0.153, 0.171)
    current = (
        "`make demo` prints (figures from docs/results/demo.json):\n"
        "  test accuracy        : 81.25% (16 test utterances; chance 12.5%)\n"
        "  test exits           : [0, 9, 7] (mean layer 2.44)\n"
        "  upstream time, test  : full 0.500 s, DAISY 0.400 s -> 15.3% saved (ideal 17.1%, ...)\n"
    )
    assert mismatches(current, results) == []
    stale = current.replace("81.25%", "65.60%").replace("15.3% saved", "18.0% saved")
    assert mismatches(stale, results) == ["test accuracy : 81.25%", "15.3% saved (ideal 17.1%"]
    assert mismatches(current.replace("docs/results/demo.json", "a file"), results) == [
        "the name of the results file, docs/results/demo.json"
    ]


@pytest.mark.skipif(not RESULTS.is_file(), reason="docs/results/demo.json is not committed yet (make demo writes it)")
def test_readme_demo_figures_match_the_committed_results():
    results = json.loads(RESULTS.read_text())
    assert mismatches(README.read_text(), results) == []
