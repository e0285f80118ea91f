"""Configuration: every environment variable the project reads (:mod:`.settings`), container
image references (:mod:`.images`) and the defaults every DAG shares (:mod:`.dag_defaults`).
The lowest layer: it imports nothing else of the project."""
