"""benchmarks/harness.py: sides alternate round by round, and the summary is the median with its spread."""
import importlib.util
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "harness.py"
spec = importlib.util.spec_from_file_location("harness", HARNESS)
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)


def test_sides_alternate_and_warmup_rounds_are_dropped():
    calls = []
    sides = {name: (lambda name=name: calls.append(name) or {"rate": len(calls)}) for name in ("a", "b")}
    results = harness.compare(sides, rounds=3, warmup_rounds=1)
    assert calls == ["a", "b"] * 4
    assert [row["rate"] for row in results["a"]] == [3, 5, 7]
    assert [row["rate"] for row in results["b"]] == [4, 6, 8]


def test_summary_is_median_min_max_and_relative_spread():
    summary = harness.summarise([4.0, 1.0, 2.0])
    assert summary == {"median": 2.0, "min": 1.0, "max": 4.0, "rounds": 3, "spread": 1.5}
    assert harness.format_spread(summary) == "2.0 (1.0–4.0, n=3)"


def test_zero_rounds_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--rounds"):
        harness.compare({"a": dict}, rounds=0)


def test_busy_machine_is_flagged(monkeypatch, capsys):
    monkeypatch.setattr(harness.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr(harness.os, "cpu_count", lambda: 2)
    assert harness.print_load("start") == 9.0
    assert "WARNING: busy machine" in capsys.readouterr().err


CHILD = f"""
import itertools, sys
sys.path.insert(0, {str(HARNESS.parent)!r})
import harness
protocol = harness.claim_stdout()
print("a library's chatter on stdout")
counter = itertools.count(1)
if sys.argv[1] == "fail":
    raise ValueError("the child could not start")
harness.serve_rounds(protocol, lambda: {{"round": next(counter), "side": sys.argv[1]}}, {{"compile_s": 1.5}})
"""


def child_side(name, argument):
    import sys

    return harness.ChildSide(name, [sys.executable, "-c", CHILD, argument], settle_s=0)


def test_child_sides_are_started_once_and_answer_one_round_per_call():
    with child_side("a", "a") as side_a, child_side("b", "b") as side_b:
        assert side_a.setup == {"compile_s": 1.5}
        results = harness.compare({"a": side_a, "b": side_b}, rounds=2, warmup_rounds=1)
    assert results == {"a": [{"round": 2, "side": "a"}, {"round": 3, "side": "a"}],
                       "b": [{"round": 2, "side": "b"}, {"round": 3, "side": "b"}]}


def test_a_child_that_fails_reports_its_error_line():
    with pytest.raises(harness.SideFailed, match="a: ValueError: the child could not start"):
        child_side("a", "fail")
