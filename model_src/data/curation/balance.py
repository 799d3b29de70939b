"""Domain- and concept-balanced sampling weights (the paper's MetaCLIP-style resampling)."""

from __future__ import annotations

from collections import Counter


def balance_weights(counts: Counter) -> dict[tuple[str, str], float]:
    """Sampling weight per (domain, task) so each domain, and each task inside a domain, gets the
    same total mass; weights average 1 over the rows.

    >>> w = balance_weights(Counter({("stem", "a"): 30, ("stem", "b"): 10, ("ocr", "t"): 20}))
    >>> {k: round(v, 3) for k, v in w.items()}
    {('stem', 'a'): 0.5, ('stem', 'b'): 1.5, ('ocr', 't'): 1.5}
    """
    total = sum(counts.values())
    tasks_per_domain = Counter(domain for domain, _ in counts)
    return {(domain, task): total / (len(tasks_per_domain) * tasks_per_domain[domain] * n)
            for (domain, task), n in counts.items()}
