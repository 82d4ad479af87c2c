"""Empty a PAL run's temp dir whatever the program left there: any depth, any number of entries, any mode.

Iterative and descriptor-relative: no recursion, no path longer than one name, no symlink followed.
The host runs it in-process; a root host facing subdirectories runs it as `python -I -S sandbox_cleanup.py
CONFIG_JSON` started in the dir, which first becomes the sandbox user, so the removal has exactly the
program's rights (and, like the program, reaches the dir through its working directory). Imports nothing
from the project.
"""
import json
import os
import sys
import time
from typing import NamedTuple  # imported as root: after the uid drop the stdlib may be unreadable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class CleanupError(Exception):
    """The tree could not be emptied (time ran out, or it changed while being removed)."""


class _Level(NamedTuple):
    """One open directory on the way down from the top."""

    name: str  # its name in its parent
    identity: tuple[int, int]  # (st_dev, st_ino): checked when climbing back to it through ".."
    subdirs: list[str]  # its subdirectories still to remove


def empty_dir(path: str, deadline: float) -> None:
    """Delete everything below `path` before `time.monotonic()` passes `deadline`, or raise."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        levels = [_Level("", _identity(fd), _remove_files(fd, deadline))]
        while levels:
            level = levels[-1]
            if level.subdirs:  # only one descriptor is open at a time, so depth costs no descriptors
                name = level.subdirs.pop()
                fd = _descend(fd, name)
                levels.append(_Level(name, _identity(fd), _remove_files(fd, deadline)))
                continue
            levels.pop()
            if levels:
                fd = _ascend(fd, levels[-1].identity)
                os.rmdir(level.name, dir_fd=fd)
    finally:
        os.close(fd)


def _remove_files(fd: int, deadline: float) -> list[str]:
    """Unlink every non-directory in the directory `fd`; return its subdirectories' names."""
    _make_usable(fd)
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if time.monotonic() > deadline:
                raise CleanupError("ran out of time")
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirs


def _make_usable(fd: int) -> None:
    # A program may leave a directory it cannot list or change (mkdir with mode 0o500 or 0).
    if os.fstat(fd).st_mode & 0o700 != 0o700:
        os.fchmod(fd, 0o700)


def _descend(fd: int, name: str) -> int:
    try:
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=fd)  # a directory (seen without following links) the owner cannot read
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
    os.close(fd)
    return child


def _ascend(fd: int, expected: tuple[int, int]) -> int:
    parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
    if _identity(parent) != expected:
        os.close(parent)
        raise CleanupError("the tree was moved while being removed")
    os.close(fd)
    return parent


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _main() -> int:
    config = json.loads(sys.argv[1])
    uid, gid = config["drop_to"]
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # everything this script needs was imported while still root
    try:
        empty_dir(".", time.monotonic() + config["budget_s"])
    except (OSError, CleanupError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
