"""Every command block of README.md, TESTING.md and TROUBLESHOOTING.md runs as printed against a real stack.

One `headroom up` per module (exporter with the NVML fake's two GPUs, guard, echo worker; the domain a memory cgroup
this test made), started the way `make run` starts it. Commands run in a fresh directory with the venv's bin on PATH
(what `. .venv/bin/activate` does) and no --config: they must find the stack by themselves. Each command must exit 0
unless an `<!-- docs-test: exit N -->` comment stands before its block; a ```console block's output must be the
documented one (sizes may differ). A block that cannot run here carries `<!-- docs-test: skip: why -->`.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.guard.realstack import MiB, domain_cgroup
from tests.helpers import REPO, free_port, headroom_cmd, stop_process, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]
DOCS = ("README.md", "TESTING.md", "TROUBLESHOOTING.md")
COMMAND_LANGS = {"sh", "console", ""}
ANNOTATION = re.compile(r"<!-- docs-test: (.*?) -->")
SIZE = re.compile(r"\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)")
QUIET = '[guard.psi]\nenter = {}\n[guard.swap]\nenter = {}\n[guard.predict]\nenter = {}\n'
# The files the documents' examples name, as a user would have them.
EXAMPLE_FILES = {
    "test_olmo2_7b_single.py": "print('olmo loaded and generated')\n",
    "requests.jsonl": '{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", '
                      '"body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n',
}


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str
    notes: list[str] = field(default_factory=list)

    def note(self, word: str) -> str | None:
        return next((n[len(word):].strip(" :") for n in self.notes if n.startswith(word)), None)


def blocks(doc: str) -> list[Block]:
    """The fenced blocks of `doc` with the docs-test notes in the lines just above each."""
    found, notes, current = [], [], None
    for number, line in enumerate((REPO / doc).read_text().splitlines(), 1):
        if current is not None:
            if line.startswith("```"):
                found.append(current)
                current = None
            else:
                current.text += line + "\n"
            continue
        if line.startswith("```"):
            current, notes = Block(doc, number, line[3:].strip(), "", notes), []
        elif ANNOTATION.search(line):
            notes.append(ANNOTATION.search(line).group(1))
        elif line.strip():
            notes = []
    return found


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command, documented output lines): a console block's `$ ` lines and what follows; an sh block's lines."""
    if block.lang == "console":
        pairs: list[tuple[str, list[str]]] = []
        for line in block.text.splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], []))
            elif pairs:
                pairs[-1][1].append(line)
        return pairs
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.text.splitlines()]
    return [(line, []) for line in lines if line and not line.startswith("#")]


def command_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc) if b.lang in COMMAND_LANGS]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`headroom up` (as `make run` runs it) in a fresh directory; yields (directory, environment for commands)."""
    work = tmp_path_factory.mktemp("newcomer")
    (work / ".venv").symlink_to(REPO / ".venv")
    for name, text in EXAMPLE_FILES.items():
        (work / name).write_text(text)
    ports = {part: free_port() for part in ("exporter", "guard", "worker")}
    with domain_cgroup(4096 * MiB) as domain:
        (work / "headroom.toml").write_text(
            f'state_dir = "{work / "state"}"\n[exporter]\nlisten = "127.0.0.1:{ports["exporter"]}"\n'
            f'cgroups = ["{domain.name}"]\nnvml_module = "tests.fakes.fake_pynvml"\n'
            f'[guard]\nlisten = "127.0.0.1:{ports["guard"]}"\nmemory_domain = "{domain.name}"\n'
            f'exporter_url = "http://127.0.0.1:{ports["exporter"]}/metrics"\n'
            f'[worker]\nenabled = true\nengine = "echo"\nlisten = "127.0.0.1:{ports["worker"]}"\n'
            f'[run]\nparent_cgroup = "{domain.name}"\n' + QUIET)
        env = {key: value for key, value in os.environ.items() if not key.startswith("HEADROOM_")
               or key == "HEADROOM_GUARD__FREEZE__ENABLED"}
        env.update(PATH=f"{work / '.venv' / 'bin'}:{os.environ['PATH']}", PYTHONPATH=str(REPO), CI="",
                   XDG_STATE_HOME=str(work / "xdg"), HEADROOM_FAKE_NVML=str(REPO / "tests/fixtures/golden/nvml.json"))
        up = subprocess.Popen(headroom_cmd("up", "--config", "headroom.toml"), cwd=work, env=env,
                              stdout=open(work / "up.log", "w"), stderr=subprocess.STDOUT)
        try:
            guard = f"http://127.0.0.1:{ports['guard']}"
            wait_for(lambda: httpx.get(guard + "/readyz", timeout=2).status_code == 200
                     and httpx.get(guard + "/v1/headroom", timeout=2).json()["worker"]["observed"] == "running",
                     60, what=f"the stack `headroom up` runs:\n{(work / 'up.log').read_text()[-3000:]}")
            yield work, env
        finally:
            stop_process(up, 30)


def normalized(text: str) -> str:
    return SIZE.sub("<size>", text.strip())


@pytest.mark.parametrize("block", command_blocks(), ids=lambda b: f"{b.doc}:{b.line}")
def test_each_command_block_runs_as_printed(block: Block, stack):
    work, env = stack
    if block.note("skip") is not None:
        assert len(block.note("skip")) > 20, f"{block.doc}:{block.line}: a skipped block says why beside it"
        pytest.skip(f"{block.doc}:{block.line}: {block.note('skip')}")
    for written in blocks(block.doc):
        if written.note("file"):
            (work / written.note("file")).write_text(written.text)
    expected_code = int(block.note("exit") or 0)
    for command, output in commands(block):
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=240)
        said = done.stdout + done.stderr
        assert done.returncode == expected_code, f"{block.doc}:{block.line}: `{command}` exited {done.returncode}:\n{said}"
        if output:
            assert normalized(said) == normalized("\n".join(output)), f"{block.doc}:{block.line}: `{command}` said:\n{said}"


def test_the_documents_have_command_blocks_and_few_skips():
    found = command_blocks()
    skipped = [b for b in found if b.note("skip") is not None]
    assert len(found) >= 10 and len(skipped) <= 6, [(b.doc, b.line) for b in skipped]
