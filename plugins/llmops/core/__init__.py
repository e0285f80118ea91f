"""The contracts everything else is built on: the pod job (:mod:`.podjob`) and the jobs
container (:mod:`.job_container`), hardware classes (:mod:`.hardware`), and what a drop and a
deployment pin (:mod:`.manifests`). Pure: no I/O beyond reading a config file."""
