"""Attacks on the PAL sandbox written as a real attacker would, for a root host and an unprivileged one.

Each program reaches ctypes through an allowed module's globals (`dataclasses.sys.modules`: the child's
own seccomp and Landlock bindings imported it) and calls libc directly, then the host looks for the
effect: a victim process of the sandbox's user still alive and untouched, no IPC object left, a file
outside unchanged. The root-host tests import this module; as a script (`python sandbox_attacks.py`,
started as an unprivileged user) it runs every attack with itself as the host and prints a JSON report.
Raw syscall numbers are x86_64's. Imports only the stdlib and prompts.sandbox.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prompts import sandbox

PRELUDE = '''
import dataclasses
_sys = dataclasses.sys  # any allowed module that imported sys will do
_os = _sys.modules["os"]
ctypes = _sys.modules["ctypes"]  # loaded by the sandbox's own seccomp and Landlock bindings
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def _arg(value):
    return ctypes.c_long(value) if isinstance(value, int) else value

def sc(number, *args):
    ctypes.set_errno(0)
    return [libc.syscall(ctypes.c_long(number), *map(_arg, args)), ctypes.get_errno()]

def fn(name, *args):
    ctypes.set_errno(0)
    return [getattr(libc, name)(*args), ctypes.get_errno()]

'''
DENIED = {errno.EPERM, errno.EACCES}  # EPERM: seccomp; EACCES: Landlock


@dataclasses.dataclass
class Targets:
    """What the attacks aim at; the victim is a process of the sandbox's own user (as a concurrent run is)."""

    victim: subprocess.Popen
    host: int
    uid: int
    public_file: Path  # world-writable, outside the sandbox
    secret: str  # the public file's content


@dataclasses.dataclass
class Finding:
    held: bool
    evidence: str


def run(body: str, timeout_s: float = 5.0) -> sandbox.SandboxResult:
    return sandbox.run_program(PRELUDE + body, timeout_s=timeout_s)


def all_denied(result: sandbox.SandboxResult, also: set[int] = frozenset()) -> bool:
    """Every libc call the program reported returned -1 with a sandbox errno."""
    calls = result.value if isinstance(result.value, dict) else {}
    return bool(calls) and all(ret == -1 and err in DENIED | also for ret, err in calls.values())


def _report(result: sandbox.SandboxResult, **facts) -> str:
    return json.dumps({"kind": result.kind, "error": result.error, "calls": result.value, **facts}, default=str)


ATTACKS: dict[str, Callable[[Targets], Finding]] = {}


def attack(function: Callable[[Targets], Finding]) -> Callable[[Targets], Finding]:
    ATTACKS[function.__name__] = function
    return function


@attack
def signals(t: Targets) -> Finding:
    """kill/tgkill/tkill/sigqueue/pidfd, and the SIGIO route: F_SETOWN + F_SETSIG(SIGKILL) + O_ASYNC on a pipe."""
    result = run(f'''
def solution():
    out = {{}}
    r = 1  # its stdout: a pipe to the host (the sandbox allows no new pipe)
    for who, pid in (("victim", {t.victim.pid}), ("host", {t.host})):
        out["kill " + who] = fn("kill", pid, 9)
        out["tgkill " + who] = sc(234, pid, pid, 9)
        out["tkill " + who] = sc(200, pid, 9)
        out["rt_sigqueueinfo " + who] = sc(129, pid, 9, ctypes.create_string_buffer(128))
        out["pidfd_open " + who] = sc(434, pid, 0)
        out["F_SETOWN " + who] = fn("fcntl", r, 8, pid)
        out["F_SETOWN_EX " + who] = fn("fcntl", r, 15, ctypes.byref((ctypes.c_int * 2)(1, pid)))
        out["FIOSETOWN " + who] = fn("ioctl", r, 0x8901, ctypes.byref(ctypes.c_int(pid)))
        out["SIOCSPGRP " + who] = fn("ioctl", r, 0x8902, ctypes.byref(ctypes.c_int(pid)))
        out["F_SETSIG SIGKILL " + who] = fn("fcntl", r, 10, 9)
        out["F_SETFL O_ASYNC " + who] = fn("fcntl", r, 4, 0o20000)
        out["FIOASYNC " + who] = fn("ioctl", r, 0x5452, ctypes.byref(ctypes.c_int(1)))
        _os.write(1, b"x" * 70000)  # fills the pipe: the host's reads would then raise SIGIO at the owner
    out["F_SETLEASE"] = fn("fcntl", r, 1024, 0)
    out["F_NOTIFY"] = fn("fcntl", r, 1026, 1)
    out["kill -1"] = fn("kill", -1, 0)  # probe only: every process the user may signal
    out["kill own group"] = fn("kill", 0, 0)
    return out
''')
    alive = t.victim.poll() is None
    return Finding(alive and all_denied(result), _report(result, victim_alive=alive))


def _scheduling(pid: int) -> tuple:
    ioprio = ctypes.CDLL(None, use_errno=True).syscall(252, 1, pid)
    return (os.getpriority(os.PRIO_PROCESS, pid), os.sched_getaffinity(pid), os.sched_getscheduler(pid),
            Path(f"/proc/{pid}/limits").read_text(), ioprio)


@attack
def scheduling(t: Targets) -> Finding:
    """Priority, CPU affinity, scheduler class, I/O priority and limits of another process."""
    before = _scheduling(t.victim.pid)
    result = run(f'''
def solution():
    v, out = {t.victim.pid}, {{}}
    out["setpriority victim"] = fn("setpriority", 0, v, 19)
    out["setpriority user"] = fn("setpriority", 2, 0, 19)
    out["setpriority group"] = fn("setpriority", 1, 0, 19)
    mask = ctypes.c_ulong(1)
    out["sched_setaffinity"] = fn("sched_setaffinity", v, ctypes.sizeof(mask), ctypes.byref(mask))
    out["sched_setscheduler idle"] = fn("sched_setscheduler", v, 5, ctypes.byref(ctypes.c_int(0)))
    attr = (ctypes.c_uint32 * 14)(56, 5)
    out["sched_setattr"] = sc(314, v, attr, 0)
    out["ioprio_set idle"] = sc(251, 1, v, 3 << 13)
    out["prlimit64 set"] = sc(302, v, 7, (ctypes.c_ulong * 2)(4, 4), 0)
    out["getpriority victim"] = fn("getpriority", 0, v)
    return out
''')
    after = _scheduling(t.victim.pid)
    return Finding(before == after and all_denied(result), _report(result, before=before, after=after))


def _ipc_objects(uid: int) -> dict[str, int]:
    """SysV shared memory, semaphores and message queues created by `uid`."""
    counts = {}
    for kind in ("shm", "sem", "msg"):
        table = Path(f"/proc/sysvipc/{kind}")
        if not table.exists():  # a kernel without SysV IPC: the denied calls are the whole check
            continue
        lines = table.read_text().splitlines()
        column = lines[0].split().index("cuid")
        counts[kind] = sum(1 for line in lines[1:] if int(line.split()[column]) == uid)
    return counts


@attack
def ipc(t: Targets) -> Finding:
    """SysV shared memory, semaphores, message queues and a POSIX queue: channels that outlive a run."""
    before = _ipc_objects(t.uid)
    result = run('''
def solution():
    out = {}
    out["shmget 256 MiB"] = sc(29, 0, 256 << 20, 0o1000 | 0o600)
    out["shmat"] = sc(30, 0, 0, 0)
    out["semget"] = sc(64, 0, 1, 0o1000 | 0o600)
    out["msgget"] = sc(68, 0x5A17, 0o1000 | 0o666)
    out["msgrcv"] = sc(70, 0, ctypes.create_string_buffer(64), 56, 0, 0o4000)
    out["mq_open"] = sc(240, b"pal-queue", 0o100 | 2, 0o600, 0)
    return out
''')
    after = _ipc_objects(t.uid)
    return Finding(before == after and all_denied(result), _report(result, before=before, after=after))


@attack
def observation(t: Targets) -> Finding:
    """Watching files, reading outside the rules (O_PATH, /proc, /usr/lib, the stdlib), other processes' memory."""
    result = run(f'''
def solution():
    out, h, v = {{}}, {t.host}, {t.victim.pid}
    out["inotify_init1"] = sc(294, 0)
    out["fanotify_init"] = sc(300, 0, 0)
    out["open O_PATH"] = fn("open", {str(t.public_file).encode()!r}, 0o10000000)
    out["open secret"] = fn("open", {str(t.public_file).encode()!r}, 0)
    out["open host environ"] = fn("open", b"/proc/%d/environ" % h, 0)
    out["open /usr/lib"] = fn("open", b"/usr/lib/os-release", 0)
    out["open stdlib"] = fn("open", {_os_py()!r}, 0)
    out["name_to_handle_at"] = sc(303, -100, b"/etc", ctypes.create_string_buffer(136), ctypes.byref(ctypes.c_int()), 0)
    buffer = ctypes.create_string_buffer(64)
    iov = (ctypes.c_void_p * 2)(ctypes.cast(buffer, ctypes.c_void_p), 64)
    out["process_vm_readv host"] = sc(310, h, iov, 1, iov, 1, 0)
    out["ptrace attach"] = sc(101, 16, v, 0, 0)
    out["kcmp"] = sc(312, h, v, 0, 0, 0)
    out["perf_event_open"] = sc(298, ctypes.create_string_buffer(128), v, -1, -1, 0)
    out["syslog"] = sc(103, 3, ctypes.create_string_buffer(64), 64)
    out["keyctl session keyring"] = sc(250, 0, -3, 0)
    out["getppid"] = sc(110)
    out["sched_getaffinity victim"] = fn("sched_getaffinity", v, 8, ctypes.byref(ctypes.c_ulong()))
    return out
''')
    leaked = t.secret in json.dumps(result.value, default=str) + result.stdout + result.error
    return Finding(not leaked and all_denied(result), _report(result, leaked=leaked))


def _os_py() -> bytes:
    return os.path.join(os.path.dirname(os.__file__), "os.py").encode()


def _file_state(path: Path) -> tuple:
    info = path.stat()
    return path.read_text(), info.st_mode, info.st_uid, info.st_mtime_ns, os.listxattr(path), path.exists()


@attack
def files(t: Targets) -> Finding:
    """xattrs (here and on a file outside), metadata, links, truncation, rename of a file outside."""
    before = _file_state(t.public_file)
    public = str(t.public_file).encode()
    result = run(f'''
def solution():
    out, public = {{}}, {public!r}
    open("own.txt", "w").write("x")
    fd = _os.open("own.txt", _os.O_RDONLY)
    for target in (public, b"own.txt"):
        out["setxattr " + target.decode()] = fn("setxattr", target, b"user.pal", b"x", 1, 0)
        out["setxattrat " + target.decode()] = sc(463, -100, target, 0, b"user.pal", ctypes.create_string_buffer(32), 32)
        out["removexattr " + target.decode()] = fn("removexattr", target, b"user.pal")
        out["chmod " + target.decode()] = fn("chmod", target, 0o777)
        out["chown " + target.decode()] = fn("chown", target, 0, 0)
        out["utimensat " + target.decode()] = fn("utimensat", -100, target, None, 0)
    out["fsetxattr own"] = fn("fsetxattr", fd, b"user.pal", b"x", 1, 0)
    out["link"] = fn("link", public, b"hard")
    out["symlink"] = fn("symlink", public, b"soft")
    out["truncate"] = fn("truncate", public, 0)
    out["rename"] = fn("rename", public, b"mine")
    out["open for writing"] = fn("open", public, 1)
    return out
''')
    after = _file_state(t.public_file)
    # rename across the Landlock boundary fails with EXDEV, which is Landlock's answer too.
    return Finding(before == after and all_denied(result, {errno.EXDEV}), _report(result, changed=before != after))


@attack
def escapes(t: Targets) -> Finding:
    """New processes, namespaces, the network, and kernel attack surface."""
    result = run('''
def solution():
    out = {}
    for name, number, args in (("fork", 57, ()), ("vfork", 58, ()), ("clone process", 56, (17, 0, 0, 0, 0))):
        out[name] = sc(number, *args)
        if out[name][0] == 0:
            _os._exit(0)  # a child that should never exist
    out["execve"] = sc(59, b"/bin/true", (ctypes.c_char_p * 2)(b"true", None), (ctypes.c_char_p * 1)(None))
    out["socket"] = sc(41, 2, 1, 0)
    out["socketpair unix"] = sc(53, 1, 1, 0, (ctypes.c_int * 2)())
    out["unshare user"] = sc(272, 0x10000000)
    out["unshare ipc"] = sc(272, 0x08000000)
    out["setns"] = sc(308, 0, 0)
    out["chroot"] = sc(161, b".")
    out["mount"] = sc(165, b"none", b".", b"tmpfs", 0, 0)
    out["io_uring_setup"] = sc(425, 8, ctypes.create_string_buffer(120))
    out["bpf"] = sc(321, 0, ctypes.create_string_buffer(64), 64)
    out["userfaultfd"] = sc(323, 0)
    out["memfd_create"] = sc(319, b"x", 0)
    out["add_key"] = sc(248, b"user", b"pal", b"x", 1, -3)
    out["personality"] = sc(135, 0xFFFFFFFF)
    out["setsid"] = sc(112)
    out["setpgid"] = sc(109, 0, 0)
    out["prctl set dumpable"] = sc(157, 4, 1)
    out["ioctl TIOCSTI"] = fn("ioctl", 0, 0x5412, b"x")
    out["getcwd"] = sc(79, ctypes.create_string_buffer(256), 256)
    return out
''')
    return Finding(all_denied(result), _report(result))


@attack
def deep_tree(t: Targets) -> Finding:
    """A directory tree deeper than Python's recursion limit and PATH_MAX, with unlistable and mode-000
    directories: the host must remove it all (the program pays for depth: Landlock walks every level)."""
    root = Path(tempfile.mkdtemp(prefix="pal-deep-"))
    saved, tempfile.tempdir = tempfile.tempdir, str(root)
    try:
        result = run(DEEP_TREE, timeout_s=10)
        left = [entry.name for entry in root.iterdir()]
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(root, ignore_errors=True)  # recursive here is fine: the test only cleans a dir it made
    return Finding(result.value == DEPTH and not left, _report(result, left=left))


DEPTH = 1100  # past the recursion limit (1,000) and, at 4 bytes a level, PATH_MAX (4,096)
DEEP_TREE = f'''
def solution():
    fd = _os.open(".", _os.O_RDONLY)
    for depth in range({DEPTH}):
        if depth % 500 == 0:
            _os.close(_os.open("f", _os.O_WRONLY | _os.O_CREAT, 0o600, dir_fd=fd))
            _os.mkdir("locked", 0o300, dir_fd=fd)  # its owner may add to it, not list it
            _os.close(_os.open("locked/x", _os.O_WRONLY | _os.O_CREAT, 0o600, dir_fd=fd))
            _os.mkdir("sealed", 0, dir_fd=fd)
        _os.mkdir("dir", dir_fd=fd)
        child = _os.open("dir", _os.O_RDONLY, dir_fd=fd)
        _os.close(fd)
        fd = child
    return depth + 1
'''


@contextmanager
def targets() -> Iterator[Targets]:
    """A victim process of the sandbox's user and a world-writable file outside; removed afterwards."""
    uid, gid = sandbox._drop_target() or (os.getuid(), os.getgid())
    as_user = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
    public_dir = Path(tempfile.mkdtemp(prefix="pal-attack-"))
    public_dir.chmod(0o777)
    secret = f"canary-{uuid.uuid4().hex}"
    public_file = public_dir / "public.txt"
    public_file.write_text(secret)
    public_file.chmod(0o666)
    victim = subprocess.Popen(["sleep", "120"], start_new_session=True, **as_user)
    try:
        yield Targets(victim, os.getpid(), uid, public_file, secret)
    finally:
        victim.kill()
        victim.wait()
        shutil.rmtree(public_dir, ignore_errors=True)


def main() -> None:
    """Run every attack with this process as the host; print {name: {"held", "evidence"}} as JSON."""
    with targets() as t:
        report = {name: dataclasses.asdict(function(t)) for name, function in ATTACKS.items()}
    report["_host"] = {"uid": os.getuid(), "layers": list(sandbox.run_program("def solution():\n    return 1\n").layers)}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
