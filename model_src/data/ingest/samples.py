"""Small corpora in every format `thinkpipe ingest` reads, with their mapping files: examples to
copy, and what the tests ingest (nothing is downloaded).

    thinkpipe ingest --write-samples /tmp/byod     # writes the sources and byod/*.yaml
    thinkpipe ingest --mapping /tmp/byod/hf.yaml ... --out /tmp/raw

Every sample is the same task in a domain of the user's own, `shapes`: how many shapes are in a
picture (scored by the counting verifier: `curate.domains={shapes: {verifier: counting,
answer_type: integer}}`). Each format also carries records that must be quarantined (a missing
image, a malformed line, an empty question), and `eval.yaml` is a held-out set of the user's own.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

DOMAIN_CONFIG = "curate.domains={shapes: {verifier: counting, answer_type: integer}}"
QUESTION = "How many shapes are in the picture?"
COLOURS = [(220, 40, 40), (40, 140, 60), (40, 70, 200), (230, 160, 20), (140, 40, 160)]


def picture(seed: int) -> tuple[bytes, int]:
    """A PNG of 1-9 shapes on a tinted background, and the count."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    count = rng.randint(1, 9)
    image = Image.new("RGB", (96, 96), tuple(rng.randint(200, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    cells = rng.sample(range(16), count)
    for cell in cells:
        x, y = cell % 4 * 24 + rng.randint(1, 5), cell // 4 * 24 + rng.randint(1, 5)
        box = (x, y, x + rng.randint(12, 17), y + rng.randint(12, 17))
        colour = rng.choice(COLOURS)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), count


def _mapping(folder: Path, name: str, body: dict) -> Path:
    import yaml

    path = folder / f"{name}.yaml"
    common = {"domain": "shapes", "task": "count_shapes", "answer_type": "integer", "licence": "cc0-1.0",
              "provenance": f"thinkpipe sample ({name})", "difficulty": 0.3}
    path.write_text(yaml.safe_dump({**common, **body}, sort_keys=False))
    return path


def write_samples(folder: str | Path, rows_per_format: int = 40, s3_images: str = "") -> list[Path]:
    """Every format's sample source under `folder`, and one mapping file per source; returns the
    mapping files. With `s3_images` (`s3://bucket/prefix`), the JSONL sample's images are uploaded
    there and named by `s3://` URI (boto3, credentials from the environment)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = iter(range(1, 100_000))
    mappings = []

    # Hugging Face `save_to_disk`, with an Image column
    from datasets import Dataset, Features, Image, Value

    pictures = [picture(next(seeds)) for _ in range(rows_per_format)]
    Dataset.from_dict({"image": [{"bytes": data, "path": None} for data, _ in pictures],
                       "question": [QUESTION] * len(pictures), "answer": [str(n) for _, n in pictures]},
                      features=Features({"image": Image(), "question": Value("string"), "answer": Value("string")})
                      ).save_to_disk(str(folder / "hf"))
    mappings.append(_mapping(folder, "hf", {"format": "hf_dataset", "source": "hf",
                                            "fields": {"question": "question", "answer": "answer", "images": "image"}}))

    # parquet shards with a Hugging Face-style image struct column, plus an empty question
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"uid": f"p{k}", "image": {"bytes": data, "path": f"p{k}.png"}, "prompt": QUESTION, "label": n}
               for k, (data, n) in enumerate(picture(next(seeds)) for _ in range(rows_per_format))]
    records[0]["prompt"] = ""
    (folder / "parquet").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), folder / "parquet" / "part-0.parquet")
    mappings.append(_mapping(folder, "parquet", {"format": "parquet", "source": "parquet",
                                                 "fields": {"id": "uid", "question": "prompt", "answer": "label",
                                                            "images": "image"}}))

    # LLaVA: a JSON array of conversations with image paths; one image file is missing
    (folder / "llava" / "images").mkdir(parents=True, exist_ok=True)
    conversations = []
    for k in range(rows_per_format):
        data, n = picture(next(seeds))
        (folder / "llava" / "images" / f"{k}.png").write_bytes(data)
        conversations.append({"id": f"l{k}", "image": f"{k}.png", "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": str(n)}]})
    (folder / "llava" / "images" / "0.png").unlink()
    (folder / "llava" / "train.json").write_text(json.dumps(conversations, indent=1))
    mappings.append(_mapping(folder, "llava", {"format": "llava", "source": "llava/train.json",
                                               "images_from": "llava/images"}))

    # WebDataset: tar shards of key.png + key.json
    (folder / "wds").mkdir(exist_ok=True)
    with tarfile.open(folder / "wds" / "shard-000000.tar", "w") as tar:
        for k in range(rows_per_format):
            data, n = picture(next(seeds))
            for extension, payload in (("png", data), ("json", json.dumps({"question": QUESTION, "answer": n}).encode())):
                info = tarfile.TarInfo(f"sample{k:05d}.{extension}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    mappings.append(_mapping(folder, "wds", {"format": "webdataset", "source": "wds",
                                             "fields": {"question": "json.question", "answer": "json.answer",
                                                        "images": "png"}}))

    # JSONL with image paths (local, or s3:// URIs), one malformed line; and a held-out set
    for name, split in (("jsonl", "train"), ("eval", "eval")):
        (folder / name / "images").mkdir(parents=True, exist_ok=True)
        lines = []
        for k in range(rows_per_format):
            data, n = picture(next(seeds))
            (folder / name / "images" / f"{k}.png").write_bytes(data)
            location = f"images/{k}.png"
            if s3_images and name == "jsonl":
                location = _upload(data, f"{s3_images.rstrip('/')}/{name}/{k}.png")
            lines.append(json.dumps({"q": QUESTION, "a": n, "img": location, "meta": {"annotator": k % 3}}))
        if name == "jsonl":
            lines.insert(3, '{"q": "How many", "a": ')  # a line cut short
        (folder / name / "items.jsonl").write_text("\n".join(lines) + "\n")
        mappings.append(_mapping(folder, name, {"format": "jsonl", "source": f"{name}/items.jsonl", "split": split,
                                                "images_from": name,
                                                "fields": {"question": "q", "answer": "a", "images": "img",
                                                           "meta": "meta"}}))
    return mappings


def _upload(data: bytes, uri: str) -> str:
    import boto3

    from model_src.storage import split_uri

    bucket, key = split_uri(uri)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    return uri
