"""The canary's approval wait, bounded: it times out into the outcome the user chose in Params.

An unanswered approval used to wait forever while the run held the model's refresh lease,
blocking every later refresh of that model. :class:`TimedApprovalOperator` reads, when it
starts waiting, how long to wait and what a timeout means from the run's Params; Airflow's
scheduler resolves a timed-out wait with that default answer (``check_awaiting_input_timeouts``),
so the run moves on without anyone: a ``reject`` outcome fails the approval, the canary's
version is tagged rejected, the routing teardown sends all traffic back to the champion and
the lease teardown releases the model.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

TIMEOUT_OUTCOMES = {"reject": ApprovalOperator.REJECT, "approve": ApprovalOperator.APPROVE}
"""Param value -> the answer Airflow records when nobody answers in time."""


def timeout_answer(outcome: str) -> str:
    """The approval answer a timeout records for the Param value ``outcome``."""
    try:
        return TIMEOUT_OUTCOMES[outcome]
    except KeyError:
        raise ValueError(f"approval timeout outcome {outcome!r} is not one of {sorted(TIMEOUT_OUTCOMES)}; "
                         f"fix: set the Param to 'reject' (roll back, release the lease) or 'approve'") from None


class TimedApprovalOperator(ApprovalOperator):
    """An approval whose wait and timeout answer come from the run's Params.

    ``timeout_param`` names an integer Param (minutes to wait), ``outcome_param`` a Param whose
    value is a key of :data:`TIMEOUT_OUTCOMES`.
    """

    def __init__(self, *, timeout_param: str, outcome_param: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout_param = timeout_param
        self.outcome_param = outcome_param

    def execute(self, context: Any) -> Any:
        params = context["params"]
        minutes = params[self.timeout_param]
        if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 1:
            raise ValueError(f"Param {self.timeout_param}={minutes!r}: expected whole minutes >= 1")
        self.response_timeout = timedelta(minutes=minutes)
        self.defaults = [timeout_answer(params[self.outcome_param])]
        self.log.info("waiting up to %d min for an answer; on timeout the answer is %r (Param %s)",
                      minutes, self.defaults[0], self.outcome_param)
        return super().execute(context)
