"""Runs one pipeline stage (pretrain) on its own; tests/test_resume.py SIGKILLs it mid-training.

    python tests/stage_driver.py CONFIG_JSON_FILE LINEAGE_JSON PRETRAIN_DATA_DIR MODEL_OUT
Needs MLFLOW_TRACKING_URI and THINKPIPE_CHECKPOINT_ROOT in the environment.
"""

import json
import sys
from pathlib import Path

from model_src.stages import pretrain_stage

if __name__ == "__main__":
    config_file, lineage, data, out = sys.argv[1:5]
    metrics = pretrain_stage(config_json=Path(config_file).read_text(), lineage_path=lineage, pretrain_data=data,
                             model_out=out, use_cache=False)
    print("METRICS " + json.dumps(metrics), flush=True)
