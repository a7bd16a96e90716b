"""`headroom install`: write the systemd units (exporter, guard, worker, headroom.slice) with this installation's
paths."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import resources
from pathlib import Path
from string import Template

STARTER_CONFIG = """\
# headroom configuration (every key: docs/configuration.md). HEADROOM_SECTION__KEY variables override it.
# `headroom config check /etc/headroom/headroom.toml` validates it; the command line finds this file by itself.
log_level = "info"
state_dir = "{state_dir}"

[exporter]
listen = "127.0.0.1:9840"
# Report these cgroups too: the slice `headroom run` puts tests in, and the worker's unit.
cgroups = ["headroom.slice", "headroom-worker.service"]

[guard]
listen = "127.0.0.1:9841"
memory_domain = "host"                    # or a cgroup with a limit, e.g. "/headroom.slice"

[guard.worker]
# The worker the guard throttles, pauses and frees. Keep it in step with [worker]: with enabled = true and this
# empty, the worker runs unprotected (`headroom status` and the status page warn).
url = ""                                  # "http://127.0.0.1:9842" once [worker] enabled = true

[worker]
# To run the batch worker under headroom-worker.service: enabled = true, a model, and [guard.worker] url above.
enabled = false
listen = "127.0.0.1:9842"
engine = "vllm"                           # needs: pip install 'headroom[vllm]'
model = ""                                # a model directory or a Hugging Face name

[run]
# `headroom run` without --ram takes this RAM lease; empty: it refuses and asks for --ram.
default_ram = ""
"""
UNITS = ("headroom-exporter.service", "headroom-guard.service", "headroom-worker.service", "headroom.slice")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("install", help="write systemd units for exporter, guard, worker and headroom.slice")
    parser.add_argument(
        "--dest", default="/etc/systemd/system", help="where the units go (default /etc/systemd/system)"
    )
    parser.add_argument(
        "--config", default="/etc/headroom/headroom.toml", help="config file the units pass to each part"
    )
    parser.add_argument("--state-dir", default="/var/lib/headroom", help="the StateDirectory (leases, jobs, token)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter with headroom installed (default: this one)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the units instead of writing them")
    parser.add_argument("--no-reload", action="store_true", help="do not run `systemctl daemon-reload` afterwards")
    parser.set_defaults(func=_install)


def render(python: str, config: str, state_dir: str, docs: str) -> dict[str, str]:
    """Unit name -> text, with this installation's paths filled in."""
    values = {"python": python, "config": config, "state_dir": state_dir, "docs": docs, "repo": str(Path(docs).parent)}
    folder = resources.files("headroom") / "units"
    return {name: Template((folder / name).read_text()).substitute(values) for name in UNITS}


def _install(args: argparse.Namespace) -> int:
    docs = str(Path(__file__).resolve().parent.parent / "docs")
    units = render(args.python, args.config, args.state_dir, docs)
    if args.dry_run:
        for name, text in units.items():
            print(f"# {Path(args.dest) / name}\n{text}")
        return 0
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (dest / name).write_text(text)
        print(f"wrote {dest / name}")
    config = Path(args.config)
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(STARTER_CONFIG.format(state_dir=args.state_dir))
        config.chmod(0o640)
        print(f"wrote {config} (a starter; every key is in docs/configuration.md)")
    if not args.no_reload and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    print(
        "next: systemctl enable --now headroom-exporter headroom-guard  "
        "(and headroom-worker once [worker] is configured)"
    )
    return 0
