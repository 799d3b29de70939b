"""Scoring a step's worth of responses at once, none of them allowed to stall the step.

`Scorer.score_many` runs `score` for every request in a pool of worker processes (pebble's
`ProcessPool`): calls run side by side, and a call that outlives `timeout_s` has its worker killed
and replaced, and scores 0 with reason `timeout` (counted in `stats` as `reward_timeouts`). The rule-based verifiers are
bounded by construction (well under a second on any input); the limit is what holds if one is not,
and what bounds a judge call (`model_src.rewards.judge`).

With `workers=0` the calls run in this process, one after another and without a time limit: for
bare machines (`make gpu-check` has no pebble) and for debugging.

    >>> with Scorer(workers=0) as scorer:
    ...     [r.reward for r in scorer.score_many([ScoreRequest("math", "<think>t</think><answer>"
    ...      "<|begin_of_box|>\\\\frac12<|end_of_box|></answer>", "0.5")])]
    [1.0]
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from model_src.rewards.core import RewardResult, extract_box, format_reason, repetition, score

TIMEOUT_REASON = "timeout"


@dataclass(frozen=True)
class ScoreRequest:
    domain: str  # what the reward is reported under, and what `reward.judge_domains` names
    response: str
    reference: str
    question: str | None = None
    verifier: str = ""  # the rule-based verifier, when not the domain's own (a user domain's, curate.domains)


def _score(request: ScoreRequest, repetition_penalty: float) -> RewardResult:
    return score(request.verifier or request.domain, request.response, request.reference, question=request.question,
                 repetition_penalty=repetition_penalty)


def timed_out(request: ScoreRequest) -> RewardResult:
    """What a call that ran out of time scores: 0, with the format judged here (cheap, bounded)."""
    ok = isinstance(request.response, str) and format_reason(request.response) == "ok"
    return RewardResult(0.0, ok, {"format": float(ok), "accuracy": 0.0}, TIMEOUT_REASON)


class Scorer:
    """`score` over batches, in `workers` processes with a hard per-call limit (see the module);
    with a `judge`, the domains `modes` names `judge` or `rule+judge` are (also) judged."""

    def __init__(self, workers: int = 0, timeout_s: float = 2.0, repetition_penalty: float = 0.0,
                 score_fn: Callable[[ScoreRequest, float], RewardResult] = _score,
                 modes: Callable[[str], str] | None = None, judge=None, unreachable_reward: float = 0.0):
        if workers < 0 or timeout_s <= 0:
            raise ValueError(f"Scorer: workers must be >= 0 and timeout_s > 0, got {workers}, {timeout_s}")
        self.workers, self.timeout_s, self.repetition_penalty = workers, timeout_s, repetition_penalty
        self.score_fn, self.modes, self.judge, self.unreachable_reward = score_fn, modes, judge, unreachable_reward
        self._stats: Counter[str] = Counter()
        self.reasons: Counter[tuple[str, str]] = Counter()  # (domain, reason) of every result: why rewards were what they were
        self._pool = None

    @classmethod
    def from_config(cls, cfg, repetition_penalty: float = 0.0) -> Scorer:
        """The scorer a `reward` config section describes (model_src.config.RewardConfig)."""
        from model_src.rewards.judge import Judge

        return cls(cfg.workers, cfg.timeout_s, repetition_penalty, modes=cfg.mode,
                   judge=Judge(cfg.judge) if cfg.judge.url else None, unreachable_reward=cfg.judge.unreachable_reward)

    @property
    def stats(self) -> Counter[str]:
        """Counts so far: calls, reward_timeouts, worker_error, and the judge's judge_calls, judge_cache_hits,
        judge_unreachable, judge_unparsed."""
        return self._stats + (self.judge.stats if self.judge is not None else Counter())

    def _ensure_pool(self):
        if self._pool is None:
            from pebble import ProcessPool

            # fork, as torch's DataLoader workers: the children run pure-Python scoring, never torch or
            # CUDA; spawn would re-import the trainer's __main__ in every worker (and refuse an unguarded one)
            self._pool = ProcessPool(max_workers=self.workers, context=multiprocessing.get_context("fork"))
        return self._pool

    def _rule_many(self, requests: Sequence[ScoreRequest]) -> list[RewardResult]:
        if self.workers == 0:
            return [self.score_fn(r, self.repetition_penalty) for r in requests]
        pool = self._ensure_pool()
        futures = [pool.schedule(self.score_fn, args=(r, self.repetition_penalty), timeout=self.timeout_s)
                   for r in requests]
        results = []
        for request, future in zip(requests, futures):
            try:
                results.append(future.result())
            except FutureTimeout:
                self._stats["reward_timeouts"] += 1
                results.append(timed_out(request))
            except Exception as exc:  # noqa: BLE001 - a worker that died scores 0 and says why; RL goes on
                self._stats["worker_error"] += 1
                results.append(RewardResult(0.0, False, {"format": 0.0, "accuracy": 0.0},
                                            f"worker_error:{type(exc).__name__}"))
        return results

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[RewardResult]:
        self._stats["calls"] += len(requests)
        modes = [self.modes(r.domain) if self.modes is not None else "rule" for r in requests]
        results: list[RewardResult | None] = [None] * len(requests)
        ruled = [i for i, mode in enumerate(modes) if mode != "judge"]
        for i, result in zip(ruled, self._rule_many([requests[i] for i in ruled])):
            results[i] = result
        asks: list[tuple[int, str]] = []
        for i, (request, mode) in enumerate(zip(requests, modes)):
            if mode == "rule" or self.judge is None:
                continue
            content = extract_box(request.response)
            if mode == "judge" and content is None:
                why = format_reason(request.response) if isinstance(request.response, str) else "not_a_string"
                results[i] = RewardResult(0.0, False, {"format": 0.0, "accuracy": 0.0}, f"format:{why}")
            elif content is not None and (mode == "judge" or results[i].reward < 1.0):
                asks.append((i, content))  # rule+judge: the judge decides what the rule did not accept
        verdicts = self.judge.judge_many([(requests[i].question or "", content, requests[i].reference)
                                          for i, content in asks]) if asks else []
        for (i, _), verdict in zip(asks, verdicts):
            results[i] = self._with_verdict(requests[i], results[i], verdict)
        self.reasons.update((request.domain, result.reason) for request, result in zip(requests, results))
        return results

    def _with_verdict(self, request: ScoreRequest, rule: RewardResult | None, verdict) -> RewardResult:
        if verdict.reward is None:  # no verdict: judge-only domains get the configured reward, fallbacks keep the rule's
            if rule is None:
                return RewardResult(self.unreachable_reward, True,
                                    {"format": 1.0, "judge": self.unreachable_reward}, verdict.reason)
            return RewardResult(rule.reward, rule.format_ok, rule.parts, f"{rule.reason};{verdict.reason}")
        # the rule's accuracy before any repetition penalty, which is applied once, below
        reward = verdict.reward if rule is None else max(rule.parts.get("accuracy", rule.reward), verdict.reward)
        parts = {"format": 1.0, **(rule.parts if rule else {}), "judge": verdict.reward}
        if self.repetition_penalty > 0:
            parts["repetition"] = repetition(request.response)
            reward *= 1.0 - min(1.0, self.repetition_penalty) * parts["repetition"]
        reason = verdict.reason if rule is None else f"{rule.reason};{verdict.reason}"
        return RewardResult(reward, True, parts, reason)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reason_table(reasons: Counter[tuple[str, str]]) -> dict[str, list]:
    """Every process's (domain, reason) counts summed, as an MLflow table: domain, reason, count,
    most frequent first. A collective: every process of a job calls it.

    >>> reason_table(Counter({("math", "match"): 3, ("math", "format:think_tags"): 5}))
    {'domain': ['math', 'math'], 'reason': ['format:think_tags', 'match'], 'count': [5, 3]}
    """
    from model_src.train.distributed import all_gather_objects

    total: Counter[tuple[str, str]] = Counter()
    for part in all_gather_objects(dict(reasons)):
        total.update(part)
    rows = sorted(total.items(), key=lambda item: (-item[1], item[0]))
    return {"domain": [d for (d, _), _ in rows], "reason": [r for (_, r), _ in rows], "count": [n for _, n in rows]}
