"""The writer's side of the endpoint limit: a task without an endpoint is written only if a
slot is free (README "Endpoint limit").

The gate sits here, in front of Outlook, because this is the last point where holding a task
back still means nothing was transferred; the decision is one Lua script in the ledger's Redis
keys, so it is exact however many writer replicas ask at once.
"""

from __future__ import annotations

from common.messages import TaskChanged
from services.ledger.endpoints import Claim, EndpointLedger


class EndpointGate:
    def __init__(self, ledger: EndpointLedger, limit: int) -> None:
        self._ledger = ledger
        self._limit = limit

    def admit(self, task: TaskChanged) -> Claim:
        """HOLDS or CLAIMED: write the task; HELD: the ledger keeps it until a slot frees up."""
        return self._ledger.claim(task.task_id, self._limit, task.model_dump_json())

    def give_back(self, task_id: str) -> None:
        """A claimed task ended up with no event: its slot goes back."""
        self._ledger.give_back(task_id)

    def forget(self, task_id: str) -> None:
        """A task left the selection: if it was held, it waits for nothing any more."""
        self._ledger.forget_held(task_id)
