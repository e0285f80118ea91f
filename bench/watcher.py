"""The weight-drop watcher's poll cost as drops accumulate, against the old full rescan.

On a real S3 endpoint (moto's ``ThreadedMotoServer``), a drops bucket is filled with 100, then
1,000, then 10,000 historical drops, each already claimed and known to the watcher (manifest,
arrival record and claim per drop; the watcher's cursor after the last arrival and its sweep
index holding every manifest). At each size it times, with every S3 request counted:

- **poll**: the fast path of a quiet poll as the trigger runs it (state in memory: one LIST of
  the arrival records after the cursor);
- **first look**: the sensor's first poll (reads the state, then the fast path);
- **new drop**: a poll that finds one new drop (its manifest and claim read), recorded after;
- **sweep**: the periodic full sweep with a warm index (lists every manifest, reads no body);
- **old rescan** (the baseline): what every poll used to do: list the whole bucket, GET every
  manifest and HEAD every claim.

It prints seconds and requests per size, old rescan / poll per size, and poll(10k) / poll(100)
against the old rescan's. The requests are the measure of the design (a poll is one LIST at
any size; the old rescan two per drop); seconds also carry moto's own cost, which scans every
key of the bucket on each LIST (real S3 does not): the time of one LIST of an empty prefix is
printed beside, as that floor. Timings are medians of ``--repeat`` runs after one warm-up (the
old rescan: of 3, or 1 above 1,000 drops). Not part of the tests; about 4 minutes on 2 cores.

    PYTHONPATH=plugins .venv/bin/python bench/watcher.py [--sizes 100,1000,10000] [--repeat 15] [--http-writes]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

BUCKET = "bench-drops"
MODEL = "bench-model"
IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "5e" * 32
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Counter:
    """Counts the HTTP requests an S3 client sends (botocore's before-send event)."""

    def __init__(self, s3: Any) -> None:
        self.n = 0
        s3.meta.events.register("before-send.s3.*", self._count)

    def _count(self, **_: Any) -> None:
        self.n += 1


def _manifest(revision: str, weights_sha: str) -> bytes:
    return json.dumps({"model": MODEL, "model_family": "llama", "source": "file:///bench", "revision": revision,
                       "runtime_image": IMAGE, "created_at": "2026-01-01T00:00:00+00:00",
                       "files": [{"path": "model.safetensors", "size": 1, "sha256": weights_sha}]}).encode()


def write_historical(put: Callable[[str, bytes], Any], start: int, stop: int, threads: int) -> None:
    """Drops ``start..stop-1``: manifest, arrival record and claim each (what the watcher left behind)."""
    from llmops.core.manifests import weight_digest
    from llmops.refresh import drop_watch as dw

    def one(i: int) -> None:
        revision = f"r{i}"
        sha = hashlib.sha256(f"weights {i}".encode()).hexdigest()
        digest = weight_digest([{"path": "model.safetensors", "size": 1, "sha256": sha}])
        put(dw.manifest_key(MODEL, revision), _manifest(revision, sha))
        put(dw.arrival_key(MODEL, revision, EPOCH + timedelta(seconds=i)), b"{}")
        record = {"model": MODEL, "kind": dw.WEIGHT_DIGEST, "hex": digest, "state": dw.CLAIMED, "generation": 1,
                  "run_id": dw.run_id_for(MODEL, digest), "arrived_at": dw.stamp(datetime.now(UTC))}
        put(dw.claim_key(MODEL, digest), json.dumps(record).encode())

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(start, stop)))


def backend_put() -> Callable[[str, bytes], Any]:
    """A PUT straight into the in-process moto server's store (no HTTP): the historical drops are
    setup, not what is measured, and 30,000 HTTP PUTs would take minutes on 2 cores."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    return lambda key, body: backend.put_object(BUCKET, key, body)


def settle_watcher(s3: Any) -> None:
    """The watcher's state after processing every drop: cursor at the last arrival, a full sweep index."""
    from llmops.refresh import drop_watch as dw

    last_arrival, index = "", {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            if obj["Key"].startswith(dw.ARRIVALS_PREFIX):
                last_arrival = max(last_arrival, obj["Key"])
            elif obj["Key"].endswith("/" + dw.MANIFEST_NAME) and not obj["Key"].startswith("_"):
                index[obj["Key"]] = dw.stamp(obj["LastModified"])
    dw.update_index(s3, BUCKET, index)
    state = dw.read_state(s3, BUCKET)
    state.cursor, state.last_sweep_at = last_arrival, dw.stamp(datetime.now(UTC))
    assert dw.save_state(s3, BUCKET, state)


def old_full_rescan(s3: Any) -> int:
    """The watcher before: list the bucket, GET every manifest, HEAD every claim; the unclaimed count."""
    from botocore.exceptions import ClientError

    from llmops.refresh import drop_watch as dw

    fresh = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            parts = obj["Key"].split("/")
            if len(parts) != 3 or parts[2] != dw.MANIFEST_NAME or parts[0].startswith("_"):
                continue
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            _, hex_digest = dw.identity_of(body, obj["Key"])
            try:
                s3.head_object(Bucket=BUCKET, Key=dw.claim_key(parts[0], hex_digest))
            except ClientError:
                fresh += 1
    return fresh


def measure(counter: Counter, fn: Callable[[], Any], repeat: int,
            before: Callable[[], Any] | None = None) -> tuple[float, int, Any]:
    """Median seconds and the requests of one run of ``fn`` (``before`` runs untimed, uncounted)."""
    times, requests, result = [], 0, None
    if repeat > 1:  # one warm-up run, not counted (connection pool, caches)
        if before:
            before()
        fn()
    for _ in range(repeat):
        if before:
            before()
        start_n, start = counter.n, time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        requests = counter.n - start_n
    return statistics.median(times), requests, result


def main(argv: list[str] | None = None) -> int:
    """Build the bucket size by size, time each approach, print the table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="historical drops, comma-separated, increasing")
    parser.add_argument("--repeat", type=int, default=15, help="runs per timing (the median is reported)")
    parser.add_argument("--threads", type=int, default=8, help="threads writing the historical drops")
    parser.add_argument("--http-writes", action="store_true",
                        help="write the historical drops through HTTP PUTs (slow) instead of the server's store")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    from moto.server import ThreadedMotoServer

    from llmops.embedded.services import free_port
    from llmops.io import s3 as s3io
    from llmops.refresh import drop_watch as dw

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        s3 = s3io.client(endpoint_url=f"http://127.0.0.1:{port}", access_key_id="bench", secret_access_key="bench",
                         max_pool_connections=max(16, args.threads))
        s3.create_bucket(Bucket=BUCKET)
        counter = Counter(s3)
        put = (lambda key, body: s3.put_object(Bucket=BUCKET, Key=key, Body=body)) if args.http_writes \
            else backend_put()
        written = 0
        print(f"moto {__import__('moto').__version__} server on :{port}; {args.repeat} runs per timing")
        print(f"{'drops':>7} {'poll s':>9} {'req':>4} {'first look':>11} {'req':>4} {'new drop s':>11} {'req':>4} "
              f"{'sweep s':>8} {'req':>4} {'old rescan s':>13} {'req':>6} {'old/poll':>9} {'empty LIST s':>13}")
        for size in sizes:
            t0 = time.perf_counter()
            write_historical(put, written, size, args.threads)
            written = size
            settle_watcher(s3)
            build_s = time.perf_counter() - t0
            settled = dw.read_state(s3, BUCKET)
            poll = measure(counter, lambda state=settled: dw.scan(s3, BUCKET, state, sweep=False), args.repeat)
            assert not poll[2].has_work, "a settled bucket: nothing to do"
            first = measure(counter, lambda: dw.scan(s3, BUCKET, sweep=False), args.repeat)
            floor = measure(counter, lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix="_nothing/"), args.repeat)
            numbers = iter(range(10**6 + size * 100, 10**7))

            def deliver(new_drops: Any = numbers) -> None:
                i = next(new_drops)
                sha = hashlib.sha256(f"new {i}".encode()).hexdigest()
                s3.put_object(Bucket=BUCKET, Key=dw.manifest_key(MODEL, f"n{i}"), Body=_manifest(f"n{i}", sha))
                s3.put_object(Bucket=BUCKET, Key=dw.arrival_key(MODEL, f"n{i}", datetime.now(UTC)), Body=b"{}")

            def poll_and_record() -> dw.Scan:
                found = dw.scan(s3, BUCKET, dw.read_state(s3, BUCKET), sweep=False)
                assert len(found.drops) == 1
                return found

            new_times, new_req = [], 0
            for _ in range(max(3, args.repeat // 3)):
                deliver()
                seconds, new_req, found = measure(counter, poll_and_record, 1)
                new_times.append(seconds)
                dw.record_claims(s3, found, lambda _: True, claimed_by="bench")
            settled = dw.read_state(s3, BUCKET)
            sweep = measure(counter, lambda state=settled: dw.scan(s3, BUCKET, state, sweep=True),
                            max(1, args.repeat // 5))
            assert sweep[2].swept_read == 0, "a warm index: the sweep reads no manifest body"
            old = measure(counter, lambda: old_full_rescan(s3), 3 if size <= 1000 else 1)  # ~150 s at 10,000
            row = {"drops": size, "build_s": round(build_s, 1), "poll_s": poll[0], "poll_requests": poll[1],
                   "empty_list_s": floor[0],
                   "first_look_s": first[0], "first_look_requests": first[1],
                   "new_drop_s": statistics.median(new_times), "new_drop_requests": new_req,
                   "sweep_s": sweep[0], "sweep_requests": sweep[1],
                   "old_rescan_s": old[0], "old_rescan_requests": old[1]}
            rows.append(row)
            print(f"{size:>7} {poll[0]:>9.4f} {poll[1]:>4} {first[0]:>11.4f} {first[1]:>4} "
                  f"{row['new_drop_s']:>11.4f} {new_req:>4} {sweep[0]:>8.3f} {sweep[1]:>4} "
                  f"{old[0]:>13.3f} {old[1]:>6} {old[0] / poll[0]:>8.0f}x {floor[0]:>13.4f}", flush=True)
    finally:
        server.stop()
    small, large = rows[0], rows[-1]
    ratios = {key: large[key] / small[key]
              for key in ("poll_s", "first_look_s", "new_drop_s", "sweep_s", "old_rescan_s", "empty_list_s")}
    print(f"\npoll({large['drops']}) / poll({small['drops']}): {ratios['poll_s']:.2f} "
          f"(first look {ratios['first_look_s']:.2f}, new drop {ratios['new_drop_s']:.2f}); "
          f"sweep {ratios['sweep_s']:.1f}; old rescan {ratios['old_rescan_s']:.1f}")
    print(f"requests per poll: {small['poll_requests']} at {small['drops']} drops, {large['poll_requests']} at "
          f"{large['drops']}; moto's own LIST of an empty prefix grows {ratios['empty_list_s']:.1f}x over the same "
          f"range (moto scans every key of the bucket on each LIST; S3 does not)")
    print(f"total {time.perf_counter() - started:.0f} s")
    print(json.dumps({"bench": "watcher", "args": vars(args), "results": rows, "ratios_large_over_small": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
