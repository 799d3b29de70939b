"""Content and perceptual hashes, and the index that finds exact and near duplicates."""

from __future__ import annotations

import hashlib

from PIL import Image


def normalize_text(text: str) -> str:
    return " ".join(text.lower().split())


def content_hash(images: list[bytes]) -> str:
    digest = hashlib.sha256()
    for data in images:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


PHASH_BITS = 256


def row_phash(images: list[Image.Image]) -> int:
    """256-bit perceptual hash (imagehash's DCT pHash, 16x16) of a row's images side by side.

    The 64-bit default cannot tell "3 + 4" from "5 + 2" (measured: 2-4 bits apart, the same as
    a re-render); at 256 bits re-renders stay at 0 and different expressions are >= 30 apart.
    """
    import imagehash

    tiles = [image.convert("L").resize((64, 64), Image.Resampling.BILINEAR) for image in images]
    strip = Image.new("L", (64 * len(tiles), 64))
    for k, tile in enumerate(tiles):
        strip.paste(tile, (64 * k, 0))
    return int(str(imagehash.phash(strip, hash_size=16)), 16)


class NearDupIndex:
    """Earlier entries whose hash is within `max_bits` bits of a query, under a grouping key.

    Pigeonhole: split the hash into `max_bits + 1` bands; two hashes that differ in at most
    `max_bits` bits agree exactly on at least one band, so only rows sharing a band are compared.

    >>> index = NearDupIndex(max_bits=2)
    >>> index.add("q", 0b1011, "first")
    >>> index.find("q", 0b1000), index.find("q", 0b0100), index.find("other", 0b1011)
    ('first', None, None)
    """

    def __init__(self, max_bits: int, bits: int = PHASH_BITS):
        self.max_bits = max_bits
        bands = max_bits + 1
        edges = [round(bits * k / bands) for k in range(bands + 1)]
        self.masks = [(((1 << (hi - lo)) - 1) << lo) for lo, hi in zip(edges, edges[1:])]
        # compact on purpose (this index is most of curation's memory): one int slot per band,
        # pointing at entry numbers; a collision of slots is harmless, candidates are re-checked
        self.values: list[int] = []
        self.ids: list[str] = []
        self.table: dict[int, int | list[int]] = {}

    def _slots(self, key, value: int):
        return (hash((key, band, value & mask)) for band, mask in enumerate(self.masks))

    def find(self, key, value: int) -> str | None:
        for slot in self._slots(key, value):
            entry = self.table.get(slot)
            for i in (entry if isinstance(entry, list) else () if entry is None else (entry,)):
                if (value ^ self.values[i]).bit_count() <= self.max_bits:
                    return self.ids[i]
        return None

    def add(self, key, value: int, row_id: str) -> None:
        i = len(self.values)
        self.values.append(value)
        self.ids.append(row_id)
        for slot in self._slots(key, value):
            entry = self.table.get(slot)
            if entry is None:
                self.table[slot] = i
            elif isinstance(entry, list):
                entry.append(i)
            else:
                self.table[slot] = [entry, i]




class Deduplicator:
    """Rows seen so far, by exact content (images, question, answer) and by perceptual hash under
    the same question and answer; `duplicate_of` says which earlier row a new one repeats."""

    def __init__(self, near_dup_hamming: int):
        self.exact: dict[bytes, str] = {}
        self.near = NearDupIndex(near_dup_hamming)

    def duplicate_of(self, row: dict, image_digest: str, phash: int) -> tuple[str, str] | None:
        """(reason, detail) when `row` repeats an earlier row; else records it and returns None."""
        key = (normalize_text(row["question"]), normalize_text(row["answer"]), len(row["images"]))
        digest = hashlib.sha256("\x00".join((image_digest, *key[:2])).encode()).digest()[:16]
        if digest in self.exact:
            return "exact_duplicate", f"duplicate of {self.exact[digest]}"
        twin = self.near.find(key, phash)
        if twin is not None:
            return "near_duplicate", f"near duplicate of {twin}"
        self.exact[digest] = row["id"]
        self.near.add(key, phash, row["id"])
        return None
