"""Reward verifiers: agreement with the regression sets, time per `score` call, the slowest call
we can construct, and (where `math_verify` imports) Math-Verify on the same math cases.

    python bench/bench_rewards.py                      # thinkpipe's verifiers (the project's .venv)
    # Math-Verify side by side: a venv of its own (it is not a thinkpipe dependency)
    python3.11 -m venv /tmp/mv && /tmp/mv/bin/pip install math-verify==0.9.0 pebble==5.2.3
    PYTHONPATH=. /tmp/mv/bin/python bench/bench_rewards.py

Both arms score the same cases. Math-Verify is called as its documentation shows
(`verify(parse(gold), parse(answer))`, default extraction: LaTeX and plain expressions), with the
boxed answer and the reference each wrapped in `$...$` so its LaTeX extractor sees them whole.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_src.rewards import score  # noqa: E402

CASE_FILES = ("tests/reward_cases.jsonl", "tests/reward_cases_holdout.jsonl", "tests/reward_cases_graders.jsonl",
              "tests/reward_cases_mined.jsonl", "tests/reward_cases_fresh.jsonl")


def wrap(answer: str) -> str:
    return f"<think>t</think><answer><|begin_of_box|>{answer}<|end_of_box|></answer>"


def load_cases() -> dict[str, list[dict]]:
    sets = {}
    for name in CASE_FILES:
        path = ROOT / name
        if path.is_file():
            sets[name] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sets


def agreement(cases: list[dict], reward_of) -> tuple[dict[str, tuple[int, int]], list[float]]:
    """Per verifier (agreeing, total), and every call's seconds."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    seconds = []
    for case in cases:
        started = time.perf_counter()
        reward = reward_of(case)
        seconds.append(time.perf_counter() - started)
        counts[case["verifier"]][1] += 1
        counts[case["verifier"]][0] += reward is not None and abs(reward - case["expected"]) <= case.get("tol", 1e-9)
    return {v: (a, n) for v, (a, n) in counts.items()}, seconds


def adversarial() -> dict[str, str]:
    """Box contents built to be slow: deep nesting, long lists, power towers, many alternatives."""
    return {
        "nested sets": "\\{" + ",".join(["\\{1,2,3\\}"] * 16) + "\\}",
        "16 polynomials": ",".join(f"x^{i}+{i}x" for i in range(16)),
        "deep fractions": "\\frac{" * 40 + "1" + "}{2}" * 40,
        "relation chain": "<".join(["x"] * 60),
        "nested tuples": "(" * 60 + "1,2" + ")" * 60,
        "interval union": "\\cup".join(["(1,2)"] * 40),
        "power tower": "9^9^9^9^9^9^9^9",
        "long list": ",".join(["1"] * 250),
        "hedges": " or ".join(["1"] * 100),
        "braces": "{" * 250 + "}" * 250,
        "text wrappers": "\\text{" * 80 + "5" + "}" * 80,
        "bare fracs": "\\frac" * 100,
        "json depth": "[" * 250 + "]" * 250,
        "long ocr": "a" * 512,
        "factorials": "1000!" * 3 + "+" + "(1000!)^{400}" + "+1000!!",
        "big binomials": "\\binom{10^{100}}{400}\\binom{10^{99}}{399}",
        "exact powers": "*".join(["(7/3)^{400}"] * 10),
        "repeating decimal": "0." + "142857" * 80 + "...",
        "plus-minus list": ",".join(["1 \\pm \\sqrt{2} \\mp 3"] * 20),
        "named values": ",".join(f"x_{{{i}}} = {i}" for i in range(40)),
        "option sentence": "The answer is (B) because option C and choice D " * 8,
    }


def slowest_call() -> tuple[float, str]:
    worst = (0.0, "")
    for name, text in adversarial().items():
        for domain in ("math", "chart", "counting", "choice", "gui", "grounding", "ocr", "video"):
            for reference in (text[:512], "1", "(1,2)", "\\{1,2\\}", "b" * 512):
                started = time.perf_counter()
                score(domain, wrap(text[:512]), reference)
                worst = max(worst, (time.perf_counter() - started, f"{name} / {domain}"))
    return worst


def math_verify_reward(case: dict) -> float | None:
    from math_verify import parse, verify

    try:
        return float(verify(parse(f"${case['ref']}$"), parse(f"${case['pred']}$")))
    except Exception:  # noqa: BLE001 - a crash is a disagreement here, not the benchmark's end
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    for name, cases in load_cases().items():
        counts, seconds = agreement(cases, lambda c: score(c["verifier"], wrap(c["pred"]), c["ref"]).reward)
        total = sum(a for a, _ in counts.values()), sum(n for _, n in counts.values())
        print(f"\n{name}: thinkpipe agrees on {total[0]}/{total[1]} ({total[0] / total[1]:.1%})")
        for verifier in sorted(counts):
            a, n = counts[verifier]
            print(f"  {verifier:10s} {a:4d}/{n:<4d} {a / n:6.1%}")
        print(f"  time per call: mean {statistics.fmean(seconds) * 1e3:.3f} ms, max {max(seconds) * 1e3:.2f} ms")
        try:
            import math_verify  # noqa: F401
        except ImportError:
            continue
        math_cases = [c for c in cases if c["verifier"] == "math"]
        ours, ours_s = agreement(math_cases, lambda c: score("math", wrap(c["pred"]), c["ref"]).reward)
        theirs, theirs_s = agreement(math_cases, math_verify_reward)
        print(f"  math, same {len(math_cases)} cases: thinkpipe {ours['math'][0]}, Math-Verify {theirs['math'][0]}; "
              f"time per call thinkpipe {statistics.fmean(ours_s) * 1e3:.3f} ms, Math-Verify "
              f"{statistics.fmean(theirs_s) * 1e3:.3f} ms (ratio {statistics.fmean(theirs_s) / statistics.fmean(ours_s):.0f}x), "
              f"Math-Verify max {max(theirs_s) * 1e3:.0f} ms")
    worst, where = slowest_call()
    print(f"\nslowest constructed call: {worst * 1e3:.1f} ms ({where}); goal < 1000 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
