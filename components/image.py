"""The one place the component image is pinned. `thinkpipe compile` writes its reference into the
IR (every component's image and the pipeline's `image` parameter); a local `thinkpipe run` records
its own environment instead (see pipelines/cli/common.py, local_image_ref).

The reference is pinned by digest, so a cluster runs exactly the image that was built and tested,
whatever later happens to the tag, and SOURCE_SHA256 records which sources that image was built
from (model_src/image_source.py): `submit` refuses a checkout whose sources differ. `make image`
(image/build.sh --pin) builds the image from ./Dockerfile and rewrites DIGEST, TAG and
SOURCE_SHA256 below (image/pin.py), then recompiles pipelines/compiled/.

REPOSITORY is only the default: a profile's `cluster.image_repository` names the registry the
image was pushed to (`skopeo copy --preserve-digests`: same digest, any repository).
"""

REPOSITORY = "ghcr.io/thinkpipe/thinkpipe"
TAG = "0.1.0"
DIGEST = "sha256:2f71f0823e4f9caefe94895e1a8b2cf9398cd98204e354a40233f46b84ada78d"
# built from a clean clone of d4e1abd
SOURCE_SHA256 = "30540df727f2b101e968a46a6a09245d69e6ac8f33152d02eb492a3369543eeb"

BASE_IMAGE = f"{REPOSITORY}:{TAG}@{DIGEST}"


def image_reference(repository: str = "") -> str:
    """The pinned image in `repository` (default: REPOSITORY)."""
    return f"{repository or REPOSITORY}:{TAG}@{DIGEST}"
