"""Reproduce what serves a model version from a clean clone: ``python -m llmops.reproduce``
(see :mod:`llmops.reproduce.cli`)."""
