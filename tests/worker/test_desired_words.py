"""One desired state for guard and worker: what the guard asks, the worker accepts and echoes, and the guard reads back
as the same target (headroom/contract.py Desired, target())."""

from __future__ import annotations

import pytest

from guard.targets.actuator import in_sync
from headroom.contract import Desired, StateRequest, WorkerState, WorkerStatus
from worker.control import to_desired

ASKED = [Desired(WorkerState.RUNNING, reason="ok"), Desired(WorkerState.THROTTLED, concurrency=3, reason="psi"),
         Desired(WorkerState.PAUSED, reason="ram"), Desired(WorkerState.FREED, level=2, reason="lease")]


@pytest.mark.parametrize("asked", ASKED, ids=lambda d: d.describe())
def test_what_the_guard_asks_the_worker_accepts_and_the_guard_reads_back_as_the_same_target(asked):
    body = StateRequest(state=asked.state, concurrency=asked.concurrency, level=asked.level, reason=asked.reason,
                        requested_by="headroom-guard")
    accepted = to_desired(body, now=1_000.0)
    assert accepted.key() == asked.key() and accepted.at == 1_000.0 and accepted.requested_by == "headroom-guard"
    echoed = WorkerStatus(state=asked.state, desired=accepted.as_dict())
    assert in_sync(echoed, asked)
    assert not in_sync(echoed, Desired(WorkerState.THROTTLED, concurrency=99))


def test_a_different_concurrency_or_level_is_another_target_and_a_stray_one_is_not():
    assert Desired(WorkerState.THROTTLED, concurrency=2).key() != Desired(WorkerState.THROTTLED, concurrency=3).key()
    assert Desired(WorkerState.FREED, level=1).key() != Desired(WorkerState.FREED, level=2).key()
    assert Desired(WorkerState.PAUSED, level=2).key() == Desired(WorkerState.PAUSED).key()  # level only counts when freed
    with pytest.raises(ValueError, match="cannot be asked to be freeing"):
        Desired(WorkerState.FREEING)
