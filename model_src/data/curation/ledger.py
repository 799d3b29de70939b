"""Where every input row lands: kept in a split, or quarantined with a reason. The counts
reconcile (input = kept + quarantined, in total and per domain) or the report refuses to exist."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from model_src.data.curation.writing import QUARANTINE_SCHEMA, Writers
from model_src.data.schema import SPLITS


class Ledger:
    def __init__(self, quarantine_path: Path, writers: Writers):
        self.quarantine_path = quarantine_path
        self.writers = writers
        self.input: Counter = Counter()
        self.kept: Counter = Counter()
        self.quarantined: Counter = Counter()
        self.reasons: Counter = Counter()
        self.domain_reasons: defaultdict[str, Counter] = defaultdict(Counter)
        self.split: Counter = Counter()
        self.concepts: defaultdict[str, Counter] = defaultdict(Counter)  # split -> (domain, task) -> rows
        self.recaptioned = 0

    def arrived(self, row: dict) -> None:
        self.input[row.get("domain") or "<missing>"] += 1

    def quarantine(self, row: dict, reason: str, detail: str) -> None:
        domain = row.get("domain") or "<missing>"
        self.quarantined[domain] += 1
        self.reasons[reason] += 1
        self.domain_reasons[domain][reason] += 1
        self.writers.write(self.quarantine_path, {**row, "reason": reason, "detail": detail}, QUARANTINE_SCHEMA)

    def kept_in(self, row: dict, split: str) -> None:
        self.kept[row["domain"]] += 1
        self.split[split] += 1
        self.concepts[split][(row["domain"], row["task"])] += 1
        self.recaptioned += row.get("caption_source") == "recaptioned"

    def report(self) -> dict:
        """The counts as report.json holds them; raises if a row went missing."""
        report = {
            "input_rows": sum(self.input.values()),
            "kept_rows": sum(self.kept.values()),
            "quarantined_rows": sum(self.quarantined.values()),
            "split_rows": {split: self.split[split] for split in SPLITS},
            "quarantine_reasons": dict(sorted(self.reasons.items())),
            "input_by_domain": dict(sorted(self.input.items())),
            "kept_by_domain": dict(sorted(self.kept.items())),
            "quarantined_by_domain": dict(sorted(self.quarantined.items())),
            "quarantine_reasons_by_domain": {d: dict(sorted(c.items())) for d, c in sorted(self.domain_reasons.items())},
            "split_by_domain": {split: _per_domain(self.concepts[split]) for split in SPLITS},
            "recaptioned_rows": self.recaptioned,
        }
        # the reconciliation the stage promises: every input row is accounted for, per domain too
        if report["input_rows"] != report["kept_rows"] + report["quarantined_rows"]:
            raise AssertionError(f"curation lost rows: {report}")
        for domain, n in report["input_by_domain"].items():
            if n != report["kept_by_domain"].get(domain, 0) + report["quarantined_by_domain"].get(domain, 0):
                raise AssertionError(f"curation lost rows of domain {domain}: {report}")
        return report


def _per_domain(concepts: Counter) -> dict[str, int]:
    per_domain: Counter = Counter()
    for (domain, _task), n in concepts.items():
        per_domain[domain] += n
    return dict(sorted(per_domain.items()))
