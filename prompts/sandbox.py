"""Run model-written PAL programs in a locked-down, short-lived child process; only JSON data comes back.

Layers: isolated interpreter with rlimits, scrubbed env and an empty temp dir; root dropped; Landlock
(files) and a seccomp syscall allowlist, both from prompts/sandbox_policy.py; an import allowlist for
clear error messages.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import pwd
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import sandbox_policy as policy
from .sandbox_workdir import private_dir

logger = logging.getLogger(__name__)

ALLOWED_MODULES: tuple[str, ...] = (
    "abc", "array", "bisect", "calendar", "cmath", "collections", "copy", "dataclasses", "datetime",
    "decimal", "enum", "fractions", "functools", "heapq", "itertools", "json", "math", "numbers",
    "operator", "pprint", "random", "re", "statistics", "string", "textwrap", "typing", "unicodedata",
)
# Loaded up front too: allowed modules import these lazily, some from C (datetime.strftime imports time).
_HELPER_MODULES: tuple[str, ...] = (
    "_strptime", "time", "collections.abc", "traceback", "warnings", "stringprep", "encodings.ascii",
    "encodings.latin_1", "encodings.idna", "encodings.punycode", "encodings.utf_16", "encodings.utf_32",
)
MEMORY_LIMIT_BYTES = 512 * 2**20
STDOUT_LIMIT_BYTES = 8 * 1024
RESULT_LIMIT_BYTES = 64 * 1024
FILE_SIZE_LIMIT_BYTES = 2**20
OPEN_FILES_LIMIT = 64
STARTUP_TIMEOUT_S = 10.0
# Layers whose absence should refuse the run instead of running degraded (e.g. {"seccomp", "landlock"}).
REQUIRED_LAYERS: frozenset[str] = frozenset()
OS_LAYERS = ("rlimits", "unprivileged", "landlock", "seccomp", "import_allowlist")

_CHILD_SCRIPT = Path(__file__).resolve().with_name("sandbox_child.py")
_STDERR_LIMIT_BYTES = 8 * 1024
_SETUP_FRAME_LIMIT_BYTES = 4096
_KILL_GRACE_S = 2.0
_CPU_STARTUP_S = 2  # CPU seconds for interpreter start-up and lock-down, on top of the program's timeout
_DISABLED_LAYERS: frozenset[str] = frozenset()  # tests switch one layer off to prove the others hold alone
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class SandboxResult:
    """What one program run produced; `layers` names the protection layers that were really active."""

    ok: bool
    value: object
    stdout: str
    error: str
    kind: str  # ok, error, timeout, memory or violation
    duration_ms: float
    layers: tuple[str, ...] = field(default=())


@dataclass
class _Capture:
    """The first `limit` bytes of a stream; the rest is counted and dropped, so output cannot fill memory."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def add(self, chunk: bytes) -> None:
        room = max(self.limit - len(self.data), 0)
        self.data += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)


@dataclass
class _Outcome:
    """Everything the host observed of one child process."""

    stdout: _Capture
    stderr: _Capture
    channel: _Capture
    returncode: int | None = None
    stop: str = ""  # "timeout", "startup" or "layers" when the host killed the child
    setup: dict = field(default_factory=dict)


def run_program(code: str, entry: str = "solution", timeout_s: float = 5.0) -> SandboxResult:
    """Run `code` in a fresh sandboxed process, call `entry()` and return its JSON-decoded result."""
    return _run(code, entry, timeout_s)[0]


def capabilities() -> dict:
    """Which protection layers a sandboxed run really gets on this machine, with the reason for each."""
    return dict(_probe(_DISABLED_LAYERS))


@functools.lru_cache(maxsize=4)
def _probe(disabled: frozenset[str]) -> dict:
    result, setup = _run("def solution():\n    return 1\n", "solution", STARTUP_TIMEOUT_S)
    details = {name: detail for name, (active, detail) in setup.get("layers", {}).items()}
    report = {name: name in result.layers for name in OS_LAYERS}
    report["process"] = result.ok  # own process, scrubbed env, temp dir, timeout, output caps
    report["details"] = details or {"error": result.error}
    return report


def _run(code: str, entry: str, timeout_s: float) -> tuple[SandboxResult, dict]:
    _check_arguments(code, entry, timeout_s)
    start = time.monotonic()
    try:
        with private_dir(_drop_target()) as workdir:
            outcome = _execute(code, entry, timeout_s, workdir)
    except OSError as exc:  # no disk, no memory, no descriptors, fork failed: the host carries on
        logger.error("could not start the PAL sandbox: %s", exc)
        error = f"could not start the sandbox process: {exc}"
        return _result("error", None, b"", 0, error, (time.monotonic() - start) * 1000, ()), {}
    duration_ms = (time.monotonic() - start) * 1000
    result = _interpret(outcome, entry, timeout_s, duration_ms)
    logger.debug("PAL program: kind=%s in %.0f ms, layers=%s", result.kind, duration_ms, result.layers)
    return result, outcome.setup


def _check_arguments(code: str, entry: str, timeout_s: float) -> None:
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, not {type(code).__name__}")
    if not entry.isidentifier():
        raise ValueError(f"entry must be a Python identifier, not {entry!r}")
    if not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be positive and finite, not {timeout_s}")


def _drop_target() -> tuple[int, int] | None:
    """The uid/gid a root host hands the child (nobody), or None when the host is not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _execute(code: str, entry: str, timeout_s: float, workdir: str) -> _Outcome:
    program = os.path.join(workdir, "program.py")
    with open(program, "w", encoding="utf-8") as handle:
        handle.write(code)
    read_fd, write_fd = os.pipe()  # the result channel: separate from stdout, so prints cannot forge it
    try:
        proc = _spawn(_child_config(program, entry, timeout_s, workdir, write_fd), workdir, write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    try:
        return _Watch(proc, read_fd, timeout_s).run()
    finally:
        _release(proc, read_fd)


def _release(proc: subprocess.Popen, read_fd: int) -> None:
    """Close our pipe ends; should watching have failed, kill the child rather than wait for it."""
    os.close(read_fd)
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode is None:
        _kill_group(proc.pid)
        try:
            proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.error("sandbox process %d survived SIGKILL; leaving it to be reaped later", proc.pid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already gone


def _spawn(config: dict, workdir: str, write_fd: int) -> subprocess.Popen:
    command = [sys.executable, "-I", "-S", str(_CHILD_SCRIPT), json.dumps(config)]
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        pass_fds=(write_fd,), cwd=workdir, env=dict(_CHILD_ENV), start_new_session=True, umask=0o077)


def _child_config(program: str, entry: str, timeout_s: float, workdir: str, write_fd: int) -> dict:
    return {
        "program": program, "entry": entry, "result_fd": write_fd, "workdir": workdir,
        "cpu_s": math.ceil(timeout_s) + _CPU_STARTUP_S, "memory_bytes": MEMORY_LIMIT_BYTES,
        "file_size_bytes": FILE_SIZE_LIMIT_BYTES, "open_files": OPEN_FILES_LIMIT,
        "stdout_limit": STDOUT_LIMIT_BYTES, "result_limit": RESULT_LIMIT_BYTES,
        "allowed_modules": list(ALLOWED_MODULES), "helper_modules": list(_HELPER_MODULES),
        "lib_dirs": policy.security_lib_dirs(), "read_only_paths": policy.read_only_paths(),
        "read_write_files": policy.read_write_files(), "seccomp_policy": policy.seccomp_policy(),
        "trusted_code_prefixes": [d + os.sep for d in policy.stdlib_dirs()] + [str(_CHILD_SCRIPT)],
        "drop_to": _drop_target(), "disabled_layers": sorted(_DISABLED_LAYERS),
        "required_layers": sorted(REQUIRED_LAYERS),
    }


class _Watch:
    """Reads the child's three pipes until it exits or its time is up; kills its process group on timeout."""

    def __init__(self, proc: subprocess.Popen, channel_fd: int, timeout_s: float) -> None:
        self.proc, self.channel_fd, self.timeout_s = proc, channel_fd, timeout_s
        self.outcome = _Outcome(_Capture(STDOUT_LIMIT_BYTES), _Capture(_STDERR_LIMIT_BYTES),
                                _Capture(_SETUP_FRAME_LIMIT_BYTES + RESULT_LIMIT_BYTES + 64))
        self.captures = {proc.stdout.fileno(): self.outcome.stdout, proc.stderr.fileno(): self.outcome.stderr,
                         channel_fd: self.outcome.channel}
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S  # until the setup frame starts the program clock
        self.pidfd = _open_pidfd(proc.pid)
        self.exited = False

    def run(self) -> _Outcome:
        try:
            with selectors.DefaultSelector() as selector:
                for fd in [*self.captures, *([self.pidfd] if self.pidfd is not None else [])]:
                    selector.register(fd, selectors.EVENT_READ)
                self._watch(selector)
                _kill_group(self.proc.pid)  # the leader is not reaped yet, so its group id is still ours
                self._drain(selector, time.monotonic() + _KILL_GRACE_S)
        finally:
            if self.pidfd is not None:
                os.close(self.pidfd)
        self.outcome.returncode = self._reap()
        return self.outcome

    def _watch(self, selector: selectors.BaseSelector) -> None:
        while not self._exited():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.outcome.stop = "timeout" if self.outcome.setup else "startup"
                return
            self._read_ready(selector, remaining if self.pidfd is not None else min(remaining, 0.05))
            if not self.outcome.setup and self._setup_arrived():
                return

    def _setup_arrived(self) -> bool:
        """Parse the setup frame once it is complete; True when the run must stop for missing layers."""
        data = self.outcome.channel.data
        if b"\n" not in data:
            return False
        self.outcome.setup = _parse_setup(bytes(data[: data.index(b"\n")]))
        self.deadline = time.monotonic() + self.timeout_s
        missing = REQUIRED_LAYERS - _active_layers(self.outcome.setup)
        if missing and "layers" in self.outcome.setup:
            self.outcome.stop = "layers"
            self.outcome.setup["missing"] = sorted(missing)
            return True
        return False

    def _read_ready(self, selector: selectors.BaseSelector, timeout: float) -> None:
        for key, _ in selector.select(timeout):
            if key.fd == self.pidfd:
                self.exited = True
                selector.unregister(key.fd)
                continue
            chunk = os.read(key.fd, 65536)
            if chunk:
                self.captures[key.fd].add(chunk)
            else:
                selector.unregister(key.fd)

    def _drain(self, selector: selectors.BaseSelector, until: float) -> None:
        while set(selector.get_map()) - {self.pidfd} and time.monotonic() < until:
            self._read_ready(selector, max(until - time.monotonic(), 0))

    def _exited(self) -> bool:
        if self.pidfd is not None:
            return self.exited
        # WNOWAIT leaves the child a zombie, so its pid (and group id) stays ours until we reap it.
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _reap(self) -> int | None:
        try:
            return self.proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.error("sandbox process %d did not die after SIGKILL", self.proc.pid)
            return None


def _open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the child exits (Linux 5.3+); None means poll instead."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _parse_setup(line: bytes) -> dict:
    try:
        setup = json.loads(line)
    except ValueError:
        return {"setup_error": "unreadable setup report"}
    return setup if isinstance(setup, dict) else {"setup_error": "unreadable setup report"}


def _active_layers(setup: dict) -> set[str]:
    layers = setup.get("layers")
    if not isinstance(layers, dict):
        return set()
    return {name for name, state in layers.items() if isinstance(state, list) and state and state[0] is True}


@functools.lru_cache(maxsize=32)
def _warn_degraded(inactive: frozenset[tuple[str, str]]) -> None:
    for name, detail in sorted(inactive):
        logger.warning("PAL sandbox runs without its %s layer: %s", name, detail)


def _interpret(outcome: _Outcome, entry: str, timeout_s: float, duration_ms: float) -> SandboxResult:
    layers = tuple(name for name in OS_LAYERS if name in _active_layers(outcome.setup))
    inactive = {(n, str(s[1])) for n, s in outcome.setup.get("layers", {}).items() if n not in layers}
    if inactive:
        _warn_degraded(frozenset(inactive))
    if outcome.stderr.data:
        logger.debug("sandbox stderr: %s", bytes(outcome.stderr.data[-2000:]).decode("utf-8", errors="replace"))
    kind, value, error = _classify(outcome, entry, timeout_s)
    return _result(kind, value, outcome.stdout.data, outcome.stdout.dropped, error, duration_ms, layers)


def _result(kind: str, value, stdout: bytes, dropped: int, error: str, duration_ms: float,
            layers: tuple[str, ...]) -> SandboxResult:
    text = bytes(stdout).decode("utf-8", errors="replace")
    if dropped:
        text += f"\n[output truncated at {STDOUT_LIMIT_BYTES} bytes]"
    # Error text goes to stores and back to the model: a lone surrogate in it becomes a visible \udXXX.
    error = error.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return SandboxResult(kind == "ok", value if kind == "ok" else None, text, error, kind, duration_ms, layers)


def _classify(outcome: _Outcome, entry: str, timeout_s: float) -> tuple[str, object, str]:
    """(kind, value, error) from what the child reported, or failing that from how it ended."""
    if outcome.stop == "timeout":
        return "timeout", None, f"timed out after {timeout_s:g} s"
    if outcome.stop == "layers":
        return "error", None, f"required sandbox layers are not active: {', '.join(outcome.setup['missing'])}"
    if "layers" not in outcome.setup:
        return "error", None, f"the sandbox failed to start: {_startup_problem(outcome)}"
    frames = bytes(outcome.channel.data).split(b"\n")
    if outcome.channel.dropped or len(frames) > 3 or (len(frames) == 3 and frames[2]):
        return "error", None, "the program wrote more than one result to the result channel"
    if len(frames) == 3:
        return _parse_result(frames[1])
    return _from_exit_status(outcome.returncode, entry, timeout_s)


def _startup_problem(outcome: _Outcome) -> str:
    if outcome.stop == "startup":
        return f"no report within {STARTUP_TIMEOUT_S:g} s"
    if "setup_error" in outcome.setup:
        return str(outcome.setup["setup_error"])[:500]
    lines = bytes(outcome.stderr.data).decode("utf-8", errors="replace").strip().splitlines()
    return lines[-1][:500] if lines else f"exit status {outcome.returncode}"


def _parse_result(line: bytes) -> tuple[str, object, str]:
    malformed = ("error", None, "the program's result channel held malformed data")
    try:
        frame = json.loads(line)  # NaN and ±Infinity decode to floats
    except (ValueError, RecursionError):  # RecursionError: a forged, deeply nested document
        return malformed
    if not isinstance(frame, dict) or frame.get("status") not in ("ok", "error", "memory", "violation"):
        return malformed
    if frame["status"] == "ok":
        return ("ok", frame.get("value"), "") if "value" in frame else malformed
    error = frame.get("error")
    return (frame["status"], None, error[:1000]) if isinstance(error, str) else malformed


def _from_exit_status(returncode: int | None, entry: str, timeout_s: float) -> tuple[str, object, str]:
    if returncode is None or returncode >= 0:
        return "error", None, f"the program ended (exit status {returncode}) before {entry}() returned"
    signum = -returncode
    name = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
    if signum == signal.SIGXCPU:
        return "timeout", None, f"CPU time limit exceeded ({math.ceil(timeout_s) + _CPU_STARTUP_S} s)"
    if signum == signal.SIGKILL:
        return "memory", None, "the program was killed by SIGKILL (out of memory, or past its CPU limit)"
    if signum == signal.SIGSYS:
        return "violation", None, "operation not permitted by the sandbox: a forbidden system call (SIGSYS)"
    return "error", None, f"the program crashed ({name})"
