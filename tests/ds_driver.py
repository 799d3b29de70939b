"""Train the tiny model through DeepSpeed for a few steps; rank 0 writes losses and weights.

    python -m torch.distributed.run --nproc_per_node 2 tests/ds_driver.py DATA OUT [ZERO_STAGE] [PACK_LENGTH]
        [CHECKPOINT_DIR CRASH_AFTER_STEP]

With CHECKPOINT_DIR, DeepSpeed checkpoints every 2 steps there (and an existing one is resumed);
CRASH_AFTER_STEP > 0 makes the process die right after that step (one process only).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from model_src.config import load_config  # noqa: E402
from model_src.model.build import build_model, build_processor, train_tokenizer  # noqa: E402
from model_src.model.inputs import sft_example  # noqa: E402
from model_src.train.distributed import parse_local_rank, rank_and_world  # noqa: E402
from model_src.train.supervised import train_supervised  # noqa: E402


def main(argv: list[str]) -> None:
    data, out, *rest = parse_local_rank(argv)
    zero_stage = int(rest[0]) if rest else 0
    pack_length = int(rest[1]) if len(rest) > 1 else 0
    checkpoint_dir = Path(rest[2]) if len(rest) > 2 else None
    crash_after = int(rest[3]) if len(rest) > 3 else 0
    rows = [r for f in sorted(Path(data).glob("*-train.parquet")) for r in pq.read_table(f).to_pylist()]
    cfg = load_config("tiny", ["sft.deepspeed=true", f"sft.zero_stage={zero_stage}", f"sft.pack_length={pack_length}",
                               "sft.batch_size=4", "sft.num_steps=6", "sft.warmup_steps=0",
                               f"sft.checkpoint_every={2 if checkpoint_dir else 0}",
                               f"sft.micro_batch_size={os.environ.get('DS_DRIVER_MICRO_BATCH', '0')}"])
    tokenizer = train_tokenizer([t for r in rows for t in (r["caption"], r["question"], r["reasoning"])], 400)
    processor = build_processor(tokenizer, cfg.model)
    model = build_model(cfg.model, tokenizer, seed=11)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []

    def log(metrics: dict, step: int) -> None:
        losses.append(metrics["loss"])
        if crash_after and step + 1 == crash_after:
            os._exit(3)  # die like a killed process: no cleanup, no final save

    train_supervised(model, processor, [sft_example(processor, r) for r in rows], cfg.sft, seed=2, log=log,
                     desc="ds", checkpoint_dir=checkpoint_dir)
    rank, world = rank_and_world()
    if rank == 0:
        torch.save({"initial": initial, "final": {k: v.detach().cpu() for k, v in model.state_dict().items()}},
                   Path(out) / "weights.pt")
        (Path(out) / "result.json").write_text(json.dumps({"losses": losses, "world": world}))


if __name__ == "__main__":
    main(sys.argv[1:])
