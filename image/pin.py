#!/usr/bin/env python3
"""Pin a built image in components/image.py, the one place the component image is named.

    python3 image/pin.py --digest sha256:<64 hex> [--tag 0.1.0] [--source-sha256 <64 hex>]
                         [--repository ghcr.io/thinkpipe/thinkpipe]
    python3 image/pin.py --digest-file image/out/digest --source-sha256 <64 hex>

`image/build.sh` (`make image`) prints the digest of the image it exported to image/out/oci: the
manifest digest a registry serves after `skopeo copy --preserve-digests oci:image/out/oci:<tag>
docker://<repository>:<tag>`. After pinning, `make compile` writes the new reference into the IR.
`--source-sha256` is the image's `io.thinkpipe.source-sha256` label, the content hash of the sources
it was built from (model_src/image_source.py); build.sh --pin passes it. Standard library only;
rewrites the REPOSITORY / TAG / DIGEST / SOURCE_SHA256 assignments and nothing else.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

IMAGE_PY = Path(__file__).resolve().parent.parent / "components" / "image.py"
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
SOURCE_RE = re.compile(r"[0-9a-f]{64}")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
REPOSITORY_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+")


def rewrite(text: str, **values: str) -> str:
    """Replace `NAME = "..."` for each given NAME; each must occur exactly once."""
    for name, value in values.items():
        pattern = re.compile(rf'^{name} = "[^"\n]*"', re.MULTILINE)
        text, count = pattern.subn(f'{name} = "{value}"', text)
        if count != 1:
            raise SystemExit(f"pin: expected one `{name} = \"...\"` line in {IMAGE_PY}, found {count}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--digest", help="sha256:<64 hex>, the image's manifest digest")
    source.add_argument("--digest-file", type=Path, help="a file holding the digest (buildah push --digestfile)")
    parser.add_argument("--tag", help="the tag to name beside the digest (default: keep)")
    parser.add_argument("--repository", help="the image repository (default: keep)")
    parser.add_argument("--source-sha256", help="the content hash of the sources the image was built from "
                                                "(its io.thinkpipe.source-sha256 label)")
    parser.add_argument("--file", type=Path, default=IMAGE_PY, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    digest = (args.digest if args.digest is not None else args.digest_file.read_text()).strip()
    if not DIGEST_RE.fullmatch(digest):
        parser.error(f"not a sha256 digest: {digest!r} (want sha256:<64 lowercase hex>)")
    values = {"DIGEST": digest}
    if args.tag is not None:
        if not TAG_RE.fullmatch(args.tag):
            parser.error(f"not a valid image tag: {args.tag!r}")
        values["TAG"] = args.tag
    if args.source_sha256 is not None:
        if not SOURCE_RE.fullmatch(args.source_sha256):
            parser.error(f"not a source hash: {args.source_sha256!r} (want 64 lowercase hex)")
        values["SOURCE_SHA256"] = args.source_sha256
    if args.repository is not None:
        if not REPOSITORY_RE.fullmatch(args.repository):
            parser.error(f"not a valid image repository: {args.repository!r}")
        values["REPOSITORY"] = args.repository

    before = args.file.read_text()
    after = rewrite(before, **values)
    if after != before:
        args.file.write_text(after)
    namespace: dict = {}
    exec(compile(after, str(args.file), "exec"), namespace)  # the module is plain constants
    print(f"pin: {args.file.name}: BASE_IMAGE = {namespace['BASE_IMAGE']}")
    print("pin: run `make compile` so pipelines/compiled/training.yaml names it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
