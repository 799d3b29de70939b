"""One KFP component per pipeline stage. Each one only wires: KFP inputs -> the stage module's
`run` in `model_src.stages` -> KFP outputs. Imports of model_src happen inside the function body
because KFP ships the function's source to the container (where the thinkpipe package is installed).

Every stage after init takes `lineage`, the one value init makes (commit, data hash and rev, image,
config): with the upstream artifacts it is the stage's KFP cache key."""
