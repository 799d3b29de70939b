"""The component image: ./Dockerfile, image/build.sh (`make image`) and the pinned reference in
components/image.py that `thinkpipe compile` writes into the IR.

The fast tests read the Dockerfile and the reference. The slow test builds the image for real (or
reuses the one `make image` left in buildah's storage) and runs thinkpipe's entry points inside it
with `buildah run --isolation chroot`, as the image's own (non-root) user.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIGEST_REF = re.compile(r"(?P<repo>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9._-]+)+)"
                        r"(?::(?P<tag>[\w][\w.-]{0,127}))?@(?P<digest>sha256:[0-9a-f]{64})")
COMPONENT_STAGES = ("init", "curate", "pretrain", "sft", "rlcs", "evaluate", "export")


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _version() -> str:
    return re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)


def _lock_pin(name: str) -> str:
    return re.search(rf"^{re.escape(name)}==(\S+)", (ROOT / "requirements.lock").read_text(), re.MULTILINE).group(1)


# ------------------------------------------------------------------------------------------- fast
def test_dockerfile_takes_the_base_as_an_arg_installs_the_lock_and_runs_as_non_root():
    steps = _instructions((ROOT / "Dockerfile").read_text())
    first_from = next(i for i, (word, _) in enumerate(steps) if word == "FROM")
    base_args = [rest for word, rest in steps[:first_from] if word == "ARG" and rest.startswith("BASE_IMAGE=")]
    assert len(base_args) == 1, "want `ARG BASE_IMAGE=<public default>` before FROM"
    default = base_args[0].split("=", 1)[1]
    assert default and not default.startswith("localhost/") and "python:3.11" in default, default
    assert steps[first_from][1] == "${BASE_IMAGE}"

    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert re.search(r"pip install [^;&]*--no-deps[^;&]*-r \S*requirements\.lock", runs)
    assert re.search(r"pip install [^;&]*--no-deps[^;&]*/opt/thinkpipe", runs), "the package itself, --no-deps"

    users = [rest for word, rest in steps if word == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit() and int(user) >= 1000, \
        f"USER {users[-1]}: want a numeric non-root uid (Kubernetes runAsNonRoot can only verify a number)"
    assert any(word == "WORKDIR" for word, _ in steps)
    labels = " ".join(rest for word, rest in steps if word == "LABEL")
    for key in ("org.opencontainers.image.source", "org.opencontainers.image.revision"):
        assert key in labels
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "MLFLOW_DISABLE_TELEMETRY=true" in env

    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "data", ".thinkpipe", "mlruns"):
        assert path in ignored, f".dockerignore does not keep {path} out of the build context"


def test_the_component_image_reference_is_pinned_by_digest_and_used_by_every_component():
    from components import image

    match = DIGEST_REF.fullmatch(image.BASE_IMAGE)
    assert match, f"BASE_IMAGE {image.BASE_IMAGE!r} is not `repository[:tag]@sha256:<64 hex>`"
    assert image.BASE_IMAGE == f"{image.REPOSITORY}:{image.TAG}@{image.DIGEST}"
    assert image.DIGEST != "sha256:" + "0" * 64, "placeholder digest: pin a build with image/pin.py"
    assert image.TAG == _version(), "the tag follows pyproject's version (image/build.sh tags the build with it)"
    seen = []
    for path in sorted((ROOT / "components").glob("*.py")):
        module = importlib.import_module(f"components.{path.stem}")
        for name, obj in vars(module).items():
            spec = getattr(obj, "component_spec", None)
            if spec is not None and getattr(obj, "python_func", None) is not None \
                    and obj.python_func.__module__ == module.__name__:
                assert spec.implementation.container.image == image.BASE_IMAGE, f"{path.name}: {name}"
                seen.append(name)
    assert set(COMPONENT_STAGES) <= set(seen), seen


def test_pin_rewrites_the_digest_and_tag_and_nothing_else(tmp_path):
    spec = importlib.util.spec_from_file_location("thinkpipe_image_pin", ROOT / "image" / "pin.py")
    pin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pin)
    target = tmp_path / "image.py"
    original = (ROOT / "components" / "image.py").read_text()
    target.write_text(original)
    digest = "sha256:" + "0123456789abcdef" * 4
    assert pin.main(["--digest", digest, "--tag", "9.9.9", "--file", str(target)]) == 0
    changed = target.read_text()
    namespace: dict = {}
    exec(changed, namespace)
    assert namespace["BASE_IMAGE"] == f"{namespace['REPOSITORY']}:9.9.9@{digest}"
    assert [line for line in changed.splitlines() if line not in original.splitlines()] == \
        ['TAG = "9.9.9"', f'DIGEST = "{digest}"']
    with pytest.raises(SystemExit):
        pin.main(["--digest", "sha256:abc", "--file", str(target)])
    assert target.read_text() == changed
    sources = "ab" * 32
    assert pin.main(["--digest", digest, "--source-sha256", sources, "--file", str(target)]) == 0
    assert [line for line in target.read_text().splitlines() if line not in changed.splitlines()] == \
        [f'SOURCE_SHA256 = "{sources}"']
    with pytest.raises(SystemExit):
        pin.main(["--digest", digest, "--source-sha256", "HEAD", "--file", str(target)])


def test_the_source_hash_is_tied_to_what_the_image_carries(tmp_path):
    """The image is the code: the hash build.sh labels the image with is model_src.image_source's;
    it covers every source the Dockerfile copies (README.md aside: only the package's description)
    and changes with any of them, but not with the pin or the compiled IR (written after a build)."""
    from model_src.image_source import SOURCES, source_files, source_sha256

    shell = subprocess.run([str(ROOT / "image" / "build.sh"), "--source-hash"], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, "PYTHON": "python3"})
    assert shell.returncode == 0 and shell.stdout.strip() == source_sha256(ROOT), shell.stderr
    copied = {src for word, rest in _instructions((ROOT / "Dockerfile").read_text()) if word == "COPY"
              for src in rest.split()[:-1] if not src.startswith("--")}
    assert copied - {"README.md"} <= set(SOURCES), copied
    assert "model_src/train/supervised.py" in source_files(ROOT) and "components/image.py" not in source_files(ROOT)

    tree = tmp_path / "tree"
    for rel in [*source_files(ROOT), "components/image.py", "pipelines/compiled/training.yaml", "README.md"]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tree / rel)
    base = source_sha256(tree)
    assert base == source_sha256(ROOT)
    for rel in ("components/image.py", "pipelines/compiled/training.yaml", "README.md"):
        (tree / rel).write_text((tree / rel).read_text() + "\n# changed\n")
    (tree / "model_src" / "__pycache__").mkdir(exist_ok=True)
    (tree / "model_src" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert source_sha256(tree) == base  # the pin, the IR, the description, bytecode: not the image's code
    for rel in ("model_src/rl/loop.py", "configs/glm4v-9b.yaml", "requirements.lock", "Dockerfile"):
        before = (tree / rel).read_bytes()
        (tree / rel).write_bytes(before + b"\n")
        assert source_sha256(tree) != base, rel
        (tree / rel).write_bytes(before)
    (tree / "model_src" / "new_module.py").write_text("x = 1\n")
    assert source_sha256(tree) != base  # a new file is new code


# ------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_curate_runs_inside_the_built_image_as_a_non_root_user():
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (Debian package `buildah`; `make image` installs it when run as root)")
    image = f"localhost/thinkpipe:{_version()}"
    # builds the debootstrap base, the wheelhouse and the image, unless `make image` already built
    # this very source tree (image/build.sh --reuse compares the image's io.thinkpipe.source-sha256)
    subprocess.run([str(ROOT / "image" / "build.sh"), "--reuse", "--no-export"], check=True, cwd=ROOT,
                   env={**os.environ, "THINKPIPE_IMAGE": image})
    buildah = ["buildah", "--storage-driver", os.environ.get("BUILDAH_STORAGE_DRIVER", "vfs")]
    name = f"thinkpipe-test-{uuid.uuid4().hex[:8]}"
    subprocess.run([*buildah, "from", "--pull=never", "--name", name, image], check=True, capture_output=True)

    def run(*command: str, timeout: float = 1800) -> str:
        """Run in the container as the image's own USER (no --user here), in its WORKDIR."""
        done = subprocess.run([*buildah, "run", "--isolation", "chroot", name, "--", *command],
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    from model_src.image_source import LABEL, source_sha256

    labels = json.loads(subprocess.run([*buildah, "inspect", "--type", "image", "--format",
                                        "{{json .OCIv1.Config.Labels}}", image], check=True, capture_output=True,
                                       text=True).stdout)
    assert labels[LABEL] == source_sha256(ROOT), "the image records the sources it was built from"
    try:
        uid, gid, user, home, cwd = run("sh", "-c", 'id -u; id -g; id -un; echo "$HOME"; pwd').split()
        assert uid != "0" and int(uid) >= 1000 and gid != "0", f"the container runs as uid {uid} gid {gid}"
        assert (user, home, cwd) == ("thinkpipe", "/home/thinkpipe", "/workspace")

        versions = json.loads(run("python", "-c", (
            "import json, torch, transformers, kfp, mlflow, deepspeed, model_src, pipelines.cli; "
            "print(json.dumps({m.__name__: m.__version__ for m in (torch, transformers, kfp, mlflow, deepspeed)}))"
        )).strip().splitlines()[-1])
        for module, version in versions.items():
            assert version.split("+")[0] == _lock_pin(module), f"{module} {version} in the image, lock pins {_lock_pin(module)}"

        # the entry points the components use, for real: generate a corpus, then curate it
        run("thinkpipe", "data", "--out", "/tmp/raw")
        out = run("thinkpipe", "curate", "--input", "/tmp/raw", "--output", "/tmp/out")
        assert "kept:" in out
        report = json.loads(run("cat", "/tmp/out/report/report.json"))
        assert report["input_rows"] > 0 and report["kept_rows"] > 0
        assert report["input_rows"] == report["kept_rows"] + report["quarantined_rows"]
        for domain, n in report["input_by_domain"].items():
            assert n == report["kept_by_domain"].get(domain, 0) + report["quarantined_by_domain"].get(domain, 0), domain
        assert sum(report["quarantine_reasons"].values()) == report["quarantined_rows"]
        owners = run("sh", "-c", "stat -c %u /tmp/out/report/report.json /tmp/out/report/kept.parquet").split()
        assert set(owners) == {uid}, "the outputs belong to the non-root user"
    finally:
        subprocess.run([*buildah, "rm", name], capture_output=True)
