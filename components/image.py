"""The one place the component image is named. `thinkpipe compile` writes it into the IR; a local
`thinkpipe run` records its own environment instead (see pipelines/cli.py)."""

BASE_IMAGE = "ghcr.io/thinkpipe/thinkpipe:0.1.0"
