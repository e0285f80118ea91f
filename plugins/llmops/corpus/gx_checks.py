"""Great Expectations 1.x over a snapshot, batch by batch (memory bounded by one batch).

An ephemeral context holds the suite loaded from ``include/corpus/expectations.json``
(placeholders filled from the taxonomy and the parser configuration), a pandas data source
whose batches are passed at run time, and a checkpoint. Each batch's validation result is kept
in the context's result store; :meth:`SnapshotValidator.build_data_docs` renders them all once
at the end into a local folder (logged to MLflow as artifacts).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUITE_NAME = "corpus_chunks"


class SnapshotValidator:
    """Runs the corpus expectation suite on DataFrame batches and keeps a compact outcome per batch."""

    def __init__(self, suite: Mapping[str, Any], docs_dir: str | Path | None = None,
                 partial_unexpected_count: int = 5) -> None:
        import great_expectations as gx
        from great_expectations.core.expectation_suite import ExpectationSuite
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        # Progress bars would write a line per batch into the task log.
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.docs_dir = Path(docs_dir) if docs_dir else None
        if self.docs_dir:
            self.context.add_data_docs_site(site_name="corpus", site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(self.docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            })
        self.suite = self.context.suites.add(ExpectationSuite(**{**dict(suite), "name": suite.get("name", SUITE_NAME)}))
        batch_definition = (self.context.data_sources.add_pandas("corpus_chunks")
                            .add_dataframe_asset("chunks").add_batch_definition_whole_dataframe("batch"))
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name="corpus_chunks", data=batch_definition, suite=self.suite))
        self.checkpoint = self.context.checkpoints.add(gx.Checkpoint(
            name="corpus_snapshot", validation_definitions=[definition], actions=[],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": partial_unexpected_count}))
        self.batches: list[list[dict[str, Any]]] = []

    def validate(self, frame: Any) -> list[dict[str, Any]]:
        """Validate one pandas DataFrame batch; return ``[{type, column, success, unexpected_count, ...}]``."""
        result = self.checkpoint.run(batch_parameters={"dataframe": frame})
        outcome = []
        for validation in result.run_results.values():
            for item in validation.results:
                config = item.expectation_config
                details = item.result or {}
                outcome.append({
                    "type": config.type,
                    "column": config.kwargs.get("column"),
                    "success": bool(item.success),
                    "unexpected_count": int(details.get("unexpected_count") or 0),
                    "element_count": int(details.get("element_count") or len(frame)),
                    "examples": [str(v)[:120] for v in details.get("partial_unexpected_list") or []],
                })
        self.batches.append(outcome)
        return outcome

    def build_data_docs(self) -> Path | None:
        """Render every batch's validation result as Data Docs HTML; return the folder (or None)."""
        if not self.docs_dir:
            return None
        self.context.build_data_docs(site_names=["corpus"])
        return self.docs_dir
