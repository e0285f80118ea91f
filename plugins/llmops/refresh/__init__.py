"""The model refresh pipeline (``weight_drop_watcher``, ``model_refresh``, ``model_rollback``,
``runtime_requalify``).

* :mod:`.publish`: publish a checkpoint as a weight drop (what a training pipeline does).
* :mod:`.drop_names`: the rule for model and revision names in a drop's path.
* :mod:`.drop_watch`, :mod:`.drop_sensor`: find new drops incrementally (arrivals cursor plus a
  periodic sweep), record exactly-once claims after their run exists, release them; the
  deferrable sensor.
* :mod:`.staging`: quarantine and content-addressed staging in S3.
* :mod:`.lease`: one refresh run per model (S3 conditional writes).
* :mod:`.plan`: the pod jobs (receive, stage, qualify, canary).
* :mod:`.qualify`: the gate around :mod:`llmops.evals.gate`, and the canary's verdict.
* :mod:`.actions`: promote and roll back (aliases, ``current.json``, serving route), the
  model's lease and the drop claim, each idempotent per run.
* :mod:`.deploy_history`: ``current.json``'s history and the rollback decision (pure).
* :mod:`.approval`: the canary's approval, timing out into the outcome set in Params.
* :mod:`.runtime_upgrade`: a new serving runtime against the pinned one, answer by answer (pure).
* :mod:`.runtime_requalify`: detect new runtimes, plan the paired evals, record the runtime's
  verdict, move a qualified champion's pin (under the model's lease).
"""
