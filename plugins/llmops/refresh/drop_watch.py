"""Find new weight drops in the drops bucket and claim each exactly once.

A drop is ``<model>/<revision>/`` with ``manifest.json`` written last (the arrival
marker). Its identity is its weight digest: the same weights re-delivered under
another revision are the same drop. A claim is ``_claims/<weight digest>.json``,
written with a conditional PUT (``If-None-Match: *``), so two watchers, or a retried
task, can never both start a refresh for the same weights.

A manifest that cannot be parsed still starts a refresh (identity: the SHA-256 of
its bytes), so that the receive stage rejects and quarantines it loudly instead of
the drop being ignored in silence.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from llmops.core.manifests import MANIFEST_NAME, ManifestError, parse_drop_manifest

CLAIMS_PREFIX = "_claims/"
_IGNORED_TOP = ("_claims", "quarantine")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drop:
    """A drop whose manifest has arrived."""

    bucket: str
    model: str
    revision: str
    identity: str  # the weight digest, or "manifest-sha256:<hex>" for an unparsable manifest
    manifest_etag: str
    arrived_at: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.model}/{self.revision}/"

    @property
    def run_id(self) -> str:
        """The model_refresh run id for this drop: Airflow refuses a second run with the same id."""
        return f"drop__{self.model}__{self.identity.split(':')[-1][:24]}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uri": self.uri, "run_id": self.run_id}


def list_drops(s3: Any, bucket: str) -> list[Drop]:
    """Every ``<model>/<revision>/manifest.json`` in ``bucket``, oldest first."""
    drops = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            parts = obj["Key"].split("/")
            if len(parts) != 3 or parts[2] != MANIFEST_NAME or parts[0] in _IGNORED_TOP:
                continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            drops.append(Drop(bucket=bucket, model=parts[0], revision=parts[1], identity=_identity(body, bucket, obj),
                              manifest_etag=obj["ETag"].strip('"'),
                              arrived_at=obj["LastModified"].astimezone(UTC).isoformat()))
    return sorted(drops, key=lambda d: (d.arrived_at, d.model, d.revision))


def _identity(body: bytes, bucket: str, obj: dict[str, Any]) -> str:
    uri = f"s3://{bucket}/{obj['Key']}"
    try:
        return parse_drop_manifest(json.loads(body), uri).weight_digest
    except (ManifestError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("%s cannot be parsed (%s): it will be received and rejected", uri, str(exc).splitlines()[0])
        return "manifest-sha256:" + hashlib.sha256(body).hexdigest()


def claim_key(drop: Drop) -> str:
    return f"{CLAIMS_PREFIX}{drop.identity.replace(':', '-')}.json"


def is_claimed(s3: Any, drop: Drop) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=drop.bucket, Key=claim_key(drop))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def unclaimed(s3: Any, bucket: str) -> list[Drop]:
    """Drops with no claim yet, one per identity (the first revision that brought those weights)."""
    seen: set[str] = set()
    fresh = []
    for drop in list_drops(s3, bucket):
        if drop.identity in seen or is_claimed(s3, drop):
            continue
        seen.add(drop.identity)
        fresh.append(drop)
    return fresh


def claim(s3: Any, drop: Drop, claimed_by: str) -> bool:
    """Claim ``drop`` for a refresh run; False when someone already holds the claim."""
    from botocore.exceptions import ClientError

    record = {**drop.to_dict(), "claimed_by": claimed_by, "claimed_at": datetime.now(UTC).isoformat()}
    try:
        s3.put_object(Bucket=drop.bucket, Key=claim_key(drop), Body=json.dumps(record, indent=2).encode(),
                      ContentType="application/json", IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True
