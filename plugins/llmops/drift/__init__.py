"""Weekly eval drift: series of the production model's eval scores, drift analysis and the report.

* :mod:`llmops.drift.analysis` (pure): per category, deltas against last week and against the
  champion's qualification baseline with paired-bootstrap intervals, the trend over the last
  N weeks, and the drift verdicts.
* :mod:`llmops.drift.series` (pure): weekly eval runs grouped into series keyed by eval-set
  content hash (a changed eval set starts a new series).
* :mod:`llmops.drift.failures` (pure): the failure-case review lists.
* :mod:`llmops.drift.report` (pure rendering): the Markdown summary and the HTML page with charts.
* :mod:`llmops.drift.history` (I/O): weekly runs, per-item results and baselines from MLflow.
* :mod:`llmops.drift.plan`: the ``weekly_eval_drift`` DAG's task logic (plans the pod jobs,
  the final check); :mod:`llmops.drift.make_evalset`: the shipped ``tiny_chat_weekly_v1`` set.
"""
