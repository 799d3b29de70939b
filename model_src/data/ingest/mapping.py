"""The mapping file: which records a source holds and where each row field sits in a record.

    format: llava                       # jsonl | llava | parquet | hf_dataset | webdataset
    source: llava/train.json            # a file, a folder of shards, or a glob; relative to this file
    images_from: llava/images           # folder (or s3://bucket/prefix) that relative image paths name
    split: train                        # train | eval (a held-out set of your own) | {path: ...}
    domain: receipts                    # a built-in domain or one of curate.domains
    task: read_total
    answer_type: text
    licence: cc-by-4.0
    provenance: acme receipts v2
    difficulty: 0.5
    fields:                             # row field: where it is in a record (a dotted path, [i] for items)
      id: uid                           # optional: else the record's position in its file
      question: conversations[0].value
      answer: conversations[1].value
      images: image                     # a path, bytes, {"bytes": ..., "path": ...}, or a list of them
      caption: caption                  # optional (default: the question and answer)
      reasoning: rationale              # optional
      meta: extra                       # optional: a JSON object kept in the row's meta

Every top-level value may also be `{path: ...}` to read it from the record. Unknown keys, missing
keys and bad values fail with the mapping file's name and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "llava", "parquet", "hf_dataset", "webdataset")
ROW_FIELDS = ("id", "question", "answer", "images", "caption", "reasoning", "meta")
# what LLaVA's conversation records hold, so a LLaVA mapping needs no `fields`
LLAVA_FIELDS = {"id": "id", "question": "conversations[0].value", "answer": "conversations[1].value",
                "images": "image"}
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class MappingError(ValueError):
    """A mapping file that cannot be used, named with the key at fault."""


@dataclass(frozen=True)
class Mapping:
    path: Path
    format: str
    source: str
    domain: Any
    task: Any
    answer_type: Any
    split: Any = "train"
    images_from: str = ""
    licence: str = ""
    provenance: str = ""
    difficulty: Any = 0.5
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    def field_path(self, name: str) -> str | None:
        return self.fields.get(name) or (LLAVA_FIELDS.get(name) if self.format == "llava" else None)

    def resolve(self, relative: str) -> str:
        """A source or image location relative to the mapping file (s3:// URIs as they are)."""
        if relative.startswith("s3://") or Path(relative).is_absolute():
            return relative
        return str((self.path.parent / relative).resolve())


def load_mapping(path: str | Path) -> Mapping:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot read the mapping ({exc})") from exc
    if not isinstance(data, dict):
        raise MappingError(f"{path}: a mapping file is a YAML mapping")
    known = {f for f in Mapping.__dataclass_fields__ if f != "path"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MappingError(f"{path}: unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
    for key in ("format", "source", "domain", "task", "answer_type"):
        if key not in data:
            raise MappingError(f"{path}: missing key '{key}'")
    if data["format"] not in FORMATS:
        raise MappingError(f"{path}: format must be one of {', '.join(FORMATS)}, got {data['format']!r}")
    fields = data.get("fields") or {}
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise MappingError(f"{path}: 'fields' maps row fields to record paths (strings)")
    bad = sorted(set(fields) - set(ROW_FIELDS))
    if bad:
        raise MappingError(f"{path}: fields {bad} are not row fields ({', '.join(ROW_FIELDS)})")
    mapping = Mapping(path=path, **{k: v for k, v in data.items() if k != "fields"}, fields=fields)
    for needed in ("question", "answer", "images"):
        if mapping.field_path(needed) is None:
            raise MappingError(f"{path}: fields.{needed} is missing (where a record keeps its {needed})")
    for key in ("domain", "task", "answer_type", "split", "difficulty"):
        value = getattr(mapping, key)
        if isinstance(value, dict) and set(value) != {"path"}:
            raise MappingError(f"{path}: {key} is a value or {{path: ...}}, got {value!r}")
    if isinstance(mapping.split, str) and mapping.split not in ("train", "eval"):
        raise MappingError(f"{path}: split must be train, eval or {{path: ...}}, got {mapping.split!r}")
    return mapping


class Missing(KeyError):
    """A record has nothing at a mapped path."""


def get_path(record: Any, path: str) -> Any:
    """`conversations[1].value` of a record: dict keys and list items; Missing when absent.

    >>> get_path({"a": [{"b": 1}, {"b": 2}]}, "a[1].b")
    2
    """
    value = record
    for key, index in _STEP.findall(path):
        try:
            value = value[int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise Missing(path) from exc
    return value


def value_of(mapping_value: Any, record: Any) -> Any:
    """A top-level mapping value: a constant, or `{path: ...}` read from the record."""
    if isinstance(mapping_value, dict):
        return get_path(record, mapping_value["path"])
    return mapping_value
