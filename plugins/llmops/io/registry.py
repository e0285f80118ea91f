"""MLflow model registry I/O: versions pinned by weight digest, and the serving aliases.

A model version's tags carry every pin of its deployment manifest
(``pin.weight_digest``, ``pin.runtime_image``, ...). Aliases say what serves:

* ``challenger``: the version being qualified / canaried; a version rejected at the gate or
  rolled back by its canary loses it (:meth:`ModelRegistry.reject`);
* ``champion``: the version serving 100% of traffic;
* ``previous``: the champion before it, so a rollback is one alias move.

Stages are deprecated in MLflow 3 and not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"
PIN_PREFIX = "pin."
WEIGHT_DIGEST_TAG = f"{PIN_PREFIX}weight_digest"
STATUS_TAG = "llmops.status"


class RegistryError(RuntimeError):
    """The registry is not in the state an operation needs; the message says which."""


@dataclass(frozen=True)
class RegisteredVersion:
    """The fields of an MLflow model version the pipelines use."""

    name: str
    version: str
    source: str
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def weight_digest(self) -> str | None:
        return self.tags.get(WEIGHT_DIGEST_TAG)


class ModelRegistry:
    """Model-version and alias operations against one MLflow tracking server."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # -- versions ----------------------------------------------------------------------------

    def find_by_weight_digest(self, name: str, weight_digest: str) -> RegisteredVersion | None:
        """The version registered for these exact weights, if any (drops are processed once)."""
        if not self._model_exists(name):
            return None
        found = self.client.search_model_versions(
            f"name = '{name}' and tags.`{WEIGHT_DIGEST_TAG}` = '{weight_digest}'")
        versions = sorted(found, key=lambda v: int(v.version))
        return self._wrap(versions[0]) if versions else None

    def register(self, name: str, source: str, pins: Mapping[str, str], *, run_id: str | None = None,
                 description: str = "", extra_tags: Mapping[str, str] | None = None) -> tuple[RegisteredVersion, bool]:
        """Register ``source`` as a new version tagged with its pins, unless these weights already are.

        Returns the version and whether it was created now. Idempotent on the weight digest,
        so a retried stage task or a re-delivered drop creates no second version.
        """
        digest = pins.get("weight_digest")
        if not digest:
            raise RegistryError("pins must include weight_digest (the identity of the weights)")
        existing = self.find_by_weight_digest(name, digest)
        if existing is not None:
            return existing, False
        if not self._model_exists(name):
            self.client.create_registered_model(name, description="Managed by the llmops model_refresh pipeline")
        tags = {f"{PIN_PREFIX}{k}": str(v) for k, v in pins.items()}
        tags.update(extra_tags or {})
        version = self.client.create_model_version(name=name, source=source, run_id=run_id, tags=tags,
                                                   description=description)
        return self._one_version_per_digest(name, digest, str(version.version))

    def _one_version_per_digest(self, name: str, digest: str, created: str) -> tuple[RegisteredVersion, bool]:
        """Converge on the lowest version of these weights; delete alias-free duplicates.

        A duplicate happens when the answer to a create is lost and the MLflow client, which
        retries every method, POST included, creates again (or when two stage tries race):
        every caller keeps the lowest version, so all of them return the same one.
        """
        found = sorted(self.client.search_model_versions(
            f"name = '{name}' and tags.`{WEIGHT_DIGEST_TAG}` = '{digest}'"), key=lambda v: int(v.version))
        canonical = str(found[0].version) if found else created
        for duplicate in found[1:]:
            if not getattr(duplicate, "aliases", None):
                self.client.delete_model_version(name, duplicate.version)
        return self.get(name, canonical), canonical == created

    def get(self, name: str, version: str) -> RegisteredVersion:
        return self._wrap(self.client.get_model_version(name, version))

    def tag(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))

    # -- aliases -----------------------------------------------------------------------------

    def by_alias(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version an alias points at, or None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        if not self._model_exists(name):
            return None
        try:
            return self._wrap(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(name, alias)
        except MlflowException:
            pass  # already absent: deleting is idempotent

    def delete_alias_if_at(self, name: str, alias: str, version: str) -> bool:
        """Delete ``alias`` only when it points at ``version``; True when it was deleted.

        An alias already moved to another version (a newer drop staged meanwhile) is left alone.
        """
        current = self.by_alias(name, alias)
        if current is None or current.version != str(version):
            return False
        self.delete_alias(name, alias)
        return True

    def reject(self, name: str, version: str, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Mark ``version`` rejected: status tag ``rejected`` plus ``tags`` (the reasons), then
        ``challenger`` removed when it points at ``version``.

        The tags go first, so a failure in between leaves a rejected version that still holds
        the alias, never an unmarked version without it. Idempotent (a retried task is safe).
        """
        self.tag(name, version, {STATUS_TAG: "rejected", **(tags or {})})
        return {"version": str(version), "status": "rejected",
                "challenger_removed": self.delete_alias_if_at(name, CHALLENGER, version)}

    def promote(self, name: str, version: str) -> dict[str, Any]:
        """``champion`` -> ``version``, ``previous`` -> the old champion, ``challenger`` removed.

        Idempotent: promoting the current champion again changes nothing, so a retried
        promote task never leaves ``previous`` pointing at the new champion.
        """
        champion = self.by_alias(name, CHAMPION)
        if champion is not None and champion.version == version:
            # A retry after the champion alias moved: finish what the first try left (challenger).
            self.delete_alias_if_at(name, CHALLENGER, version)
            return {"champion": version, "previous": self._alias_version(name, PREVIOUS), "changed": False}
        if champion is not None:
            self.set_alias(name, PREVIOUS, champion.version)
        self.set_alias(name, CHAMPION, version)
        self.delete_alias_if_at(name, CHALLENGER, version)
        return {"champion": version, "previous": champion.version if champion else None, "changed": True}

    def rollback(self, name: str) -> dict[str, Any]:
        """``champion`` back to ``previous`` (and ``previous`` to the rolled-back version)."""
        previous = self.by_alias(name, PREVIOUS)
        champion = self.by_alias(name, CHAMPION)
        if previous is None:
            raise RegistryError(f"model {name!r} has no 'previous' alias: nothing to roll back to")
        if champion is None:
            raise RegistryError(f"model {name!r} has no 'champion' alias")
        self.set_alias(name, CHAMPION, previous.version)
        self.set_alias(name, PREVIOUS, champion.version)
        return {"champion": previous.version, "rolled_back": champion.version}

    # -- helpers -----------------------------------------------------------------------------

    def _alias_version(self, name: str, alias: str) -> str | None:
        found = self.by_alias(name, alias)
        return found.version if found else None

    def _model_exists(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            return False
        return True

    @staticmethod
    def _wrap(version: Any) -> RegisteredVersion:
        return RegisteredVersion(name=version.name, version=str(version.version), source=version.source,
                                 tags=dict(version.tags or {}), aliases=tuple(getattr(version, "aliases", ()) or ()))
