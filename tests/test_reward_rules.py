"""Every reward rule the README states, scored as the README states it: the table between the
`reward-rules` markers in README.md is read row by row, so a rule changed in the verifiers without
the README (or the reverse) fails here."""

from __future__ import annotations

import re

import pytest

from model_src.rewards import score
from model_src.rewards.verifiers import VERIFIERS
from tests.conftest import ROOT

_TABLE = re.compile(r"<!-- reward-rules:.*?-->\n(.*?)<!-- /reward-rules -->", re.DOTALL)


def readme_rules() -> list[tuple[str, str, str, str, float]]:
    table = _TABLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert table, "README.md has no reward-rules table"
    rows = []
    for line in table.group(1).splitlines()[2:]:  # after the header and its rule
        verifier, rule, answer, reference, reward = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        assert answer[0] == answer[-1] == reference[0] == reference[-1] == "`", line
        rows.append((verifier, rule, answer[1:-1], reference[1:-1], float(reward)))
    return rows


RULES = readme_rules()


@pytest.mark.parametrize(("verifier", "rule", "answer", "reference", "reward"), RULES,
                         ids=[f"{r[0]}: {r[1]}" for r in RULES])
def test_each_rule_the_readme_states_holds(verifier, rule, answer, reference, reward):
    response = f"<think>reasoning</think><answer><|begin_of_box|>{answer}<|end_of_box|></answer>"
    result = score(verifier, response, reference)
    assert result.reward == pytest.approx(reward, abs=1e-3), f"{rule}: {answer!r} vs {reference!r} ({result.reason})"


def test_the_table_covers_every_verifier_with_a_reward_and_a_zero():
    covered = {v for v, *_ in RULES}
    assert covered >= {"math", "chart", "counting", "choice", "grounding", "gui", "ocr", "video"} & set(VERIFIERS)
    for verifier in ("math", "chart", "counting", "choice", "grounding", "gui"):
        rewards = [r for v, *_, r in RULES if v == verifier]
        assert any(r > 0 for r in rewards) and any(r == 0 for r in rewards), verifier
