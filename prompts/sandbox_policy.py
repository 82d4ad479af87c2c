"""What a sandboxed PAL program may do: the seccomp syscall allowlist, its argument conditions and the
paths Landlock lets it read. Data only: prompts/sandbox.py hands it to the child, the README lists it.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sysconfig
from pathlib import Path

# Syscalls allowed with any arguments: what CPython needs for computation once locked down, found by
# tracing the child (`strace -f`) over programs that use every allowed module, threads, files in the
# temp dir, time and randomness. Anything else fails with EPERM, so a syscall a future kernel adds is
# denied too. Files: Landlock decides which paths these reach.
ALLOWED_SYSCALLS: dict[str, tuple[str, ...]] = {
    "memory": ("brk", "mmap", "munmap", "mremap", "mprotect", "madvise"),
    "descriptors it holds": ("read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close",
                             "fstat", "ftruncate", "getdents64"),
    "paths (Landlock decides which)": ("stat", "lstat", "newfstatat", "statx", "mkdir", "mkdirat", "rmdir",
                                       "unlink", "unlinkat", "rename", "renameat", "renameat2"),
    "time": ("clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep"),
    "threads and exit": ("futex", "set_robust_list", "rseq", "sched_yield", "exit", "exit_group"),
    "its own signal handling": ("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "restart_syscall"),
    "its own ids and randomness": ("getpid", "gettid", "getrandom"),
}

# Conditions as pyseccomp compares them: (argument index, operator, value) or, for MASKED_EQ,
# (index, "MASKED_EQ", mask, value). SELF stands for the child's own pid (known only in the child).
SELF = "self"
_CLONE_THREAD = 0x00010000
_CLONE_NAMESPACES = 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00020000
_F_DUPFD_CLOEXEC, _F_GETFD, _F_SETFD, _F_GETFL, _F_SETFL = 1030, 1, 2, 3, 4
_TCGETS, _FIONCLEX, _FIOCLEX = 0x5401, 0x5450, 0x5451
_O_ASYNC, _O_PATH = 0o20000, 0o10000000

# Allowed only when every condition of one row holds (rows for the same syscall are alternatives).
ARGUMENT_RULES: tuple[tuple[str, tuple[tuple, ...], str], ...] = (
    ("clone", ((0, "MASKED_EQ", _CLONE_THREAD | _CLONE_NAMESPACES, _CLONE_THREAD),),
     "threads only: CLONE_THREAD set, no namespace flags (no new process)"),
    ("kill", ((0, "EQ", SELF),), "only itself"),
    ("tgkill", ((0, "EQ", SELF),), "only its own threads"),
    ("openat", ((2, "MASKED_EQ", _O_PATH, 0),), "no O_PATH (Landlock does not check O_PATH opens)"),
    ("fcntl", ((1, "EQ", _F_GETFD),), "F_GETFD"),
    ("fcntl", ((1, "EQ", _F_SETFD),), "F_SETFD (close-on-exec)"),
    ("fcntl", ((1, "EQ", _F_GETFL),), "F_GETFL"),
    ("fcntl", ((1, "EQ", _F_SETFL), (2, "MASKED_EQ", _O_ASYNC, 0)), "F_SETFL without O_ASYNC"),
    ("fcntl", ((1, "EQ", _F_DUPFD_CLOEXEC),), "F_DUPFD_CLOEXEC"),
    ("ioctl", ((1, "EQ", _TCGETS),), "TCGETS (isatty)"),
    ("ioctl", ((1, "EQ", _FIOCLEX),), "FIOCLEX"),
    ("ioctl", ((1, "EQ", _FIONCLEX),), "FIONCLEX"),
)
# Answered ENOSYS instead of EPERM: glibc then falls back to clone, whose flags seccomp can see
# (clone3 keeps them in memory, out of its sight).
ENOSYS_SYSCALLS: tuple[str, ...] = ("clone3",)


def seccomp_policy() -> dict:
    """The filter as JSON data for the child."""
    return {"allow": [name for names in ALLOWED_SYSCALLS.values() for name in names],
            "allow_if": [[name, [list(c) for c in conditions]] for name, conditions, _ in ARGUMENT_RULES],
            "enosys": list(ENOSYS_SYSCALLS)}


@functools.lru_cache(maxsize=1)
def stdlib_dirs() -> list[str]:
    """The base interpreter's stdlib and extension-module dirs (not the venv: the child runs with -S)."""
    dirs = {os.path.dirname(os.__file__), sysconfig.get_config_var("DESTSHARED") or ""}
    dirs |= {os.path.realpath(d) for d in dirs if d}
    return sorted(d.rstrip(os.sep) for d in dirs if d and os.path.isdir(d))


def read_only_paths() -> list[str]:
    """What Landlock lets the program read: the time zone and the kernel's random source. Every module a
    program may use is loaded before the lock-down, so the interpreter needs nothing else (traced)."""
    return [p for p in ("/etc/localtime", "/dev/urandom") if os.path.exists(p)]


def read_write_files() -> list[str]:
    """Files outside the temp dir it may read and write."""
    return [p for p in ("/dev/null",) if os.path.exists(p)]


@functools.lru_cache(maxsize=1)
def security_lib_dirs() -> list[str]:
    """Where pyseccomp and landlock live: the child runs with -S (no site-packages), so it is told."""
    dirs = []
    for name in ("pyseccomp", "landlock"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            parent = Path(spec.origin).parent
            dirs.append(str(parent.parent if spec.submodule_search_locations else parent))
    return sorted(set(dirs))
