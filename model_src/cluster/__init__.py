"""Kubernetes-side helpers: the training-job launcher and the entry point its pods run."""
