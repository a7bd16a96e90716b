"""`headroom status --watch` in a real terminal (tmux): the RAM figure the API reports and a lease's holder, live."""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid

import pytest

from headroom.sizes import parse_size
from tests.guard.realstack import MiB, TOKEN
from tests.helpers import REPO, headroom_cmd, need_binary, wait_for

pytestmark = pytest.mark.kernel
RAM_LINE = re.compile(r"RAM /\S+ .*?(\d+(?:\.\d+)? [KMGT]?i?B) free of 1\.0 GiB")


class Tmux:
    """A tmux server of our own (its own socket), so only what this test started is touched and ended."""

    def __init__(self, tmux: str, tmp):
        self.argv = [tmux, "-S", str(tmp / "tmux.sock")]
        self.session = f"hr-watch-{uuid.uuid4().hex[:6]}"

    def start(self, command: list[str]) -> None:
        env = f"PYTHONPATH={shlex.quote(str(REPO))} HEADROOM_TOKEN={TOKEN}"
        subprocess.run([*self.argv, "new-session", "-d", "-s", self.session, "-x", "180", "-y", "60",
                        f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES {env} {shlex.join(command)}; echo EXIT=$?; sleep 30"], check=True)

    def screen(self) -> str:
        return subprocess.run([*self.argv, "capture-pane", "-p", "-t", self.session], capture_output=True, text=True).stdout

    def send(self, *keys: str) -> None:
        subprocess.run([*self.argv, "send-keys", "-t", self.session, *keys], check=True)

    def stop(self) -> None:
        subprocess.run([*self.argv, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path):
    session = Tmux(need_binary("tmux"), tmp_path)
    yield session
    session.stop()


def test_watch_shows_ram_and_lease_holder_and_exits_0_on_ctrl_c(stack, tmux):
    holder = f"watch-lease-{uuid.uuid4().hex[:6]}"
    created = stack.guard.post("/v1/leases", json={"holder": holder, "ram_bytes": "48MiB", "ttl_seconds": 60})
    assert created.status_code == 201, created.text
    tmux.start(headroom_cmd("status", "--config", str(stack.config), "--watch", "--interval", "0.5"))
    try:
        screen = wait_for(lambda: (s := tmux.screen()) and holder in s and RAM_LINE.search(s) and s, 20)
    except AssertionError:
        raise AssertionError(f"the watch view never showed the lease and RAM:\n{tmux.screen()}") from None
    (REPO / "artifacts").mkdir(exist_ok=True)
    (REPO / "artifacts" / "status-watch.txt").write_text(screen)
    shown = parse_size(RAM_LINE.search(screen).group(1).replace(" ", ""))
    api = stack.headroom()["ram"]
    assert abs(shown - api["available_bytes"]) <= max(8 * MiB, 0.02 * api["total_bytes"]), (screen, api)
    assert "48.0 MiB" in screen and "granted" in screen
    stack.guard.delete(f"/v1/leases/{created.json()['lease']['id']}")
    wait_for(lambda: holder not in tmux.screen().split("recent events")[0], 10, what="the released lease to leave the view")
    tmux.send("C-c")
    assert wait_for(lambda: re.search(r"EXIT=(\d+)", tmux.screen()), 10, what="the watch to end").group(1) == "0"
