"""A queued `headroom run` dies with its client: SIGTERM/SIGHUP withdraw the request and exit 128+N; after a SIGKILL
the guard withdraws it itself within seconds, and never grants it to the dead process."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from tests.helpers import wait_for
from tests.run.conftest import LIMIT, headroom

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]
PY = sys.executable
SIXTY_PERCENT = str(int(LIMIT * 0.6))


def queued_behind_a_holder(stack):
    """A first run that holds 60 % of the domain, and a second one queued behind it; returns (first, second, waiting)."""
    first = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--holder", "first", "--", PY, "-c", "import time; time.sleep(30)")
    wait_for(lambda: len(stack.guard.get("/v1/leases").json()["leases"]) == 1, 20, what="the first lease")
    second = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--holder", "second", "--", PY, "-c", "print('ran')")

    def waiting():
        return [l for l in stack.guard.get("/v1/leases").json()["leases"] if l["holder"] == "second" and l["status"] == "waiting"]

    wait_for(waiting, 20, what="the second request to be queued")
    return first, second, waiting


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_while_queued_withdraws_and_exits_128_plus_n(stack_factory, signum):
    stack = stack_factory()
    first, second, waiting = queued_behind_a_holder(stack)
    second.send_signal(signum)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 128 + signum, err
    assert "ran" not in out and "cancelled while waiting" in err and "withdrawn" in err, err
    assert not waiting(), "the queued request was withdrawn"
    first.send_signal(signal.SIGTERM)
    first.wait(30)


def test_a_sigkilled_client_loses_its_place_within_seconds(stack_factory):
    stack = stack_factory()
    first, second, waiting = queued_behind_a_holder(stack)
    lease_id = waiting()[0]["id"]
    second.kill()
    second.wait(10)
    killed_at = time.monotonic()
    wait_for(lambda: not waiting(), 20, what="the guard to withdraw the dead client's request")
    assert time.monotonic() - killed_at < 12
    ended = stack.guard.get(f"/v1/leases/{lease_id}").json()
    assert ended["status"] == "refused" and "stopped polling" in ended["lease"]["reason"], ended
    first.send_signal(signal.SIGTERM)
    first.wait(30)
