#!/usr/bin/env bash
# Re-resolve serving/requirements.in into serving/requirements.lock (minutes; needs the registry).
# The lock is `pip freeze --all` (pip itself left out) of a fresh Python 3.11 venv in which
# serving/requirements.in was installed, the `+noops` wheels coming from build_cpu_wheels.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
tmp=${TMPDIR:-/tmp}/thinkpipe-serve-lock
rm -rf "$tmp" && "$PYTHON" -m venv "$tmp"
"$tmp/bin/python" serving/build_cpu_wheels.py --out "$tmp/wheels"
"$tmp/bin/pip" install --quiet --find-links "$tmp/wheels" -r serving/requirements.in
"$tmp/bin/pip" check
{
  echo "# Fully pinned serving venv (.venv-serve) for vLLM on CPU: pip freeze --all of a fresh Python 3.11"
  echo "# venv after \`pip install -r serving/requirements.in\` (x86_64); made by \`bash serving/lock.sh\`."
  echo "# The three +noops wheels are built locally by serving/build_cpu_wheels.py (make serve-venv does it)."
  "$tmp/bin/pip" freeze --all | grep -v '^pip=='
} > serving/requirements.lock.new
mv serving/requirements.lock.new serving/requirements.lock
echo "wrote serving/requirements.lock ($(grep -vc '^#' serving/requirements.lock) packages)"
