"""`python -m pipelines.cli`: the `thinkpipe` command."""

import sys

from pipelines.cli import main

sys.exit(main())
