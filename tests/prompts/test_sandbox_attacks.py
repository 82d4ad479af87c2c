"""The attack suite (sandbox_attacks.py) against this process as the host, and against an unprivileged host.

When the tests run as root, the second run starts `sandbox_attacks.py` as a uid with no account and no
capabilities (setpriv), with an interpreter that uid may execute; where that is impossible it is skipped,
naming the reason. When the tests already run unprivileged, the first run is the unprivileged one.
"""
import json
import os
import platform
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from prompts import sandbox, sandbox_policy

from .sandbox_attacks import ATTACKS, PRELUDE, run, targets

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().with_name("sandbox_attacks.py")
pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the attacks use x86_64 syscall numbers")


@pytest.fixture(scope="module")
def os_layers():
    caps = sandbox.capabilities()
    for layer in ("seccomp", "landlock"):
        if not caps[layer]:
            pytest.skip(f"no {layer} layer here: {caps['details'].get(layer)}")


@pytest.fixture(scope="module")
def this_host(os_layers):
    with targets() as found:
        yield found


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_attack_is_stopped_with_this_process_as_host(name, this_host):
    finding = ATTACKS[name](this_host)
    assert finding.held, finding.evidence


def _free_uid() -> int:
    """A uid with no account, so nothing else on the machine runs as it."""
    for uid in range(47_000, 48_000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    pytest.skip("no free uid between 47000 and 48000 to run an unprivileged host as")


def _as_user(uid: int, home: str, command: list[str], timeout: float) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(REPO), *sandbox_policy.security_lib_dirs()])
    env = {"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": path}
    setpriv = [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
    # Through env: setpriv itself may exec with root's capabilities still in effect, env cannot.
    return subprocess.run([*setpriv, shutil.which("env") or "/usr/bin/env", *command], env=env, cwd=home,
                          capture_output=True, text=True, timeout=timeout)


def _interpreter(uid: int, home: str) -> tuple[str | None, str]:
    """A Python >= 3.11 the uid can run a sandboxed program with (the venv's may sit in root's home)."""
    check = ("import sys; from prompts.sandbox import run_program\n"
             "sys.exit(sys.version_info < (3, 11) or not run_program('def solution():\\n    return 1\\n').ok)")
    tried = []
    for candidate in dict.fromkeys([sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"]):
        if candidate and os.path.exists(candidate):
            done = _as_user(uid, home, [candidate, "-c", check], timeout=60)
            if done.returncode == 0:
                return candidate, ""
            tried.append(f"{candidate}: {(done.stderr.strip().splitlines() or [f'exit {done.returncode}'])[-1]}")
    return None, "; ".join(tried)


@pytest.fixture(scope="module")
def unprivileged_report(os_layers):
    if os.geteuid() != 0:
        pytest.skip("the tests run unprivileged already: the attacks above ran with an unprivileged host")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot start a host as an unprivileged user")
    uid = _free_uid()
    home = tempfile.mkdtemp(prefix="pal-host-")
    os.chown(home, uid, uid)
    try:
        python, why = _interpreter(uid, home)
        if python is None:
            pytest.skip(f"no Python interpreter uid {uid} can run with this repository importable ({why})")
        done = _as_user(uid, home, [python, str(RUNNER)], timeout=300)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert done.returncode == 0, f"the unprivileged host died (exit {done.returncode}): {done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    assert report["_host"]["uid"] == uid and {"seccomp", "landlock"} <= set(report["_host"]["layers"])
    return report


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_attack_is_stopped_with_an_unprivileged_host(name, unprivileged_report):
    finding = unprivileged_report[name]
    assert finding["held"], finding["evidence"]


def test_a_concurrent_run_survives_the_sigio_kill(os_layers, monkeypatch):
    """The finding itself: one run sets itself as owner-signaller of a pipe aimed at a sibling run."""
    started, pids, original = threading.Event(), [], sandbox._Watch._setup_arrived

    def setup_arrived(self):
        stop = original(self)
        if self.outcome.setup:
            pids.append(self.proc.pid)
            started.set()
        return stop

    monkeypatch.setattr(sandbox._Watch, "_setup_arrived", setup_arrived)
    victim = []
    sleeper = threading.Thread(target=lambda: victim.append(run(
        "def solution():\n    _sys.modules['time'].sleep(2)\n    return 'alive'\n")))
    sleeper.start()
    assert started.wait(30)
    attacker = run(f'''
def solution():
    return [fn("fcntl", 1, 8, {pids[0]}), fn("fcntl", 1, 10, 9), fn("fcntl", 1, 4, 0o20000),
            _os.write(1, b"x" * 70000) and fn("kill", {pids[0]}, 9)]
''')
    sleeper.join()
    assert victim[0].value == "alive", victim[0].error
    assert attacker.value == [[-1, 1]] * 4


def test_the_modes_cpython_needs_still_work():
    result = run('''
def solution():
    pid, tid = _os.getpid(), sc(186)[0]
    return {"F_GETFL": fn("fcntl", 1, 3)[0] >= 0, "F_SETFL O_NONBLOCK": fn("fcntl", 1, 4, 0o4000),
            "F_GETFD": fn("fcntl", 1, 1)[0] >= 0, "isatty (TCGETS)": fn("isatty", 1), "kill self": fn("kill", pid, 0),
            "tgkill own thread": sc(234, pid, tid, 0), "clone3 answers ENOSYS": sc(435, None, 0)}
''')
    assert result.value == {"F_GETFL": True, "F_SETFL O_NONBLOCK": [0, 0], "F_GETFD": True, "isatty (TCGETS)": [0, 25],
                            "kill self": [0, 0], "tgkill own thread": [0, 0], "clone3 answers ENOSYS": [-1, 38]}, result.error


def test_a_lone_surrogate_in_a_value_or_an_error_comes_back_as_text():
    value = sandbox.run_program("def solution():\n    return ['\\ud800', {'k\\udfff': 1}]\n")
    assert value.ok and value.value == ["\ud800", {"k\udfff": 1}]  # the store makes it storable text
    error = sandbox.run_program("def solution():\n    raise ValueError('bad \\ud800 text')\n")
    assert error.kind == "error" and "bad \\ud800 text" in error.error
    error.error.encode("utf-8")  # no lone surrogate left to break a store or a tokenizer


def test_the_readme_lists_exactly_the_syscall_allowlist():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("What the PAL sandbox guarantees"):]
    section = section[: section.index("\n## ")]
    listed = set(re.findall(r"`([a-z0-9_]+)`", section))
    allowed = {name for names in sandbox_policy.ALLOWED_SYSCALLS.values() for name in names}
    conditional = {name for name, _, _ in sandbox_policy.ARGUMENT_RULES}
    assert allowed | conditional <= listed
    assert PRELUDE  # the attacks' way in is documented by the suite itself
