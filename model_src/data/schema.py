"""The one row format of every thinkpipe dataset, raw and curated.

Every domain writes the same columns, so curation, training, RL and evaluation read one shape
(after verl's fixed RL row format):

| column      | type          | meaning                                                          |
|-------------|---------------|------------------------------------------------------------------|
| id          | string        | unique across the corpus, e.g. `stem-arith-train-000042`         |
| domain      | string        | `stem chart ocr grounding gui counting video digits`             |
| task        | string        | generator task inside the domain, e.g. `arithmetic`, `digit_sum` |
| split       | string        | `train` or `eval`: eval rows come from a disjoint seed           |
| images      | list<binary>  | PNG bytes, one per image; a video is its frames in order         |
| frame_times | list<double>  | seconds of each frame for video rows, empty otherwise            |
| question    | string        | the user turn's text                                             |
| answer      | string        | canonical answer string (what goes inside the box)               |
| answer_type | string        | one of ANSWER_TYPES; `choice` rows are scored by letter          |
| difficulty  | float         | generator's prior in [0, 1] (0 easy)                             |
| source      | string        | provenance: `generated:arithmetic`, `sklearn:load_digits`, ...   |
| caption     | string        | factual description, for pretraining                            |
| reasoning   | string        | the steps the generator knows, for long-CoT SFT                 |
| meta        | string (JSON) | the generator's facts (values, boxes, labels): factual recaptions |

Curated tables add `stage_split` (pretrain/sft/rl/eval), `caption_source` (original/recaptioned)
and `sample_weight` (domain/concept balance); the quarantine table adds `reason` and `detail`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("domain", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("images", pa.list_(pa.binary())),
        ("frame_times", pa.list_(pa.float64())),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("answer_type", pa.string()),
        ("difficulty", pa.float64()),
        ("source", pa.string()),
        ("caption", pa.string()),
        ("reasoning", pa.string()),
        ("meta", pa.string()),
    ]
)

# answer_type -> what a well-formed answer looks like (curation checks it, GE validates it)
ANSWER_PATTERNS = {
    "integer": r"^-?\d+$",
    "number": r"^-?\d+(?:\.\d+)?$",
    "year": r"^[12]\d{3}$",
    # an option label (A-Z, or a number for numbered options); several, comma-separated, for multi-select
    "choice": r"^(?:[A-Z]|[1-9][0-9]?)(?:, ?(?:[A-Z]|[1-9][0-9]?))*$",
    "text": r"^\S(?:.*\S)?$",
    "box": r"^\[\d+,\d+,\d+,\d+\]$",  # range 0-999 is checked by curation
    # thinkpipe's {"action": ..., "box": [...]} or GLM-V's {"action_type": ..., "box_2d": [[...]]}
    "action": r'^\{.*"action(?:_type)?": ?"[a-z_]+".*\}$',
    "seconds": r"^\d+(?:\.\d+)?$",
}
ANSWER_TYPES = tuple(ANSWER_PATTERNS)
DOMAINS = ("stem", "chart", "ocr", "grounding", "gui", "counting", "video", "digits")

COLUMNS = tuple(ROW_SCHEMA.names)

# The split files curation writes, one per training stage plus the held-out evaluation set.
SPLITS = ("pretrain", "sft", "rl", "eval")
SPLIT_FILE = "data.parquet"  # each split is a folder holding this file (a KFP Dataset artifact)


def split_path(folder: str | Path) -> Path:
    return Path(folder) / SPLIT_FILE


def read_split(folder: str | Path) -> list[dict]:
    """The rows of one curated split folder (what every training stage reads)."""
    import pyarrow.parquet as pq

    return pq.read_table(split_path(folder)).to_pylist()


def reward_domain(row: dict) -> str:
    """The domain a row's reward is reported under (and the judge configured by): its domain, or
    `choice` for multiple-choice rows.

    >>> reward_domain({"domain": "chart", "answer_type": "choice"})
    'choice'
    """
    return "choice" if row.get("answer_type") == "choice" else row["domain"]


def row_verifier(row: dict) -> str:
    """The verifier a row is scored with: the `verifier` curation wrote (a user's domain names its
    own, `curate.domains`), else the reward domain's.

    >>> row_verifier({"domain": "receipts", "answer_type": "text", "verifier": "ocr"})
    'ocr'
    >>> row_verifier({"domain": "chart", "answer_type": "choice"})
    'choice'
    """
    return row.get("verifier") or reward_domain(row)


def verifier_for(domain: str, answer_type: str, user_domains: dict) -> str:
    """What curation writes into a kept row's `verifier`: `choice` for multiple-choice rows, a
    user domain's configured verifier, else the built-in domain's own."""
    if answer_type == "choice":
        return "choice"
    configured = user_domains.get(domain)
    return configured.verifier if configured is not None else domain


def format_response(reasoning: str, answer: str) -> str:
    """The long-CoT response format of docs/recipe.md section 3, with exactly one box in the answer.

    >>> format_response("2 + 3 = 5.", "5")
    '<think>2 + 3 = 5.</think><answer><|begin_of_box|>5<|end_of_box|></answer>'
    """
    return f"<think>{reasoning}</think><answer><|begin_of_box|>{answer}<|end_of_box|></answer>"
