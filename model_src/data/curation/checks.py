"""One row's structural checks: ids, text, answer format, difficulty, meta, frames and images.
Each failure is a (reason, detail) pair; the reasons are listed in model_src/data/curate.py."""

from __future__ import annotations

import io
import json
import math
import re
import warnings

from PIL import Image

from model_src.config import CurateConfig
from model_src.data.curation.reading import TEXT_COLUMNS
from model_src.data.schema import ANSWER_PATTERNS, DOMAINS

REQUIRED_TEXT = ("question", "answer", "domain", "task", "answer_type")
_ANSWER_RE = {kind: re.compile(pattern) for kind, pattern in ANSWER_PATTERNS.items()}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls but tab, newline, CR


# modes training decodes as they are (`Image.convert("RGB")` is faithful for them)
READY_MODES = ("RGB", "L", "RGBA", "P")
# modes real corpora have that `convert("RGB")` would distort (16-bit clipped to white) or that
# carry an alpha or ink channel: converted here, and the row keeps the converted PNG
CONVERTED_MODES = ("CMYK", "YCbCr", "LA", "La", "PA", "1", "I;16", "I;16B", "I;16L", "I")


def _to_rgb(image: Image.Image) -> Image.Image | None:
    """An RGB copy of a CONVERTED_MODES image; None when no safe conversion exists (16-bit data
    outside 0-65535)."""
    if image.mode.startswith("I"):
        import numpy as np

        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            return None
        scale = 257 if values.size and values.max() > 255 else 1  # 16-bit data to 8 bits; 8-bit data kept
        return Image.fromarray((values // scale).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("LA", "La", "PA"):  # alpha composited onto white, as a viewer shows it
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def check_image(data: bytes | None, cfg: CurateConfig = CurateConfig()
                ) -> tuple[str | None, Image.Image | None, bytes | None]:
    """(None, decoded RGB image, bytes to keep) for a sane image, else (quarantine reason, None,
    None). The bytes to keep are `data` itself, or a PNG of the converted image when the original
    needed converting (a mode in CONVERTED_MODES, or an EXIF orientation to apply). Size, pixel
    count and aspect ratio are read from the header before any pixel is decoded."""
    from PIL import ImageOps

    if not data:
        return "image_empty", None, None
    # Pillow refuses a PNG whose header says 0 pixels wide or high; read the header ourselves so
    # the reason says what is wrong
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and (
            int.from_bytes(data[16:20], "big") == 0 or int.from_bytes(data[20:24], "big") == 0):
        return "image_zero_size", None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width == 0 or height == 0:
                    return "image_zero_size", None, None
                if min(width, height) < cfg.min_image_side:
                    return "image_too_small", None, None
                if width * height > cfg.max_image_pixels:
                    return "image_too_many_pixels", None, None
                if max(width, height) / min(width, height) > cfg.max_aspect_ratio:
                    return "image_aspect_ratio", None, None
                if probe.mode not in READY_MODES + CONVERTED_MODES:
                    return "image_mode", None, None
                probe.load()
                rotated = probe.getexif().get(0x0112, 1) not in (0, 1)  # EXIF orientation: 1 is upright
                oriented = ImageOps.exif_transpose(probe) if rotated else probe
                if not rotated and probe.mode in READY_MODES:
                    return None, probe.convert("RGB"), data
                image = oriented if oriented.mode in READY_MODES else _to_rgb(oriented)
                if image is None:
                    return "image_mode", None, None
                rgb, buffer = image.convert("RGB"), io.BytesIO()
                rgb.save(buffer, format="PNG")
                return None, rgb, buffer.getvalue()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image_too_many_pixels", None, None
    except Exception:  # noqa: BLE001 - any decode failure is a corrupt image
        return "image_corrupt", None, None


def check_answer(answer: str, answer_type: str) -> tuple[str, str] | None:
    """None when the answer has its type's form, else (reason, detail).

    >>> check_answer("[10,20,30,40]", "box") is None
    True
    >>> check_answer("[30,20,10,40]", "box")
    ('box_out_of_range', 'answer: x2 < x1 or y2 < y1')
    >>> check_answer("12a", "integer")
    ('answer_malformed', 'answer: not a integer')
    """
    pattern = _ANSWER_RE.get(answer_type)
    if pattern is None:
        return "answer_type_unknown", f"answer_type: {answer_type!r}"
    if not pattern.match(answer):
        return "answer_malformed", f"answer: not a {answer_type}"
    box = None
    if answer_type == "box":
        box = json.loads(answer)
    elif answer_type == "action":
        try:
            action = json.loads(answer)
        except ValueError:
            return "answer_malformed", "answer: action is not JSON"
        if not isinstance(action, dict):
            return "answer_malformed", "answer: action is not a JSON object"
        box = action.get("box")
        if "box_2d" in action:  # GLM-V nests the box: [[x1, y1, x2, y2]]
            nested = action["box_2d"]
            box = nested[0] if isinstance(nested, list) and len(nested) == 1 else "not nested"
        if action.get("action") in ("click", "type") and box is None:
            return "answer_malformed", "answer: click/type action without a box"
    if box is not None:
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)):
            return "answer_malformed", "answer: box is not 4 integers"
        if not all(0 <= v <= 999 for v in box):
            return "box_out_of_range", "answer: box value outside 0-999"
        if box[2] < box[0] or box[3] < box[1]:
            return "box_out_of_range", "answer: x2 < x1 or y2 < y1"
    return None


def check_row(row: dict, cfg: CurateConfig = CurateConfig()
              ) -> tuple[tuple[str, str] | None, list[Image.Image], list[bytes]]:
    """((reason, detail) or None, decoded RGB images, the image bytes the kept row carries: the
    originals, or PNGs of those `check_image` had to convert)."""
    if not row.get("id"):
        return ("id_missing", "id"), [], []
    if row.get("_bad_utf8"):
        return ("text_not_utf8", row["_bad_utf8"]), [], []
    for column in REQUIRED_TEXT:
        value = row[column]
        if value is None or not value.strip():
            return (f"{column}_missing", column), [], []
    for column in TEXT_COLUMNS:
        if row[column] is not None and len(row[column]) > cfg.max_text_chars:
            return (f"{column}_too_long", f"{column}: {len(row[column])} chars > {cfg.max_text_chars}"), [], []
        if row[column] and _CONTROL.search(row[column]):  # NUL, escape sequences, ...: not text to train on
            return ("text_control_chars", f"{column}: U+{ord(_CONTROL.search(row[column]).group()):04X}"), [], []
    if row["split"] not in ("train", "eval"):
        return ("split_invalid", f"split: {row['split']!r}"), [], []
    user_domain = cfg.domains.get(row["domain"])
    if row["domain"] not in DOMAINS and user_domain is None:
        return ("domain_unknown", f"domain: {row['domain']!r} (built-in: {', '.join(DOMAINS)}; "
                                  "add yours under curate.domains)"), [], []
    if user_domain is not None and row["answer_type"] not in (user_domain.answer_type, "choice"):
        return ("answer_type_mismatch", f"answer_type: {row['answer_type']!r}, but curate.domains."
                                        f"{row['domain']}.answer_type is {user_domain.answer_type!r}"), [], []
    problem = check_answer(row["answer"], row["answer_type"])
    if problem:
        return problem, [], []
    if row["difficulty"] is None or not 0.0 <= row["difficulty"] <= 1.0:
        return ("difficulty_out_of_range", f"difficulty: {row['difficulty']}"), [], []
    try:
        if not isinstance(json.loads(row["meta"] or "{}"), dict):
            raise ValueError
    except ValueError:
        return ("meta_invalid", "meta: not a JSON object"), [], []
    if not row["images"]:
        return ("image_missing", "images"), [], []
    frame_times = row["frame_times"] or []
    if not all(t is not None and math.isfinite(t) and t >= 0 for t in frame_times):
        return ("frame_times_invalid", "frame_times: a time that is not a finite number >= 0"), [], []
    if frame_times and (len(frame_times) != len(row["images"]) or any(b <= a for a, b in zip(frame_times, frame_times[1:]))):
        return ("frame_times_mismatch", "frame_times: one increasing time per frame"), [], []
    decoded, kept = [], []
    for k, data in enumerate(row["images"]):
        reason, image, data_kept = check_image(data, cfg)
        if reason:
            return (reason, f"images[{k}]"), [], []
        decoded.append(image)
        kept.append(data_kept)
    return None, decoded, kept
