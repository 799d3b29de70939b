"""Trains a tiny Glm4v with checkpoints; run by tests/test_resume.py, which SIGKILLs it mid-run.

    python tests/resume_driver.py DATA_DIR CHECKPOINT_DIR RESULT_JSON
Prints `step N` after every step; writes the final loss and a parameter checksum to RESULT_JSON.
"""

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch

from model_src.config import TrainConfig, load_config
from model_src.model.build import build_model, build_processor, train_tokenizer
from model_src.model.inputs import sft_example
from model_src.train.supervised import train_supervised


def main(data_dir: str, checkpoint_dir: str, result: str) -> None:
    torch.set_num_threads(1)
    rows = pq.read_table(Path(data_dir) / "stem-train.parquet").to_pylist()
    cfg = load_config("tiny")
    tokenizer = train_tokenizer([t for r in rows for t in (r["caption"], r["question"], r["reasoning"])], 400)
    processor = build_processor(tokenizer, cfg.model)
    model = build_model(cfg.model, tokenizer, seed=0)
    train_cfg = TrainConfig(num_steps=60, batch_size=4, lr=3e-3, warmup_steps=4, log_every=10, checkpoint_every=5)
    summary = train_supervised(model, processor, [sft_example(processor, r) for r in rows], train_cfg, seed=0,
                               log=lambda m, s: print(f"step {s} loss {m['loss']:.6f}", flush=True),
                               checkpoint_dir=Path(checkpoint_dir), checkpoint_meta={"run_id": "test"})
    checksum = float(sum(p.double().sum() for p in model.parameters()))
    Path(result).write_text(json.dumps({**summary, "checksum": checksum}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
