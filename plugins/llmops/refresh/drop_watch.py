"""Find new weight drops in the drops bucket, and record each one's claim exactly once.

A drop is ``<model>/<revision>/`` with ``manifest.json`` written last. Its identity is
``(model, weight digest)`` (the SHA-256 of an unparsable manifest's bytes instead, so receive
rejects it loudly rather than the drop being ignored): the same weights re-delivered under
another revision of the same model are the same drop; the same weights under another model
are another drop.

**Exactly once, trigger first.** The watcher triggers ``model_refresh`` with a deterministic run
id (:func:`run_id_for`; Airflow refuses a second run with the same id) and only then records
the claim ``_claims/<model>/<hex>.json``, and only for a drop whose run exists. A failed
trigger leaves the drop unclaimed, so a later poll retries it (after a backoff,
:func:`retry_delay_s`). Claims are written with conditional PUTs (``If-None-Match: *`` for a
first claim, ``If-Match: <etag>`` to re-claim), so two watchers never both hold one.

**Release.** A claim is ``claimed`` or ``released``; ``model_refresh`` calls
:func:`release_claim` with its run id when it fails before or at receive. A released drop is
new again once its manifest is newer (S3 ``LastModified``) than the one the claim recorded
(the corrected drop republished, even byte for byte): it is claimed again as generation
``n + 1`` with run id ``drop__<model>__<hex24>__g<n>``. A run that fails before its claim is
recorded leaves a release request (``_releases/<run id>.json``) that the claim task honours.

**Flat poll cost.** Publishers write, right after the manifest, an arrival record
``_arrivals/<UTC %Y%m%dT%H%M%S.%fZ>__<model>__<revision>.json`` (the arrival contract,
alongside "manifest last"; :func:`arrival_key`). A poll lists ``_arrivals/`` after the
remembered cursor (one LIST when nothing is new) and reads only the new records' manifests and
claims. The cursor (``_watcher/state.json``) only moves past arrivals that are claimed,
duplicates or refused (:func:`advance_cursor`), and only the claim-recording task moves it: a
crash or a failed trigger between finding and claiming never skips a drop. Every
``LLMOPS_DROP_SWEEP_INTERVAL_S`` (and on a fresh bucket's first poll) a full sweep lists
every ``<model>/<revision>/manifest.json``, for tools that write no arrival record or an
arrival stamped before the cursor (a publisher's clock behind, or a slow PUT overtaken by a
later one); the sweep index ``_watcher/index.json`` (manifest key -> LastModified of the
manifest that was settled) spares the sweep reading any known manifest's body.

Trade-off: between sweeps, a drop without an arrival record waits up to the sweep interval,
and a sweep still lists every object under every model (one request per 1,000 objects). In
production, S3 event notifications (``s3:ObjectCreated:*`` on ``*/manifest.json`` to SQS or
EventBridge) would replace both the arrival records and the sweep, keeping the sweep only as a
rare safety net.

**Odd names are refused, never skipped.** A manifest under a model or revision that breaks
:mod:`llmops.refresh.drop_names` is logged as an ERROR naming the key, the rule and the fix,
and recorded once as ``_refused/<sha256 of key>.json``.

Pure decisions (:func:`claim_decision`, :func:`advance_cursor`, :func:`sweep_due`,
:func:`run_id_for` / :func:`parse_run_id`, :func:`retry_delay_s`) come first; the S3 I/O
(:func:`scan`, :func:`record_claims`, :func:`release_claim`) after them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from llmops.core.limits import MANIFEST_MAX_BYTES
from llmops.core.manifests import MANIFEST_NAME, QUARANTINE_PREFIX, ManifestError, load_drop_manifest
from llmops.refresh.drop_names import MODEL_PATTERN, drop_name_problem

log = logging.getLogger(__name__)

CLAIMS_PREFIX = "_claims/"
ARRIVALS_PREFIX = "_arrivals/"
REFUSED_PREFIX = "_refused/"
RELEASES_PREFIX = "_releases/"
STATE_KEY = "_watcher/state.json"
INDEX_KEY = "_watcher/index.json"
RESERVED_TOP = frozenset({"_claims", "_arrivals", "_refused", "_releases", "_watcher",
                          QUARANTINE_PREFIX.rstrip("/")})
"""Top-level prefixes of the drops bucket that hold no drops."""

CLAIMED, RELEASED = "claimed", "released"
WEIGHT_DIGEST, MANIFEST_SHA256 = "weight-digest", "manifest-sha256"
RUN_ID_PREFIX = "drop__"
HEX24 = 24
ARRIVAL_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
AIRFLOW_RUN_ID_PATTERN = r"^[A-Za-z0-9_.~:+-]+$"
"""Airflow's default ``[scheduler] allowed_run_id_pattern``; every watcher run id matches it."""
RETRY_BASE_S = 60.0
RETRY_MAX_S = 3600.0

_RUN_ID_RE = re.compile(rf"^drop__({MODEL_PATTERN[1:-1]})__([0-9a-f]{{{HEX24}}})(?:__g([1-9][0-9]*))?$")
_ARRIVAL_RE = re.compile(r"^_arrivals/(\d{8}T\d{6}\.\d{6}Z)__([^_/][^/]*?)__([^/]+)\.json$")
_PRECONDITION = ("PreconditionFailed", "ConditionalRequestConflict")


# -- Pure decisions ----------------------------------------------------------------------------


def stamp(when: datetime) -> str:
    """``when`` as a UTC ISO time to the second (S3's ``LastModified`` resolution everywhere)."""
    return when.astimezone(UTC).replace(microsecond=0).isoformat()


def run_id_for(model: str, hex_digest: str, generation: int = 1) -> str:
    """The ``model_refresh`` run id of a drop's claim: ``drop__<model>__<hex24>`` (``__g<n>`` from n = 2)."""
    base = f"{RUN_ID_PREFIX}{model}__{hex_digest[:HEX24]}"
    return base if generation == 1 else f"{base}__g{generation}"


def parse_run_id(run_id: str) -> tuple[str, str, int] | None:
    """``drop__<model>__<hex24>[__g<n>]`` -> ``(model, hex24, n)``; ``None`` for a run the watcher did not start."""
    match = _RUN_ID_RE.match(run_id or "")
    if not match:
        return None
    generation = int(match.group(3) or 1)
    if match.group(3) == "1":  # generation 1 has no suffix: "__g1" is not a watcher run id
        return None
    return match.group(1), match.group(2), generation


def claim_key(model: str, hex_digest: str) -> str:
    """Where the claim of ``(model, identity)`` lives: ``_claims/<model>/<hex>.json``."""
    return f"{CLAIMS_PREFIX}{model}/{hex_digest}.json"


def refusal_key(key: str) -> str:
    """Where the refusal of the object ``key`` is recorded: ``_refused/<sha256 of key>.json``."""
    return f"{REFUSED_PREFIX}{hashlib.sha256(key.encode()).hexdigest()}.json"


def arrival_key(model: str, revision: str, at: datetime) -> str:
    """The arrival record of a drop: ``_arrivals/<UTC time, microseconds>__<model>__<revision>.json``."""
    return f"{ARRIVALS_PREFIX}{at.astimezone(UTC).strftime(ARRIVAL_TIME_FORMAT)}__{model}__{revision}.json"


def parse_arrival_key(key: str) -> tuple[str, str, str] | None:
    """``_arrivals/<time>__<model>__<revision>.json`` -> ``(time, model, revision)``; ``None`` when malformed."""
    match = _ARRIVAL_RE.match(key)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def manifest_key(model: str, revision: str) -> str:
    """``<model>/<revision>/manifest.json``."""
    return f"{model}/{revision}/{MANIFEST_NAME}"


def claim_decision(arrived_at: str, claim: Claim | None) -> tuple[bool, int]:
    """Is a drop whose manifest arrived at ``arrived_at`` new, given its claim? ``(new, generation)``.

    No claim: new, generation 1. A held claim: not new (a re-delivery). A released claim: new
    again, generation n + 1, only when this manifest is newer than the one the claim recorded.
    """
    if claim is None:
        return True, 1
    if claim.state == RELEASED and _time(arrived_at) > _time(claim.arrived_at):
        return True, claim.generation + 1
    return False, claim.generation


def advance_cursor(cursor: str, arrivals: Iterable[tuple[str, bool]]) -> str:
    """The new cursor: the last arrival key of the settled run that starts right after ``cursor``.

    ``arrivals`` are ``(key, settled)`` for the arrival records after ``cursor``; the cursor never
    moves past an unsettled one (a drop not yet claimed), whatever follows it.
    """
    position = cursor
    for key, settled in sorted(arrivals):
        if key <= cursor:
            continue
        if not settled:
            break
        position = key
    return position


def sweep_due(last_sweep_at: str | None, now: datetime, interval_s: float) -> bool:
    """A full sweep is due on a fresh bucket, and every ``interval_s`` after the last one."""
    return last_sweep_at is None or (now - _time(last_sweep_at)).total_seconds() >= interval_s


def retry_delay_s(attempts: int) -> float:
    """Backoff before a drop whose trigger failed ``attempts`` times is tried again (60 s doubling, 1 h at most)."""
    return min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, attempts - 1))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- Records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    """A drop found new: what to trigger, and the claim to record once its run exists."""

    bucket: str
    model: str
    revision: str
    kind: str  # WEIGHT_DIGEST or MANIFEST_SHA256 (an unparsable manifest)
    hex: str
    manifest_etag: str
    arrived_at: str  # the manifest's LastModified (stamp)
    generation: int = 1
    claim_etag: str | None = None  # the released claim to re-claim (If-Match); None: first claim
    arrival: str | None = None  # the arrival record it was found through; None: found by a sweep

    @property
    def identity(self) -> str:
        """``<kind>:<hex>``."""
        return f"{self.kind}:{self.hex}"

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.model, self.revision)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.model}/{self.revision}/"

    @property
    def run_id(self) -> str:
        """The ``model_refresh`` run id for this drop's claim generation."""
        return run_id_for(self.model, self.hex, self.generation)

    @property
    def conf(self) -> dict[str, str]:
        """The ``model_refresh`` run's conf."""
        return {"model": self.model, "drop_uri": self.uri}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (what the sensor hands on), with the derived run id, URI and conf."""
        return {**asdict(self), "identity": self.identity, "uri": self.uri, "run_id": self.run_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Drop:
        """The inverse of :meth:`to_dict` (derived fields ignored)."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass(frozen=True)
class Claim:
    """A claim record as read from S3, with its ETag (for conditional writes)."""

    state: str
    generation: int
    run_id: str
    arrived_at: str
    etag: str
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_record(cls, record: dict[str, Any], etag: str) -> Claim:
        return cls(state=record.get("state", CLAIMED), generation=int(record.get("generation", 1)),
                   run_id=record.get("run_id", ""), arrived_at=record.get("arrived_at", "1970-01-01T00:00:00+00:00"),
                   etag=etag, record=record)


@dataclass(frozen=True)
class Refusal:
    """An object the watcher refuses to process, with the reason, the rule and the fix."""

    key: str
    reason: str
    rule: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Arrival:
    """One arrival record after the cursor and what became of it in a scan.

    ``outcome``: ``new`` (its drop is to be triggered), ``same`` (the same drop as another
    arrival of this scan), ``waiting`` (new, but its trigger failed recently), ``held`` (its
    drop is already claimed), ``missing`` (no manifest: the sweep is the backstop),
    ``refusal`` (to be recorded), ``refused`` (already recorded).
    """

    key: str
    outcome: str
    run_id: str | None = None

    def settled(self, claimed: frozenset[str] | set[str] = frozenset(), recorded: bool = False) -> bool:
        """Whether the cursor may move past this arrival, given the run ids claimed by now."""
        if self.outcome in ("held", "missing", "refused"):
            return True
        if self.outcome == "refusal":
            return recorded
        return self.run_id in claimed


@dataclass
class WatchState:
    """The watcher's remembered position (``_watcher/state.json``)."""

    cursor: str = ""
    last_sweep_at: str | None = None
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> {attempts, next_at}
    etag: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "last_sweep_at": self.last_sweep_at, "retries": self.retries}


@dataclass
class Scan:
    """What one poll found: the work for the claim task (JSON round-trips through XCom)."""

    bucket: str
    cursor: str
    state_etag: str | None
    scanned_at: str
    swept: bool = False
    drops: list[Drop] = field(default_factory=list)
    waiting: list[Drop] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    index: dict[str, str] = field(default_factory=dict)  # settled manifest key -> LastModified
    swept_read: int = 0  # manifests the sweep considered (unknown to the index)
    swept_indexed: int = 0  # of those, manifests settled (claimed elsewhere, refused) the index now learns
    requests: int = 0  # S3 requests this scan made

    @property
    def cursor_can_move(self) -> bool:
        return advance_cursor(self.cursor, [(a.key, a.settled()) for a in self.arrivals]) != self.cursor

    @property
    def has_work(self) -> bool:
        """Whether the claim task has anything to do: drops to trigger, refusals or settled
        arrivals to record, or manifests the sweep learnt about."""
        return bool(self.drops or self.refusals or self.swept_indexed or self.cursor_can_move)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["drops"] = [d.to_dict() for d in self.drops]
        data["waiting"] = [d.to_dict() for d in self.waiting]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scan:
        return cls(bucket=data["bucket"], cursor=data["cursor"], state_etag=data.get("state_etag"),
                   scanned_at=data["scanned_at"], swept=data.get("swept", False),
                   drops=[Drop.from_dict(d) for d in data.get("drops", [])],
                   waiting=[Drop.from_dict(d) for d in data.get("waiting", [])],
                   refusals=[Refusal(**r) for r in data.get("refusals", [])],
                   arrivals=[Arrival(**a) for a in data.get("arrivals", [])],
                   index=dict(data.get("index", {})), swept_read=data.get("swept_read", 0),
                   swept_indexed=data.get("swept_indexed", 0),
                   requests=data.get("requests", 0))


# -- S3 I/O ------------------------------------------------------------------------------------


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _not_found(exc: Exception) -> bool:
    return _code(exc) in ("NoSuchKey", "404", "NotFound")


STATE_OBJECT_MAX_BYTES = 16 * 1024 * 1024
"""Most bytes read of a watcher object (state, index, claim): the index is ~100 bytes a drop."""


class WatchStateError(ValueError):
    """A watcher object (claim, state, index, release request) that is not what the watcher wrote."""


def _get(s3: Any, bucket: str, key: str, *, limit: int = STATE_OBJECT_MAX_BYTES) -> tuple[bytes, str, datetime] | None:
    """``(body, etag, LastModified)`` of ``key``, or ``None`` when it does not exist.

    At most ``limit + 1`` bytes are read: a longer body comes back cut there, so that whoever
    parses it refuses it by its size instead of the poll holding an unbounded object in memory.
    """
    from botocore.exceptions import ClientError

    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _not_found(exc):
            return None
        raise
    with answer["Body"] as stream:
        body = stream.read(limit + 1)
    return body, answer["ETag"], answer["LastModified"]


def _record(found: tuple[bytes, str, datetime], bucket: str, key: str) -> dict[str, Any]:
    """A watcher object's JSON record; a clear error naming the object when it is not one."""
    body = found[0]
    try:
        if len(body) > STATE_OBJECT_MAX_BYTES:
            raise ValueError(f"larger than {STATE_OBJECT_MAX_BYTES} bytes")
        record = json.loads(body)
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise WatchStateError(f"s3://{bucket}/{key}: not a watcher record ({str(exc)[:200]}); fix: restore it "
                              "from its version history, or delete it (a claim: the drop is then found "
                              "again; the state or index: the next poll sweeps the bucket)") from None
    return record


def _put_json(s3: Any, bucket: str, key: str, payload: Any, *, if_match: str | None = None,
              if_none_match: bool = False) -> str | None:
    """PUT ``payload`` conditionally; the new ETag, or ``None`` when the condition failed."""
    from botocore.exceptions import ClientError

    condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if if_none_match else {}
    try:
        answer = s3.put_object(Bucket=bucket, Key=key, Body=(json.dumps(payload, indent=2) + "\n").encode(),
                               ContentType="application/json", **condition)
    except ClientError as exc:
        if _code(exc) in _PRECONDITION or (if_match and _not_found(exc)):
            return None
        raise
    return str(answer.get("ETag", ""))


def read_state(s3: Any, bucket: str) -> WatchState:
    """The watcher's state in ``bucket`` (a fresh one when there is none)."""
    found = _get(s3, bucket, STATE_KEY)
    if found is None:
        return WatchState()
    data = _record(found, bucket, STATE_KEY)
    return WatchState(cursor=data.get("cursor", ""), last_sweep_at=data.get("last_sweep_at"),
                      retries=dict(data.get("retries", {})), etag=found[1])


def read_index(s3: Any, bucket: str) -> tuple[dict[str, str], str | None]:
    """The sweep index (manifest key -> LastModified) and its ETag."""
    found = _get(s3, bucket, INDEX_KEY)
    if found is None:
        return {}, None
    manifests = _record(found, bucket, INDEX_KEY).get("manifests", {})
    if not isinstance(manifests, dict):
        raise WatchStateError(f"s3://{bucket}/{INDEX_KEY}: field 'manifests' is not a mapping; fix: delete the "
                              "index (the next poll sweeps the bucket and writes it again)")
    return dict(manifests), found[1]


def read_claim(s3: Any, bucket: str, model: str, hex_digest: str) -> Claim | None:
    """The claim of ``(model, hex)``, or ``None``."""
    key = claim_key(model, hex_digest)
    found = _get(s3, bucket, key)
    if found is None:
        return None
    record = _record(found, bucket, key)
    try:
        claim = Claim.from_record(record, found[1])
        _time(claim.arrived_at)
        if claim.state not in (CLAIMED, RELEASED) or claim.generation < 1 or not isinstance(claim.run_id, str):
            raise ValueError(f"state {claim.state!r}, generation {claim.generation!r}")
    except (TypeError, ValueError) as exc:
        raise WatchStateError(f"s3://{bucket}/{key}: not a claim the watcher wrote ({str(exc)[:200]}); fix: "
                              "delete it (the drop is then found and claimed again)") from None
    return claim


def identity_of(body: bytes, uri: str) -> tuple[str, str]:
    """``(kind, hex)`` of a manifest: its weight digest, or the SHA-256 of bytes that do not parse."""
    try:
        return WEIGHT_DIGEST, load_drop_manifest(body, uri).weight_digest
    except ManifestError as exc:  # malformed, or over MANIFEST_MAX_BYTES (``body`` is then cut)
        log.warning("%s cannot be parsed (%s): it will be received and rejected", uri, str(exc).splitlines()[0])
        return MANIFEST_SHA256, hashlib.sha256(body).hexdigest()


class _Scanner:
    """One poll's reads, with per-poll caches of manifests and claims."""

    def __init__(self, s3: Any, bucket: str, state: WatchState, now: datetime) -> None:
        self.s3, self.bucket, self.state, self.now = s3, bucket, state, now
        self.result = Scan(bucket=bucket, cursor=state.cursor, state_etag=state.etag, scanned_at=stamp(now))
        self.seen: set[str] = set()  # manifest keys considered in this poll
        self.claims: dict[tuple[str, str], Claim | None] = {}
        self.new: dict[tuple[str, str], Drop] = {}

    def _count(self, n: int = 1) -> None:
        self.result.requests += n

    def fast_path(self) -> None:
        """Arrival records after the cursor, in order."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": ARRIVALS_PREFIX}
        if self.state.cursor:
            kwargs["StartAfter"] = self.state.cursor
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
            self._count()
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        for key in sorted(keys):
            parsed = parse_arrival_key(key)
            if parsed is None:
                outcome = self._refuse(key, "is not an arrival record name",
                                       "_arrivals/<UTC %Y%m%dT%H%M%S.%fZ>__<model>__<revision>.json",
                                       "write arrival records with llmops.refresh.drop_watch.arrival_key(), "
                                       "or delete this object")
                self.result.arrivals.append(Arrival(key, outcome))
                continue
            _, model, revision = parsed
            outcome, run_id = self.consider(manifest_key(model, revision), model, revision, arrival=key)
            self.result.arrivals.append(Arrival(key, outcome, run_id))

    def sweep(self) -> None:
        """Every ``<model>/<revision>/manifest.json``, reading the body only of manifests the index lacks."""
        index, _ = read_index(self.s3, self.bucket)
        self._count()
        self.result.swept = True
        tops = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Delimiter="/"):
            self._count()
            tops.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        found = []
        for top in sorted(tops):
            if top.rstrip("/") in RESERVED_TOP:
                continue
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=top):
                self._count()
                for obj in page.get("Contents", []):
                    parts = obj["Key"].split("/")
                    if len(parts) == 3 and parts[2] == MANIFEST_NAME:
                        found.append((stamp(obj["LastModified"]), obj["Key"], parts[0], parts[1]))
        for last_modified, key, model, revision in sorted(found):
            if key in self.seen or index.get(key) == last_modified:
                continue
            self.result.swept_read += 1
            self.consider(key, model, revision, arrival=None, last_modified=last_modified)
            if key in self.result.index:
                self.result.swept_indexed += 1

    def consider(self, key: str, model: str, revision: str, arrival: str | None,
                 last_modified: str | None = None) -> tuple[str, str | None]:
        """Decide about the manifest ``key``: ``(outcome, run id)`` (see :class:`Arrival`).

        ``last_modified``: the manifest's, when a listing gave it (the sweep); settled manifests
        go into the sweep index with it.
        """
        self.seen.add(key)
        problem = drop_name_problem(model, revision)
        if problem is not None:
            outcome = self._refuse(key, f"the drop's {problem.segment} {problem.value!r} is not a valid name",
                                   problem.rule, problem.fix + " (publish_drop refuses such names)")
            if last_modified:  # refused once recorded (the claim task records it before the index)
                self.result.index[key] = last_modified
            return outcome, None
        found = _get(self.s3, self.bucket, key, limit=MANIFEST_MAX_BYTES)
        self._count()
        if found is None:
            log.warning("s3://%s/%s: arrival recorded but no manifest; the sweep will find it if it appears",
                        self.bucket, key)
            return "missing", None
        body, etag, last_modified = found
        arrived_at = stamp(last_modified)
        kind, hex_digest = identity_of(body, f"s3://{self.bucket}/{key}")
        if (model, hex_digest) in self.new:
            return "same", self.new[(model, hex_digest)].run_id
        if (model, hex_digest) not in self.claims:
            self.claims[(model, hex_digest)] = read_claim(self.s3, self.bucket, model, hex_digest)
            self._count()
        claim = self.claims[(model, hex_digest)]
        is_new, generation = claim_decision(arrived_at, claim)
        if not is_new:
            self.result.index[key] = arrived_at
            return "held", None
        drop = Drop(bucket=self.bucket, model=model, revision=revision, kind=kind, hex=hex_digest,
                    manifest_etag=etag.strip('"'), arrived_at=arrived_at, generation=generation,
                    claim_etag=claim.etag if claim else None, arrival=arrival)
        self.new[(model, hex_digest)] = drop
        retry = self.state.retries.get(drop.run_id)
        if retry and _time(retry["next_at"]) > self.now:
            self.result.waiting.append(drop)
            return "waiting", drop.run_id
        self.result.drops.append(drop)
        return "new", drop.run_id

    def _refuse(self, key: str, reason: str, rule: str, fix: str) -> str:
        if any(r.key == key for r in self.result.refusals):
            return "refusal"
        exists = _get(self.s3, self.bucket, refusal_key(key)) is not None
        self._count()
        if exists:
            return "refused"
        self.result.refusals.append(Refusal(key=key, reason=reason, rule=rule, fix=fix))
        return "refusal"


def scan(s3: Any, bucket: str, state: WatchState | None = None, *, now: datetime | None = None,
         sweep_interval_s: float = 900.0, sweep: bool | None = None) -> Scan:
    """One poll of ``bucket`` (read only): the arrivals after the cursor, and a full sweep when due.

    ``state`` defaults to the bucket's (one GET); ``sweep`` forces (True) or skips (False) the
    sweep instead of :func:`sweep_due`.
    """
    now = now or datetime.now(UTC)
    if state is None:
        state = read_state(s3, bucket)
    scanner = _Scanner(s3, bucket, state, now)
    scanner.fast_path()
    if sweep_due(state.last_sweep_at, now, sweep_interval_s) if sweep is None else sweep:
        scanner.sweep()
    return scanner.result


def _claim_record(drop: Drop, claimed_by: str, now: datetime, previous: Claim | None) -> dict[str, Any]:
    history = list(previous.record.get("history", [])) if previous else []
    if previous:
        history.append({k: previous.record.get(k) for k in ("generation", "run_id", "revision", "arrived_at",
                                                            "released_at", "release_reason")})
    return {"model": drop.model, "kind": drop.kind, "hex": drop.hex, "identity": drop.identity,
            "state": CLAIMED, "generation": drop.generation, "run_id": drop.run_id,
            "revision": drop.revision, "manifest_key": drop.manifest_key, "manifest_etag": drop.manifest_etag,
            "arrived_at": drop.arrived_at, "arrival": drop.arrival, "uri": drop.uri,
            "claimed_by": claimed_by, "claimed_at": stamp(now), "history": history}


def write_claim(s3: Any, drop: Drop, claimed_by: str, now: datetime | None = None) -> bool:
    """Record the claim of ``drop`` (conditional write); True when the claim now names ``drop.run_id``.

    A first claim is written only where none exists, a re-claim only over the released claim
    the scan saw (its ETag). When someone else wrote first, True only if theirs names the same run.
    A release its run asked for before the claim was recorded is applied right after.
    """
    now = now or datetime.now(UTC)
    previous = None
    if drop.claim_etag is not None:
        previous = read_claim(s3, drop.bucket, drop.model, drop.hex)
        if previous is None or previous.etag != drop.claim_etag:
            return previous is not None and previous.run_id == drop.run_id
    record = _claim_record(drop, claimed_by, now, previous)
    written = _put_json(s3, drop.bucket, claim_key(drop.model, drop.hex), record,
                        if_match=drop.claim_etag, if_none_match=drop.claim_etag is None)
    current = read_claim(s3, drop.bucket, drop.model, drop.hex) if written is None else None
    if written is None and (current is None or current.run_id != drop.run_id):
        return False
    _honour_release_request(s3, drop)
    return True


def record_refusal(s3: Any, bucket: str, refusal: Refusal, now: datetime | None = None) -> bool:
    """Record ``refusal`` once (``If-None-Match: *``); True when this call recorded it."""
    record = {**refusal.to_dict(), "uri": f"s3://{bucket}/{refusal.key}", "found_at": stamp(now or datetime.now(UTC))}
    return _put_json(s3, bucket, refusal_key(refusal.key), record, if_none_match=True) is not None


def record_claims(s3: Any, scan_result: Scan, run_exists: Callable[[str], bool], claimed_by: str,
                  now: datetime | None = None) -> dict[str, Any]:
    """After the triggers: claim each drop whose ``model_refresh`` run exists, record refusals,
    move the cursor past what is settled, and update the sweep index and the state.

    ``run_exists(run_id)`` asks Airflow. A drop whose run does not exist stays unclaimed (its
    trigger failed) and is retried after :func:`retry_delay_s`. Returns a JSON-ready summary.
    """
    now = now or datetime.now(UTC)
    bucket = scan_result.bucket
    claimed, pending = [], []
    for drop in scan_result.drops:
        if run_exists(drop.run_id) and write_claim(s3, drop, claimed_by, now):
            claimed.append(drop)
        else:
            pending.append(drop)
            log.warning("%s: no %s run %s (its trigger failed): left unclaimed, retried on a later poll",
                        drop.uri, "model_refresh", drop.run_id)
    for refusal in scan_result.refusals:
        if record_refusal(s3, bucket, refusal, now):
            log.error("refused s3://%s/%s: %s; rule: %s; fix: %s", bucket, refusal.key, refusal.reason,
                      refusal.rule, refusal.fix)
    claimed_ids = {d.run_id for d in claimed}
    cursor = advance_cursor(scan_result.cursor, [(a.key, a.settled(claimed_ids, recorded=True))
                                                 for a in scan_result.arrivals])
    index_added = {**scan_result.index, **{d.manifest_key: d.arrived_at for d in claimed}}
    if index_added:
        update_index(s3, bucket, index_added)
    retries: dict[str, dict[str, Any]] = {}
    state = read_state(s3, bucket)
    for drop in scan_result.waiting:
        if drop.run_id in state.retries:
            retries[drop.run_id] = state.retries[drop.run_id]
    for drop in pending:
        attempts = int(state.retries.get(drop.run_id, {}).get("attempts", 0)) + 1
        retries[drop.run_id] = {"attempts": attempts,
                                "next_at": stamp(now + timedelta(seconds=retry_delay_s(attempts)))}
    new_state = WatchState(cursor=max(cursor, state.cursor), retries=retries,
                           last_sweep_at=scan_result.scanned_at if scan_result.swept else state.last_sweep_at,
                           etag=state.etag)
    saved = save_state(s3, bucket, new_state)
    if not saved:
        log.warning("s3://%s/%s changed while recording: the cursor stays; the next poll redoes the work",
                    bucket, STATE_KEY)
    return {"claimed": [{"run_id": d.run_id, "uri": d.uri, "generation": d.generation} for d in claimed],
            "pending": [{"run_id": d.run_id, "uri": d.uri, "retry_at": retries[d.run_id]["next_at"]} for d in pending],
            "refused": [r.to_dict() for r in scan_result.refusals],
            "cursor": {"from": scan_result.cursor, "to": new_state.cursor if saved else state.cursor},
            "swept": scan_result.swept, "indexed": len(index_added)}


def save_state(s3: Any, bucket: str, state: WatchState) -> bool:
    """Write ``state`` over the version it was read from (``state.etag``; ``None``: only where none exists).

    False when the state changed in between (nothing written).
    """
    return _put_json(s3, bucket, STATE_KEY, state.to_record(), if_match=state.etag,
                     if_none_match=state.etag is None) is not None


def update_index(s3: Any, bucket: str, entries: dict[str, str], attempts: int = 3) -> bool:
    """Merge ``entries`` (manifest key -> LastModified) into the sweep index (read-modify-write, If-Match)."""
    for _ in range(attempts):
        index, etag = read_index(s3, bucket)
        if all(index.get(k) == v for k, v in entries.items()):
            return True
        index.update(entries)
        if _put_json(s3, bucket, INDEX_KEY, {"manifests": index}, if_match=etag, if_none_match=etag is None):
            return True
    log.warning("s3://%s/%s kept changing: not updated (the next sweep reads those manifests again)", bucket, INDEX_KEY)
    return False


def release_key(run_id: str) -> str:
    """Where a release asked for before its claim was recorded waits: ``_releases/<run id>.json``."""
    return f"{RELEASES_PREFIX}{run_id}.json"


def _flip_to_released(s3: Any, bucket: str, model: str, hex24: str, run_id: str, reason: str) -> str:
    """Flip the claim of ``model``/``hex24`` held by ``run_id``: ``released``, ``not-held`` or ``absent``."""
    prefix = f"{CLAIMS_PREFIX}{model}/{hex24}"
    keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])]
    for key in keys:
        found = _get(s3, bucket, key)
        if found is None:
            continue
        record = _record(found, bucket, key)
        if record.get("run_id") != run_id:
            continue
        if record.get("state") != CLAIMED:
            log.info("s3://%s/%s: already released", bucket, key)
            return "not-held"
        released = {**record, "state": RELEASED, "released_at": stamp(datetime.now(UTC)),
                    "released_by": run_id, "release_reason": reason}
        if _put_json(s3, bucket, key, released, if_match=found[1]) is None:
            log.warning("s3://%s/%s changed while releasing it: left as it is", bucket, key)
            return "not-held"
        log.info("released s3://%s/%s (%s): a republished drop will be processed again", bucket, key, reason)
        return "released"
    return "not-held" if keys else "absent"


def release_claim(s3: Any, bucket: str, run_id: str, reason: str) -> bool:
    """Release the claim held by the ``model_refresh`` run ``run_id``, so a republished drop is new again.

    Finds the claim from the run id alone (one LIST of ``_claims/<model>/<hex24>``) and flips it
    to ``released`` with a conditional write (``If-Match``), only if it is held by ``run_id``.
    A run that fails before the watcher recorded its claim (the claim is recorded after the
    trigger) leaves a release request ``_releases/<run id>.json`` that the watcher honours when it
    records the claim; each side writes first and looks second, so neither order loses the release.

    Returns True when this call released the claim or left the release request; False for a run
    the watcher did not start (``manual__...``), a claim held by another run or generation, or
    one already released.
    """
    parsed = parse_run_id(run_id)
    if parsed is None:
        log.info("%s was not started by the weight-drop watcher: no claim to release", run_id)
        return False
    model, hex24, _ = parsed
    outcome = _flip_to_released(s3, bucket, model, hex24, run_id, reason)
    if outcome != "absent":
        if outcome == "not-held":
            log.warning("no claim in s3://%s/%s%s/%s* is held by %s: nothing released", bucket, CLAIMS_PREFIX,
                        model, hex24, run_id)
        return outcome == "released"
    request = {"run_id": run_id, "reason": reason, "requested_at": stamp(datetime.now(UTC))}
    if _put_json(s3, bucket, release_key(run_id), request, if_none_match=True) is None:
        return False  # asked for already
    if _flip_to_released(s3, bucket, model, hex24, run_id, reason) == "released":  # recorded meanwhile
        return True
    log.info("the claim of %s is not recorded yet: the watcher releases it when it records it", run_id)
    return True


def _honour_release_request(s3: Any, drop: Drop) -> None:
    """After recording a claim: release it at once if its run asked for that first."""
    found = _get(s3, drop.bucket, release_key(drop.run_id))
    if found is not None:
        reason = str(_record(found, drop.bucket, release_key(drop.run_id)).get(
            "reason", "released by its run before the claim was recorded"))
        _flip_to_released(s3, drop.bucket, drop.model, drop.hex[:HEX24], drop.run_id, reason)


def trigger_kwargs(drops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``TriggerDagRunOperator`` kwargs (``trigger_run_id``, ``conf``) for each drop of a scan's ``drops``."""
    return [{"trigger_run_id": d["run_id"], "conf": {"model": d["model"], "drop_uri": d["uri"]}} for d in drops]
