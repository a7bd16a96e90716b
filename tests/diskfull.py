"""A real full disk and real damaged databases for the store tests: a small tmpfs the test mounts and unmounts."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import sqlite3
import subprocess
from pathlib import Path

from tests.helpers import need

PAGE = 4096


class SmallDisk:
    """A tmpfs of a few MiB at `path`; fill() takes every free byte with a filler file, free() gives them back."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> int:
        """Write until the kernel says ENOSPC; the bytes written."""
        written = 0
        with open(self.filler, "ab", buffering=0) as out:
            for chunk in (65536, 4096, 512, 1):
                while True:
                    try:
                        out.write(b"\0" * chunk)
                    except OSError as err:
                        assert err.errno == errno.ENOSPC, err
                        break
                    written += chunk
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def available(self) -> int:
        return shutil.disk_usage(self.path).free


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m"):
    """Mount a tmpfs of `size` at `path` (root only) and unmount it afterwards."""
    need(os.geteuid() == 0 and shutil.which("mount") is not None, "root and mount(8) to mount a small tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", str(path)], check=False)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], check=False)


def truncate_to_zero(path: Path) -> None:
    path.write_bytes(b"")


def garbage_header(path: Path) -> None:
    """Overwrite the first 100 bytes (SQLite's header) with random bytes; the rest of the file stays."""
    with open(path, "r+b") as db:
        db.write(random.Random(1).randbytes(100))


def random_pages(path: Path) -> None:
    """Overwrite every page but the first (the header and schema root stay) with random bytes."""
    size = path.stat().st_size
    rng = random.Random(2)
    with open(path, "r+b") as db:
        for offset in range(PAGE, size, PAGE):
            db.seek(offset)
            db.write(rng.randbytes(PAGE))


CORRUPTIONS = {"truncated": truncate_to_zero, "garbage_header": garbage_header, "random_pages": random_pages}


def checkpoint(path: Path) -> None:
    """Move everything from the WAL into the main file, so damage to the main file is damage to the data."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
