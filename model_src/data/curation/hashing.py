"""Content and perceptual hashes, and the keys the global join compares (curation/join.py).

Near duplicates are found by the pigeonhole principle: a 256-bit hash split into `max_bits + 1`
bands; two hashes within `max_bits` bits of each other agree exactly on at least one band, so only
rows sharing a band value are compared (banded LSH, exact for Hamming distance).
"""

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


def training_key(images: list[bytes]) -> str:
    """A row's key for "a model trained on this image": its images' content hash, 16 hex digits (the
    curate stage lists the keys of every training row; the promotion gate reads the champion's)."""
    return content_hash(images)[:16]


PHASH_BITS = 256


def row_phash(images: list[Image.Image]) -> int:
    """256-bit perceptual hash (imagehash's DCT pHash, 16x16) of a row's images side by side.

    The 64-bit default cannot tell "3 + 4" from "5 + 2" (measured: 2-4 bits apart, the same as
    a re-render); at 256 bits re-renders stay at 0 and different expressions are >= 30 apart.
    """
    import imagehash
    import numpy as np

    tiles = [image.convert("L").resize((64, 64), Image.Resampling.BILINEAR) for image in images]
    strip = Image.new("L", (64 * len(tiles), 64))
    for k, tile in enumerate(tiles):
        strip.paste(tile, (64 * k, 0))
    # the bits as one integer, row-major and most significant first (what int(str(hash), 16) gives,
    # without the hex string: a quarter of the hash's time)
    return int.from_bytes(np.packbits(imagehash.phash(strip, hash_size=16).hash.flatten()).tobytes(), "big")


def key(*parts: str) -> bytes:
    """A 16-byte key of text parts (what the join groups and matches on)."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=16).digest()


def band_edges(max_bits: int, bits: int = PHASH_BITS) -> list[tuple[int, int]]:
    """The `max_bits + 1` bit ranges [lo, hi) of the pigeonhole bands."""
    bands = max_bits + 1
    edges = [round(bits * k / bands) for k in range(bands + 1)]
    return list(zip(edges, edges[1:]))


def band_keys(phash: int, max_bits: int) -> list[int]:
    """One signed 64-bit key per band: a hash of the band's number and value (a band can be wider
    than 64 bits; a collision of keys is harmless, the join re-checks the distance)."""
    return [int.from_bytes(hashlib.blake2b(f"{k}:{(phash >> lo) & ((1 << (hi - lo)) - 1)}".encode(),
                                           digest_size=8).digest(), "big", signed=True)
            for k, (lo, hi) in enumerate(band_edges(max_bits))]


def phash_words(phash: int) -> list[int]:
    """The hash as four signed 64-bit words (how parquet and DuckDB store it; XOR and popcount
    of the words give the Hamming distance)."""
    return [int.from_bytes(((phash >> (64 * k)) & (2**64 - 1)).to_bytes(8, "big"), "big", signed=True) for k in range(4)]
