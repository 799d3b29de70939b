"""A score function for the scorer's time-limit tests: sleeps on a response that asks it to."""

from __future__ import annotations

import time

from model_src.rewards.batch import ScoreRequest, _score


def score_or_hang(request: ScoreRequest, repetition_penalty: float):
    if "HANG" in request.response:
        time.sleep(60)
    return _score(request, repetition_penalty)
