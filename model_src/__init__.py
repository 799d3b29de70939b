"""thinkpipe's logic: stages, data, model, training, RL, evaluation, serving, cluster launcher."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # profiles, manifest templates, tests/golden live here
