"""The image is the code: a content hash of the sources the component image carries.

`image/build.sh` (`make image`) labels the image it builds with this hash
(`io.thinkpipe.source-sha256`) and `image/pin.py` records it beside the digest in
components/image.py. Before a run is sent to a cluster, `thinkpipe submit` / `schedule` compare
it with the hash of this checkout and refuse when they differ: the IR would name this checkout's
git commit as the code while the pods run an image built from other code. `thinkpipe compile`
warns. Standard library only: build.sh runs it with the host's python3 (`python3 -m
model_src.image_source`) before any venv exists.

What is hashed is what the Dockerfile copies and installs from, less the pin itself
(components/image.py) and the compiled IR (pipelines/compiled/, which names the pin): an image
cannot contain its own digest, so pinning and recompiling must not make it stale.

    >>> len(source_sha256())
    64
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from model_src import REPO_ROOT

SOURCES = ("Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml",
           "model_src", "components", "pipelines", "configs")
NOT_HASHED = ("components/image.py", "pipelines/compiled/")
LABEL = "io.thinkpipe.source-sha256"


def source_files(root: Path = REPO_ROOT) -> list[str]:
    """The hashed files, as sorted POSIX paths relative to `root`."""
    found = []
    for top in SOURCES:
        path = root / top
        for file in ([path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []):
            rel = file.relative_to(root).as_posix()
            if (file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc"
                    and not any(rel == n or (n.endswith("/") and rel.startswith(n)) for n in NOT_HASHED)):
                found.append(rel)
    return sorted(found)


def source_sha256(root: Path = REPO_ROOT) -> str:
    """sha256 over every hashed file's path and content hash: a change to any of them changes it."""
    digest = hashlib.sha256()
    for rel in source_files(root):
        digest.update(f"{rel}\0{hashlib.sha256((root / rel).read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def stale_image(pinned_sha256: str, reference: str, root: Path = REPO_ROOT) -> str:
    """Why the pinned image does not hold this checkout's code, or '' when it does."""
    current = source_sha256(root)
    if pinned_sha256 == current:
        return ""
    built = f"sources {pinned_sha256[:12]}" if pinned_sha256 else "sources it does not record"
    return (f"the pinned image {reference} was built from {built}, but this checkout's sources are "
            f"{current[:12]} (model_src, components, pipelines, configs, the lock, the Dockerfile): its pods "
            f"would run other code than the git commit the run records. Build and pin the image "
            f"(`make image`, i.e. image/build.sh --pin), then `make compile`")


if __name__ == "__main__":
    print(source_sha256(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT))
