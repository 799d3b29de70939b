"""The one row format of every thinkpipe dataset, raw and curated.

Every domain writes the same columns, so curation, training, RL and evaluation read one shape
(after verl's fixed RL row format):

| column      | type          | meaning                                                          |
|-------------|---------------|------------------------------------------------------------------|
| id          | string        | unique across the corpus, e.g. `stem-arith-000042`               |
| domain      | string        | reward/eval domain: `stem`, `digits`, ... (selects the verifier)  |
| task        | string        | generator task inside the domain, e.g. `arithmetic`, `digit_sum` |
| images      | list<binary>  | PNG bytes, one entry per image                                   |
| question    | string        | the user turn's text                                             |
| answer      | string        | canonical answer string (what goes inside the box)               |
| answer_type | string        | `integer`, `number`, `text`, ...                                 |
| difficulty  | float         | generator's prior in [0, 1] (0 easy)                             |
| source      | string        | provenance: `generated:arithmetic`, `sklearn:load_digits`, ...   |
| caption     | string        | factual description, for pretraining                            |
| reasoning   | string        | the steps the generator knows, for long-CoT SFT                 |

Curated splits add nothing; the quarantine table adds `reason`.
"""

from __future__ import annotations

import pyarrow as pa

ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("domain", pa.string()),
        ("task", pa.string()),
        ("images", pa.list_(pa.binary())),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("answer_type", pa.string()),
        ("difficulty", pa.float64()),
        ("source", pa.string()),
        ("caption", pa.string()),
        ("reasoning", pa.string()),
    ]
)

COLUMNS = tuple(ROW_SCHEMA.names)

# The split files curation writes, one per training stage plus the held-out evaluation set.
SPLITS = ("pretrain", "sft", "rl", "eval")


def format_response(reasoning: str, answer: str) -> str:
    """The long-CoT response format of RECIPE.md section 3, with exactly one box in the answer.

    >>> format_response("2 + 3 = 5.", "5")
    '<think>2 + 3 = 5.</think><answer><|begin_of_box|>5<|end_of_box|></answer>'
    """
    return f"<think>{reasoning}</think><answer><|begin_of_box|>{answer}<|end_of_box|></answer>"
