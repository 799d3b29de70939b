#!/usr/bin/env bash
# Build thinkpipe's component image without a daemon and without a registry (`make image`).
#
#   1. base      Debian bookworm made from Debian packages (debootstrap minbase + python3.11,
#                python3.11-venv, python3-distutils, ca-certificates), imported into buildah storage as
#                $THINKPIPE_BASE (localhost/thinkpipe-base:bookworm). Skipped when that image exists.
#   2. wheels    image/wheels/: one wheel per pin of requirements.lock, fetched by this host's
#                Python 3.11 pip (`pip wheel --no-deps`, whatever index/find-links the host's pip
#                config names). Skipped when it was made from the current lock. The Dockerfile
#                mounts it; the build itself reaches no package index.
#   3. image     `buildah bud` of ./Dockerfile with BASE_IMAGE=$THINKPIPE_BASE, tagged
#                $THINKPIPE_IMAGE (localhost/thinkpipe:<version from pyproject.toml>).
#   4. export    `buildah push` to an OCI layout, image/out/oci (layers gzip-compressed, as a
#                registry stores them); its manifest digest is what components/image.py pins.
#                Publish that very manifest with
#                  skopeo copy --preserve-digests oci:image/out/oci:<version> docker://<repository>:<version>
#
# The image is the code: it is labelled io.thinkpipe.source-sha256 with the content hash of the
# sources it carries (model_src/image_source.py: Dockerfile, lock, pyproject and the sources the
# Dockerfile copies, less the pin and the compiled IR); `--pin` records that hash beside the digest,
# and `thinkpipe submit` refuses a checkout whose sources hash otherwise.
#
# Usage: image/build.sh [--reuse] [--no-export] [--pin] [--wheels-only] [--source-hash]
#   --reuse        skip steps 1-3 when $THINKPIPE_IMAGE was built from the same sources (its label
#                  io.thinkpipe.source-sha256); the slow test uses this
#   --no-export    skip step 4
#   --pin          after step 4, write the digest and the source hash into components/image.py
#                  (image/pin.py)
#   --wheels-only  only step 2 (for `docker build .` on a machine with a daemon)
#   --source-hash  print the source hash of this checkout and exit
# Environment: THINKPIPE_BASE, THINKPIPE_IMAGE, DEBIAN_MIRROR (default http://deb.debian.org/debian),
#   PYTHON (default python3.11), BUILDAH_STORAGE_DRIVER (default vfs), THINKPIPE_NO_APT=1 (never
#   apt-get install missing tools; fail naming the package instead).
# Needs root (debootstrap, buildah's chroot isolation) and the Debian packages buildah and
# debootstrap: missing ones are installed with apt-get when running as root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
BASE=${THINKPIPE_BASE:-localhost/thinkpipe-base:bookworm}
IMAGE=${THINKPIPE_IMAGE:-localhost/thinkpipe:$VERSION}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3.11}
DRIVER=${BUILDAH_STORAGE_DRIVER:-vfs}
WHEELS=$ROOT/image/wheels
OUT=$ROOT/image/out
REUSE=0 EXPORT=1 PIN=0 WHEELS_ONLY=0 SOURCE_HASH=0
for arg in "$@"; do
  case $arg in
    --reuse) REUSE=1 ;;
    --no-export) EXPORT=0 ;;
    --pin) PIN=1 ;;
    --wheels-only) WHEELS_ONLY=1 ;;
    --source-hash) SOURCE_HASH=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "image: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'image: %s\n' "$*"; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }
bah() { buildah --storage-driver "$DRIVER" "$@"; }
now() { date +%s; }
need() {  # need COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $EUID -eq 0 && ${THINKPIPE_NO_APT:-0} != 1 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing the Debian package $2 (for $1)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  fi
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install the Debian package '$2' (apt-get install $2)"
}
image_exists() { bah inspect --type image "$1" >/dev/null 2>&1; }
image_label() { bah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }
# the content hash of the sources the image carries, defined once in model_src/image_source.py
# (standard library only, so the host's Python runs it)
source_sha256() { "$PYTHON" -m model_src.image_source "$ROOT"; }
if [[ $SOURCE_HASH == 1 ]]; then source_sha256; exit 0; fi

# -------------------------------------------------------------------------------------- 2. wheels
wheelhouse() {
  local lock_sha
  lock_sha=$(sha256sum requirements.lock | cut -d' ' -f1)
  if [[ -f $WHEELS/.lock-sha256 && $(cat "$WHEELS/.lock-sha256") == "$lock_sha" ]]; then
    say "wheelhouse image/wheels is current for requirements.lock ($(ls "$WHEELS"/*.whl | wc -l) wheels)"
    return
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: the wheelhouse is fetched by a host Python 3.11 (Debian package python3.11)"
  say "fetching the wheelhouse for requirements.lock into image/wheels (pip wheel --no-deps)"
  local t0; t0=$(now)
  rm -rf "$WHEELS.tmp" && mkdir -p "$WHEELS.tmp"
  "$PYTHON" -m pip wheel --quiet --no-deps -r requirements.lock -w "$WHEELS.tmp"
  local pins wheels
  pins=$(grep -c '^[A-Za-z0-9]' requirements.lock)
  wheels=$(ls "$WHEELS.tmp"/*.whl | wc -l)
  [[ $pins == "$wheels" ]] || die "the wheelhouse has $wheels wheels for $pins pins of requirements.lock"
  (cd "$WHEELS.tmp" && sha256sum ./*.whl > SHA256SUMS)
  echo "$lock_sha" > "$WHEELS.tmp/.lock-sha256"
  rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
  say "wheelhouse: $wheels wheels, $(du -sh "$WHEELS" | cut -f1), $(( $(now) - t0 )) s"
}

if [[ $WHEELS_ONLY == 1 ]]; then wheelhouse; exit 0; fi

[[ $EUID -eq 0 ]] || die "run as root (debootstrap and buildah's chroot isolation need it)"
need buildah buildah

BUILD=1 SOURCES=$(source_sha256)
if [[ $REUSE == 1 ]] && image_exists "$IMAGE"; then
  if [[ $(image_label "$IMAGE" io.thinkpipe.source-sha256) == "$SOURCES" ]]; then
    say "reusing $IMAGE: built from the same sources ($SOURCES)"
    BUILD=0
  else
    say "$IMAGE was built from other sources: rebuilding"
  fi
fi

# ---------------------------------------------------------------------------------------- 1. base
if [[ $BUILD == 0 ]]; then
  :
elif image_exists "$BASE"; then
  say "base $BASE exists: skipping debootstrap"
else
  need debootstrap debootstrap
  t0=$(now)
  mkdir -p "$OUT"
  rootfs=$(mktemp -d /var/tmp/thinkpipe-rootfs.XXXXXX)
  ctr=
  cleanup() { [[ -n $ctr ]] && bah rm "$ctr" >/dev/null 2>&1; rm -rf "$rootfs"; }
  trap cleanup EXIT
  say "debootstrap $SUITE (minbase + python3.11) from $MIRROR"
  debootstrap --variant=minbase --components=main \
    --include=python3.11,python3.11-venv,python3-distutils,ca-certificates \
    "$SUITE" "$rootfs" "$MIRROR" > "$OUT/debootstrap.log" 2>&1 \
    || { tail -20 "$OUT/debootstrap.log" >&2; die "debootstrap failed (log: image/out/debootstrap.log)"; }
  # (python3-distutils named by hand: debootstrap does not resolve python3.11-venv's virtual dependency)
  # no package lists, caches, logs or host files in the base
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf
  ctr=$(bah from scratch)
  mnt=$(bah mount "$ctr")
  cp -a "$rootfs"/. "$mnt"/
  bah umount "$ctr" >/dev/null
  bah config --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd /bin/bash \
    --label org.opencontainers.image.title=thinkpipe-base \
    --label org.opencontainers.image.description="Debian $SUITE minbase + python3.11 (debootstrap from $MIRROR)" \
    "$ctr"
  bah commit --quiet --rm "$ctr" "$BASE" >/dev/null
  ctr=
  rm -rf "$rootfs"
  trap - EXIT
  say "base $BASE made in $(( $(now) - t0 )) s ($(bah images --noheading --format '{{.Size}}' "$BASE" | head -1))"
fi

# ------------------------------------------------------------------------------ 2. wheels, 3. image
if [[ $BUILD == 1 ]]; then
wheelhouse
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then revision="$revision-dirty"; fi
say "building $IMAGE from $BASE (buildah bud, $DRIVER storage, chroot isolation)"
t0=$(now)
bah bud --isolation chroot --pull=never --layers=false \
  --build-arg BASE_IMAGE="$BASE" \
  --build-arg VERSION="$VERSION" \
  --build-arg REVISION="$revision" \
  --build-arg LOCK_SHA256="$(sha256sum requirements.lock | cut -d' ' -f1)" \
  --label io.thinkpipe.source-sha256="$SOURCES" \
  -f Dockerfile -t "$IMAGE" "$ROOT"
say "built $IMAGE in $(( $(now) - t0 )) s"
fi
read -r image_id local_digest size < <(bah images --noheading --no-trunc --format '{{.ID}} {{.Digest}} {{.Size}}' "$IMAGE" | head -1)
say "$IMAGE  (revision $(bah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' "$IMAGE"))"
say "  sources       : $(image_label "$IMAGE" io.thinkpipe.source-sha256)"
say "  image id      : sha256:${image_id#sha256:}"
say "  local digest  : $local_digest (uncompressed layers in local storage; not a registry digest)"
say "  size          : $size; layers: $(bah inspect --type image --format '{{len .OCIv1.RootFS.DiffIDs}}' "$IMAGE")"

# -------------------------------------------------------------------------------------- 4. export
if [[ $EXPORT == 1 ]]; then
  t0=$(now)
  mkdir -p "$OUT"
  rm -rf "$OUT/oci"
  bah push --quiet --compression-format gzip --digestfile "$OUT/digest" "$IMAGE" "oci:$OUT/oci:$VERSION"
  digest=$(cat "$OUT/digest")
  say "exported to image/out/oci:$VERSION in $(( $(now) - t0 )) s ($(du -sh "$OUT/oci" | cut -f1), gzip layers)"
  say "  digest        : $digest"
  say "publish: skopeo copy --preserve-digests oci:image/out/oci:$VERSION docker://<repository>:$VERSION"
  if [[ $PIN == 1 ]]; then
    "$PYTHON" image/pin.py --digest "$digest" --tag "$VERSION" --source-sha256 "$(image_label "$IMAGE" io.thinkpipe.source-sha256)"
  else
    say "pin it: $PYTHON image/pin.py --digest $digest --tag $VERSION --source-sha256 $(image_label "$IMAGE" io.thinkpipe.source-sha256)   (then \`make compile\`)"
  fi
fi
