"""The one place the component image is named. `thinkpipe compile` writes BASE_IMAGE into the IR
(every component's `base_image` and the pipeline's `image` parameter); a local `thinkpipe run`
records its own environment instead (see pipelines/cli.py).

The reference is pinned by digest, so a cluster runs exactly the image that was built and tested,
whatever later happens to the tag. `make image` (image/build.sh) builds the image from ./Dockerfile
and prints its digest; `python3 image/pin.py --digest sha256:...` rewrites DIGEST (and TAG with
--tag) below; `make compile` then updates pipelines/compiled/training.yaml.
"""

REPOSITORY = "ghcr.io/thinkpipe/thinkpipe"
TAG = "0.1.0"
DIGEST = "sha256:2f71f0823e4f9caefe94895e1a8b2cf9398cd98204e354a40233f46b84ada78d"

BASE_IMAGE = f"{REPOSITORY}:{TAG}@{DIGEST}"
