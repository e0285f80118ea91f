"""The canary: pure step analysis (:mod:`.analysis`), the replayed traffic and its windows
(:mod:`.traffic`), and the canary pod jobs (:mod:`.plan`); the controller runs as
:mod:`llmops.jobs.canary`."""
