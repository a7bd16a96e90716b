"""pytest plugin: `@pytest.mark.headroom(gpu="14GiB", ram="2GiB")` takes a lease from the guard around the test.

Options: --headroom-wait DURATION (queue up to this long, default 0), --headroom-refused skip|fail (default skip:
a refused or unreachable guard skips the test with the reason; fail makes pytest report an error, as the lease is
taken in a fixture, and the run exits non-zero), --headroom-config FILE. While queued, a progress line goes to the
terminal (or the CI log, every few seconds).
"""

from __future__ import annotations

import contextlib
import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("headroom", "leases from the headroom guard")
    group.addoption("--headroom-wait", default="0", help="queue for a lease up to this long, e.g. 10m (default 0)")
    group.addoption(
        "--headroom-refused", choices=("skip", "fail"), default="skip", help="what a refused lease does to the test"
    )
    group.addoption("--headroom-config", default=None, help="headroom config file (default $HEADROOM_CONFIG)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "headroom(gpu=None, ram=None, gpu_index=None, free_worker=False): "
        "hold a lease of GPU/RAM from the headroom guard while the test runs",
    )


@pytest.fixture(autouse=True)
def _headroom_lease(request):
    marker = request.node.get_closest_marker("headroom")
    if marker is None:
        yield None
        return
    from headroom.client.http import GuardClient, GuardRejected, GuardUnreachable
    from headroom.client.lease import LeaseNotGranted, acquire_showing, client_settings, lease_body
    from headroom.sizes import parse_duration

    options = request.config.option
    settings, found = client_settings(options.headroom_config)
    kwargs = dict(marker.kwargs)
    body = lease_body(
        f"pytest:{request.node.nodeid}"[:200],
        kwargs.get("gpu"),
        kwargs.get("ram"),
        kwargs.get("gpu_index"),
        settings.run.ttl_seconds,
        bool(kwargs.get("free_worker")),
        os.getpid(),
    )
    client = GuardClient.from_settings(settings, found=found)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    shown = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    try:
        with shown:  # the wait's progress line reaches the terminal (or CI log) while pytest captures output
            held = acquire_showing(
                client,
                body,
                parse_duration(kwargs.get("wait", options.headroom_wait)),
                f"headroom lease for {request.node.name}",
            )
    except (LeaseNotGranted, GuardUnreachable, GuardRejected) as err:
        client.close()
        message = f"headroom lease not granted: {err}"
        pytest.fail(message, pytrace=False) if options.headroom_refused == "fail" else pytest.skip(message)
    held.start_heartbeats()
    try:
        yield held
    finally:
        held.release()
        client.close()
