"""One generator module per domain: `rows(rng, n, split)` and `factual_caption(task, meta)`."""

from model_src.data.domains import chart, counting, digits, grounding, gui, ocr, stem, video

# order is part of the seed derivation: append new domains, never reorder
DOMAINS = {"stem": stem, "chart": chart, "ocr": ocr, "grounding": grounding, "gui": gui,
           "counting": counting, "video": video, "digits": digits}
