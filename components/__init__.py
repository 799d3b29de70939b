"""One KFP component per pipeline stage. Each one only wires: KFP inputs -> one `model_src.stages`
entry point -> KFP outputs. Imports of model_src happen inside the function body because KFP ships
the function's source to the container (where the thinkpipe package is installed)."""
