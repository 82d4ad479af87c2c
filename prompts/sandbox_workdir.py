"""A PAL run's private temp dir: made, handed to the sandbox user, and always removed within a time bound.

Removal never recurses (prompts.sandbox_cleanup) and, for a root host, runs as the sandbox user.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .sandbox_cleanup import CleanupError, empty_dir

logger = logging.getLogger(__name__)

CLEANUP_BUDGET_S = 10.0  # what a program left past this is logged and left on disk
_CLEANUP_SCRIPT = Path(__file__).resolve().with_name("sandbox_cleanup.py")
_PROCESS_SLACK_S = 5.0  # interpreter start-up and the kill, on top of the budget


@contextmanager
def private_dir(owner: tuple[int, int] | None) -> Iterator[str]:
    """A new, empty temp dir (owned by `owner` when given), removed on exit whatever it then holds."""
    path = tempfile.mkdtemp(prefix="pal-")
    try:
        if owner is not None:
            os.chown(path, *owner)  # the child works here after giving up root
        yield path
    finally:
        remove(path, owner)


def remove(path: str, owner: tuple[int, int] | None) -> None:
    """Empty and delete `path` within CLEANUP_BUDGET_S; a failure is logged, never raised."""
    try:
        if owner is None or not _has_subdirs(path):  # unlinking names in its own dir needs no deputy
            empty_dir(path, time.monotonic() + CLEANUP_BUDGET_S)
        else:
            _empty_as(owner, path)
        os.rmdir(path)
    except (OSError, CleanupError, subprocess.SubprocessError) as exc:
        logger.warning("could not remove the sandbox temp dir %s: %s", path, exc)


def _has_subdirs(path: str) -> bool:
    with os.scandir(path) as entries:
        return any(entry.is_dir(follow_symlinks=False) for entry in entries)


def _empty_as(owner: tuple[int, int], path: str) -> None:
    """Empty `path` in a process that runs as `owner`: root's deputy then holds no more rights than the program."""
    config = json.dumps({"budget_s": CLEANUP_BUDGET_S, "drop_to": list(owner)})
    try:
        done = subprocess.run([sys.executable, "-I", "-S", str(_CLEANUP_SCRIPT), config], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"LANG": "C.UTF-8"},
                              cwd=path, timeout=CLEANUP_BUDGET_S + _PROCESS_SLACK_S, start_new_session=True)
    except OSError as exc:  # no process could start: do it here, with the same descriptor-relative care
        logger.warning("the cleanup process did not start (%s); emptying %s in-process", exc, path)
        empty_dir(path, time.monotonic() + CLEANUP_BUDGET_S)
        return
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise CleanupError(lines[-1] if lines else f"the cleanup process ended with status {done.returncode}")
