"""One refresh at a time per model: a lease object in the models bucket, taken with S3 conditional writes.

Airflow's ``max_active_runs`` counts runs per DAG, not per model: two drops of the same model
(or a drop and a hand-triggered run) would otherwise stage, canary and promote concurrently and
race on the registry aliases. Runs for *different* models may overlap. The lease is
``locks/model_refresh/<model>.json`` holding the run id; it is created with ``If-None-Match: *``
(only one writer wins) and taken over from a finished holder with ``If-Match: <etag>`` (only one
taker wins). A run that finds the lease held by a live run waits (a reschedule-mode sensor: no
worker slot held) and a teardown task releases the lease whatever the run's outcome.

:func:`decide` is the pure rule; the functions below it do the S3 I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from llmops.core.fields import INPUT_ERRORS, DocumentError, parse_json, require_mapping, require_str, unknown_keys
from llmops.core.limits import LEASE_MAX_BYTES, read_at_most

LOCK_PREFIX = "locks/model_refresh"


class LockAction(StrEnum):
    """What a run does about the lease it found."""

    CREATE = "create"  # nobody holds it: create it
    HELD = "held"  # this run already holds it (a retried task): nothing to do
    TAKE_OVER = "take_over"  # the holder's run is over (it crashed before its teardown): replace it
    WAIT = "wait"  # another live run holds it


@dataclass(frozen=True)
class Lease:
    """The lease object's content and its ETag (for the conditional take-over)."""

    run_id: str
    acquired_at: str
    etag: str


def lock_key(model: str) -> str:
    """Where a model's lease lives in the models bucket."""
    return f"{LOCK_PREFIX}/{model}.json"


def action_for(lease: Lease | None, run_id: str, holder_alive: Callable[[str], bool]) -> LockAction:
    """The rule: free -> create; ours -> held; a finished holder -> take over; else wait."""
    if lease is None:
        return LockAction.CREATE
    if lease.run_id == run_id:
        return LockAction.HELD
    return LockAction.WAIT if holder_alive(lease.run_id) else LockAction.TAKE_OVER


class LeaseError(ValueError):
    """A lease object that cannot be read; the message names its S3 URI, the field and the fix."""


LEASE_FIELDS = frozenset({"run_id", "acquired_at", "took_over_from"})
"""Keys of the lease object, as :func:`acquire` writes it."""


def read_lease(s3: Any, bucket: str, model: str) -> Lease | None:
    """The current lease, or None when the model is free.

    Raises :class:`LeaseError` when the object is over :data:`~llmops.core.limits.LEASE_MAX_BYTES`
    (checked on ``ContentLength`` before reading, and at most that many bytes are read) or is not
    the JSON object :func:`acquire` writes.
    """
    from botocore.exceptions import ClientError

    from llmops.io.s3 import is_not_found

    try:
        obj = s3.get_object(Bucket=bucket, Key=lock_key(model))
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    uri = f"s3://{bucket}/{lock_key(model)}"
    try:
        body = read_at_most(obj["Body"], uri, "the lease object", LEASE_MAX_BYTES, _reset_fix(uri),
                            declared_size=obj.get("ContentLength"), name="LEASE_MAX_BYTES")
        return parse_lease(parse_json(body, uri), uri, etag=str(obj.get("ETag", "")))
    except INPUT_ERRORS as exc:
        # The platform writes the lease: whatever is wrong with it, the user's fix is to reset it.
        raise LeaseError(f"{uri}: {exc.field}: {exc.problem}; fix: {_reset_fix(uri)}") from None
    finally:
        close = getattr(obj.get("Body"), "close", None)
        if callable(close):
            close()


def parse_lease(data: Any, uri: str, etag: str) -> Lease:
    """The :class:`Lease` in a parsed lease object (pure); raises ``DocumentError`` naming the field."""
    fix = _reset_fix(uri)
    data = require_mapping(data, uri, "(object)", fix)
    unknown_keys(data, LEASE_FIELDS, uri)
    if "run_id" not in data:
        raise DocumentError(uri, "run_id", "missing field", fix)
    run_id = require_str(data["run_id"], uri, "run_id", fix)
    acquired_at = require_str(data.get("acquired_at", ""), uri, "acquired_at", fix, allow_empty=True)
    if data.get("took_over_from") is not None:
        require_str(data["took_over_from"], uri, "took_over_from", fix)
    return Lease(run_id=run_id, acquired_at=acquired_at, etag=etag)


def _reset_fix(uri: str) -> str:
    return (f"the platform did not write this object: when no refresh of this model is running, delete {uri} "
            "(the next run takes the lease afresh)")


def acquire(s3: Any, bucket: str, model: str, run_id: str, holder_alive: Callable[[str], bool]) -> tuple[bool, str]:
    """Try once to hold ``model``'s lease for ``run_id``; returns (held, why) for the task log.

    Safe under races: of two runs creating (or taking over) at once, S3 lets exactly one write win;
    the loser sees a precondition failure and waits for its next poke.
    """
    from botocore.exceptions import ClientError

    lease = read_lease(s3, bucket, model)
    action = action_for(lease, run_id, holder_alive)
    if action is LockAction.HELD:
        return True, f"{model}: this run already holds the lease (a retry)"
    if action is LockAction.WAIT:
        return False, f"{model}: refresh run {lease.run_id} holds the lease since {lease.acquired_at}; waiting"
    body = json.dumps({"run_id": run_id, "acquired_at": datetime.now(UTC).isoformat(),
                       **({"took_over_from": lease.run_id} if lease else {})}).encode()
    condition = {"IfNoneMatch": "*"} if action is LockAction.CREATE else {"IfMatch": lease.etag}
    try:
        s3.put_object(Bucket=bucket, Key=lock_key(model), Body=body, ContentType="application/json", **condition)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False, f"{model}: another run took the lease first; waiting"
        raise
    if action is LockAction.TAKE_OVER:
        return True, f"{model}: took the lease over from finished run {lease.run_id}"
    return True, f"{model}: lease acquired"


def release(s3: Any, bucket: str, model: str, run_id: str) -> bool:
    """Drop the lease if this run holds it (conditional on its ETag: never someone else's)."""
    from botocore.exceptions import ClientError

    lease = read_lease(s3, bucket, model)
    if lease is None or lease.run_id != run_id:
        return False
    try:
        s3.delete_object(Bucket=bucket, Key=lock_key(model), IfMatch=lease.etag)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "PreconditionFailed":
            return False  # replaced between the read and the delete: no longer ours
        if code != "NotImplemented":
            raise
        # An S3-compatible endpoint without conditional deletes: the read above proved it is ours.
        s3.delete_object(Bucket=bucket, Key=lock_key(model))
    return True
