"""Domain- and concept-balanced sampling weights (the paper's MetaCLIP-style resampling)."""

from __future__ import annotations

from collections import Counter


def balance_weights(counts: Counter, task_weights: dict[tuple[str, str], float] | None = None,
                    domain_weights: dict[str, float] | None = None) -> dict[tuple[str, str], float]:
    """Sampling weight per (domain, task) so each domain, and each task inside a domain, gets the
    same total mass; weights average 1 over the rows. `task_weights` shifts mass between the tasks
    of a domain (a task weighted 2 gets twice the mass of a task weighted 1), never between domains.
    `domain_weights` (the data mix) shifts it between domains: a domain weighted 3 gets three times
    the mass of a domain left at 1.

    >>> w = balance_weights(Counter({("stem", "a"): 30, ("stem", "b"): 10, ("ocr", "t"): 20}))
    >>> {k: round(v, 3) for k, v in w.items()}
    {('stem', 'a'): 0.5, ('stem', 'b'): 1.5, ('ocr', 't'): 1.5}
    >>> w = balance_weights(Counter({("stem", "a"): 30, ("stem", "b"): 10, ("ocr", "t"): 20}), {("stem", "a"): 3.0})
    >>> {k: round(v, 3) for k, v in w.items()}
    {('stem', 'a'): 0.75, ('stem', 'b'): 0.75, ('ocr', 't'): 1.5}
    >>> w = balance_weights(Counter({("stem", "a"): 30, ("stem", "b"): 10, ("ocr", "t"): 20}), None, {"ocr": 3.0})
    >>> {k: round(v, 3) for k, v in w.items()}
    {('stem', 'a'): 0.25, ('stem', 'b'): 0.75, ('ocr', 't'): 2.25}
    """
    task_weights = task_weights or {}
    domain_weights = domain_weights or {}
    total = sum(counts.values())
    domains = {domain for domain, _ in counts}
    mix = sum(domain_weights.get(domain, 1.0) for domain in domains)
    # a task's share of its domain's mass: its weight over the domain's tasks' weights
    task_total = Counter()
    for concept in counts:
        task_total[concept[0]] += task_weights.get(concept, 1.0)
    return {(domain, task): total * domain_weights.get(domain, 1.0) / mix
            * task_weights.get((domain, task), 1.0) / (task_total[domain] * n)
            for (domain, task), n in counts.items()}
