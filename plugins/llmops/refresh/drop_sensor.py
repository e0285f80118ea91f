"""A deferrable sensor that waits for new weight drops without holding a worker slot.

The sensor looks once; when nothing is new it defers to :class:`NewWeightDropTrigger`,
which polls the drops bucket from the triggerer (asyncio, boto3 in a thread) and wakes
the task with the new drops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

S3_CONN_ID = "llmops_s3"


def find_new_drops(conn_id: str, bucket: str) -> list[dict[str, Any]]:
    """Unclaimed drops in ``bucket``, as dicts (what the sensor returns)."""
    from llmops.io.s3 import client_from_connection
    from llmops.refresh.drop_watch import unclaimed

    return [drop.to_dict() for drop in unclaimed(client_from_connection(conn_id), bucket)]


class NewWeightDropTrigger(BaseTrigger):
    """Fires once unclaimed drops exist in ``bucket``."""

    def __init__(self, bucket: str, conn_id: str = S3_CONN_ID, poll_interval_s: float = 30.0) -> None:
        super().__init__()
        self.bucket = bucket
        self.conn_id = conn_id
        self.poll_interval_s = poll_interval_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("llmops.refresh.drop_sensor.NewWeightDropTrigger",
                {"bucket": self.bucket, "conn_id": self.conn_id, "poll_interval_s": self.poll_interval_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            drops = await asyncio.to_thread(find_new_drops, self.conn_id, self.bucket)
            if drops:
                yield TriggerEvent({"drops": drops})
                return
            await asyncio.sleep(self.poll_interval_s)


class WeightDropSensor(BaseSensorOperator):
    """Succeeds with the list of new (unclaimed) drops; defers while there are none."""

    template_fields = ("bucket",)

    def __init__(self, *, bucket: str, conn_id: str = S3_CONN_ID, poll_interval_s: float = 30.0,
                 deferrable: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", timedelta(hours=23).total_seconds())
        kwargs.setdefault("poke_interval", poll_interval_s)
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.bucket = bucket
        self.conn_id = conn_id
        self.poll_interval_s = poll_interval_s

    def poke(self, context: Any) -> bool:  # the sensor contract; execute() defers instead of poking again
        return bool(find_new_drops(self.conn_id, self.bucket))

    def execute(self, context: Any) -> list[dict[str, Any]]:
        drops = find_new_drops(self.conn_id, self.bucket)
        if drops:
            return drops
        if not self.deferrable:  # classic poke/reschedule mode
            super().execute(context)
            return find_new_drops(self.conn_id, self.bucket)
        self.defer(trigger=NewWeightDropTrigger(self.bucket, self.conn_id, self.poll_interval_s),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout))
        return []  # not reached: defer() raises

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Resume with the drops the trigger found."""
        return event["drops"]
