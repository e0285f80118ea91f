"""A deferrable sensor that waits for new weight drops without holding a worker slot.

The sensor looks once; when nothing is new it defers to :class:`NewWeightDropTrigger`, which
polls the drops bucket from the triggerer (asyncio, boto3 in a thread) and wakes the task with
the poll's :class:`llmops.refresh.drop_watch.Scan` as a dict. Both only read: the claim task
after the triggers records claims and moves the cursor (see :mod:`llmops.refresh.drop_watch`).
The trigger reads the watcher's state once and keeps it while it waits (only the claim task of
a later step changes it), so a quiet poll is one LIST of the arrival records.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.triggers.base import BaseTrigger, TriggerEvent

S3_CONN_ID = "llmops_s3"
DEFAULT_SWEEP_INTERVAL_S = 900.0


def find_new_drops(conn_id: str, bucket: str, sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S) -> dict[str, Any]:
    """One poll of ``bucket`` (read only): the scan as a dict (what the sensor returns)."""
    from llmops.io.s3 import client_from_connection
    from llmops.refresh.drop_watch import scan

    return scan(client_from_connection(conn_id), bucket, sweep_interval_s=sweep_interval_s).to_dict()


class NewWeightDropTrigger(BaseTrigger):
    """Fires once a poll of ``bucket`` finds work: new drops, refusals, or arrivals to move past."""

    def __init__(self, bucket: str, conn_id: str = S3_CONN_ID, poll_interval_s: float = 30.0,
                 sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S) -> None:
        super().__init__()
        self.bucket = bucket
        self.conn_id = conn_id
        self.poll_interval_s = poll_interval_s
        self.sweep_interval_s = sweep_interval_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("llmops.refresh.drop_sensor.NewWeightDropTrigger",
                {"bucket": self.bucket, "conn_id": self.conn_id, "poll_interval_s": self.poll_interval_s,
                 "sweep_interval_s": self.sweep_interval_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from llmops.io.s3 import client_from_connection
        from llmops.refresh.drop_watch import read_state, scan

        s3 = await asyncio.to_thread(client_from_connection, self.conn_id)
        state = await asyncio.to_thread(read_state, s3, self.bucket)
        while True:
            found = await asyncio.to_thread(scan, s3, self.bucket, state, now=datetime.now(UTC),
                                            sweep_interval_s=self.sweep_interval_s)
            if found.has_work:
                yield TriggerEvent({"scan": found.to_dict()})
                return
            if found.swept:  # a sweep that found nothing: not again before the interval
                state.last_sweep_at = found.scanned_at
            await asyncio.sleep(self.poll_interval_s)


class WeightDropSensor(BaseSensorOperator):
    """Succeeds with a scan that has work (see :class:`NewWeightDropTrigger`); defers while there is none."""

    template_fields = ("bucket",)

    def __init__(self, *, bucket: str, conn_id: str = S3_CONN_ID, poll_interval_s: float = 30.0,
                 sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S, deferrable: bool = True,
                 **kwargs: Any) -> None:
        kwargs.setdefault("timeout", timedelta(hours=23).total_seconds())
        kwargs.setdefault("poke_interval", poll_interval_s)
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.bucket = bucket
        self.conn_id = conn_id
        self.poll_interval_s = poll_interval_s
        self.sweep_interval_s = sweep_interval_s

    def poke(self, context: Any) -> PokeReturnValue:
        """One poll; done when it found work (the scan is the XCom value)."""
        from llmops.refresh.drop_watch import Scan

        found = find_new_drops(self.conn_id, self.bucket, self.sweep_interval_s)
        return PokeReturnValue(is_done=Scan.from_dict(found).has_work, xcom_value=found)

    def execute(self, context: Any) -> dict[str, Any] | None:
        if not self.deferrable:  # classic poke/reschedule mode
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        self.defer(trigger=NewWeightDropTrigger(self.bucket, self.conn_id, self.poll_interval_s,
                                                self.sweep_interval_s),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout))
        return None  # not reached: defer() raises

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume with the scan the trigger made."""
        return event["scan"]
