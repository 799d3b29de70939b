"""Runs one pipeline stage (pretrain) on its own; tests/test_resume.py SIGKILLs it mid-training.

    python tests/stage_driver.py LINEAGE_FILE PRETRAIN_DATA_DIR MODEL_OUT
Needs MLFLOW_TRACKING_URI, THINKPIPE_PIPELINE_RUN and THINKPIPE_CHECKPOINT_ROOT in the environment.
"""

import json
import sys
from pathlib import Path

from model_src.stages import pretrain

if __name__ == "__main__":
    lineage_file, data, out = sys.argv[1:4]
    metrics = pretrain.run(lineage=Path(lineage_file).read_text(), pretrain_data=data, model_out=out, use_cache=False)
    print("METRICS " + json.dumps(metrics), flush=True)
