"""Nightly serving benchmarks: workload matrices, result parsing, regression detection, reports.

Pure modules (no I/O beyond reading a YAML file): :mod:`.metrics` (stable metric names),
:mod:`.workloads` (the per-class workload matrix and the ``vllm bench serve`` command line),
:mod:`.results` (parsing ``vllm bench serve`` JSON), :mod:`.goodput`, :mod:`.regression`
(rolling baseline + noise), :mod:`.report` (summary table and chart), :mod:`.changes`
(which classes changed since they were last benchmarked), :mod:`.plan` (the pod jobs).
I/O lives in :mod:`.recording` (MLflow) and in the pod job :mod:`llmops.jobs.benchmark`.

:mod:`.metrics`, :mod:`.workloads` and :mod:`.results` import only the standard library:
the benchmark pod job runs them inside the vLLM runtime image.
"""
