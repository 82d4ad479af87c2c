"""The PAL sandbox against real attack programs: each test checks that the attack's effect did not happen.

Attacks reach `os` without importing it (through `object.__subclasses__()`), so they get past the import
allowlist and meet the OS layers. Several run twice: with every layer on, and with only the one layer
that should stop them (the others switched off), to show that layer holds on its own.
"""
import json
import math
import os
import platform
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prompts import sandbox
from prompts.sandbox import SandboxResult, capabilities, run_program

# Reaches the os module's globals from a bare `object`, the classic PALChain escape.
REACH_OS = '''
def _os():
    for cls in ().__class__.__bases__[0].__subclasses__():
        if cls.__name__ == "_wrap_close":
            return cls.__init__.__globals__
    raise LookupError("os not reachable")

'''
ALL_LAYERS = frozenset()
SECCOMP_ALONE = frozenset({"landlock", "unprivileged", "import_allowlist"})
LANDLOCK_ALONE = frozenset({"seccomp", "unprivileged", "import_allowlist"})
x86_64_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="raw x86_64 syscall numbers")


def attack(body: str, **kwargs) -> SandboxResult:
    return run_program(REACH_OS + body, timeout_s=kwargs.pop("timeout_s", 2.0), **kwargs)


def everything(result: SandboxResult) -> str:
    """All text a program could smuggle a secret out through."""
    return json.dumps(result.value, default=repr) + result.stdout + result.error


def require(layer: str) -> None:
    """Skip, naming the reason, where this machine cannot give a run the layer a test relies on."""
    caps = capabilities()
    if not caps[layer]:
        pytest.skip(f"no {layer} layer here: {caps['details'].get(layer, caps['details'])}")


def layer_configs(alone):
    ids = {ALL_LAYERS: "all-layers", SECCOMP_ALONE: "seccomp-alone", LANDLOCK_ALONE: "landlock-alone"}
    return {"params": [ALL_LAYERS, alone], "ids": [ids[ALL_LAYERS], ids[alone]]}


@pytest.fixture(**layer_configs(LANDLOCK_ALONE))
def file_layers(request, monkeypatch):
    """All layers, then Landlock alone: either must keep files outside the temp dir out of reach."""
    require("landlock")
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", request.param)


@pytest.fixture(**layer_configs(SECCOMP_ALONE))
def process_layers(request, monkeypatch):
    """All layers, then seccomp alone: either must stop new processes, sockets and signals."""
    require("seccomp")
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", request.param)


@pytest.fixture
def seccomp_on():
    require("seccomp")


@pytest.fixture
def public_dir():
    """A world-writable directory outside the sandbox: plain file permissions would let the child in."""
    path = Path(tempfile.mkdtemp(prefix="pal-test-public-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def canary(public_dir):
    secret = f"canary-{uuid.uuid4().hex}"
    path = public_dir / "secret.txt"
    path.write_text(secret)
    path.chmod(0o644)
    return path, secret


@pytest.fixture
def tcp_server():
    """A loopback listener; a connection, even one never accepted, waits in its backlog."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def connection_arrived(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.fixture
def victim():
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)  # its own group, not pytest's
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def spawned_pids(monkeypatch):
    """Record the pid of every sandbox process the host starts."""
    pids, original = [], subprocess.Popen

    class Recording(original):
        def __init__(self, command, *args, **kwargs):
            super().__init__(command, *args, **kwargs)
            if str(sandbox._CHILD_SCRIPT) in command:  # not the cleanup process
                pids.append(self.pid)

    monkeypatch.setattr(sandbox.subprocess, "Popen", Recording)
    return pids


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- normal behaviour -------------------------------------------------------------------------

@pytest.mark.parametrize("expression, value", [
    ("42", 42), ("2.5", 2.5), ("'Paris'", "Paris"), ("None", None), ("True", True),
    ("[1, 'a', None, [2.0]]", [1, "a", None, [2.0]]), ("(1, 2)", [1, 2]),
    ("{'a': [1, 2], 'b': {'c': 'd'}}", {"a": [1, 2], "b": {"c": "d"}}),
])
def test_a_correct_program_returns_its_value(expression, value):
    result = run_program(f"def solution():\n    x = {expression}\n    return x\n")
    assert (result.ok, result.kind, result.value, result.error) == (True, "ok", value, "")
    assert result.duration_ms > 0


def test_prints_are_captured_apart_from_the_value():
    result = run_program("def solution():\n    print('thinking', 6 * 7)\n    return 42\n")
    assert result.value == 42 and result.stdout == "thinking 42\n"


def test_an_exception_is_an_error_with_its_type_message_and_line():
    result = run_program("def solution():\n    total = 10\n    return total / 0\n")
    assert result.kind == "error" and not result.ok and result.value is None
    assert result.error == "ZeroDivisionError: division by zero (line 3)"


def test_a_syntax_error_is_reported_clearly():
    result = run_program("def solution(:\n    return 1\n")
    assert result.kind == "error" and result.error.startswith("SyntaxError") and "line 1" in result.error


def test_a_missing_entry_function_is_reported():
    result = run_program("answer = 42\n")
    assert result.kind == "error" and result.error == "the program defines no function solution()"


def test_another_entry_point_can_be_named():
    assert run_program("def main():\n    return 'hi'\n", entry="main").value == "hi"


@pytest.mark.parametrize("expression, named", [
    ("{1, 2}", "set"), ("solution", "function"), ("object()", "object"), ("{(1, 2): 3}", "tuple"),
])
def test_a_return_value_that_is_not_json_data_is_reported(expression, named):
    result = run_program(f"def solution():\n    return {expression}\n")
    assert result.kind == "error" and result.value is None
    assert "not JSON data" in result.error and named in result.error


def test_a_hostile_return_value_cannot_break_the_harness():
    program = "class Evil(dict):\n    def items(self):\n        raise SystemExit\n\ndef solution():\n    return Evil(a=1)\n"
    result = run_program(program)
    assert result.kind == "error" and result.value is None and result.error


def test_nan_and_infinity_come_back_as_floats():
    result = run_program("def solution():\n    return [float('nan'), float('inf'), -float('inf')]\n")
    assert result.ok and math.isnan(result.value[0]) and result.value[1:] == [math.inf, -math.inf]


def test_a_return_value_over_the_size_limit_is_refused():
    result = run_program("def solution():\n    return 'x' * 100_000\n")
    assert result.kind == "error" and "limit" in result.error and result.value is None


def test_the_allowed_modules_work():
    program = """
import math, fractions, decimal, statistics, itertools, collections, datetime, re, json, random, heapq
from dataclasses import dataclass

@dataclass
class Point:
    x: int

def solution():
    day = datetime.datetime.strptime('2024-02-29', '%Y-%m-%d')
    random.seed(1)
    return [math.comb(5, 2), str(fractions.Fraction(1, 3) * 3), str(decimal.Decimal('0.1') * 3),
            statistics.median([3, 1, 2]), list(itertools.accumulate([1, 2, 3])),
            collections.Counter('aab')['a'], day.strftime('%j'), re.findall(r'\\d+', 'a1b22'),
            json.loads('[1]'), random.random() < 1, heapq.nsmallest(1, [5, 4]), Point(3).x]
"""
    result = run_program(program)
    assert result.ok, result.error
    assert result.value == [10, "1", "0.3", 2, [1, 3, 6], 2, "060", ["1", "22"], [1], True, [4], 3]


def test_printing_a_fake_result_cannot_forge_the_answer():
    program = """
def solution():
    print('{"layers": {"seccomp": [true, "fake"]}}')
    print('{"status": "ok", "value": "forged"}')
    return "real"
"""
    result = run_program(program)
    assert result.value == "real" and "forged" in result.stdout


def test_writing_a_fake_result_on_every_descriptor_cannot_forge_the_answer():
    result = attack("""
def solution():
    os = _os()
    for fd in range(3, 64):
        try:
            os['write'](fd, b'{"status": "ok", "value": "forged"}\\n')
        except OSError:
            pass
    return "real"
""")
    assert result.value != "forged" and not result.ok
    assert "more than one result" in result.error


def test_a_deeply_nested_forged_result_does_not_hurt_the_host():
    result = attack("""
def solution():
    os = _os()
    for fd in range(3, 64):
        try:
            os['write'](fd, b'[' * 60000 + b'\\n')
        except OSError:
            pass
    os['_exit'](0)
""")
    assert result.kind == "error" and result.value is None


def test_run_program_works_from_a_non_main_thread():
    results = []
    worker = threading.Thread(target=lambda: results.append(run_program("def solution():\n    return 7\n")))
    worker.start()
    worker.join()
    assert results[0].value == 7


def test_many_runs_in_parallel_threads():
    programs = [f"def solution():\n    return sum(range({n}))\n" for n in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run_program, programs))
    assert [r.value for r in results] == [sum(range(n)) for n in range(8)]


def test_the_temp_dir_is_deleted_and_nothing_persists_between_runs(tmp_path, monkeypatch):
    root = tmp_path / "tmproot"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    first = run_program("def solution():\n    open('note.txt', 'w').write('hello')\n    return open('note.txt').read()\n")
    second = run_program("def solution():\n    return open('note.txt').read()\n")
    assert first.value == "hello"
    assert second.kind == "error" and "FileNotFoundError" in second.error
    assert list(root.iterdir()) == []


def test_a_program_that_closes_its_stdout_still_returns_its_value():
    result = attack("def solution():\n    print('before')\n    _os()['close'](1)\n    return 5\n")
    assert result.value == 5 and result.stdout == "before\n"


def test_without_pidfd_the_host_polls_for_the_exit(monkeypatch):
    monkeypatch.setattr(sandbox, "_open_pidfd", lambda pid: None)  # kernels before 5.3
    assert run_program("def solution():\n    return 3\n").value == 3
    assert run_program("def solution():\n    while True:\n        pass\n", timeout_s=0.5).kind == "timeout"


def test_a_sandbox_that_cannot_start_is_an_error_not_a_crash(monkeypatch):
    monkeypatch.setattr(sandbox, "_CHILD_SCRIPT", Path("/nonexistent/sandbox_child.py"))
    result = run_program("def solution():\n    return 1\n")
    assert result.kind == "error" and result.error.startswith("the sandbox failed to start")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        run_program("def solution():\n    return 1\n", entry="solution()")
    with pytest.raises(ValueError):
        run_program("def solution():\n    return 1\n", timeout_s=0)


# --- which layers are active --------------------------------------------------------------------

def test_capabilities_report_each_layer_and_match_a_real_run():
    caps = capabilities()
    assert set(sandbox.OS_LAYERS) | {"process", "details"} == set(caps)
    assert caps["process"] is True and caps["rlimits"] is True
    active = run_program("def solution():\n    return 1\n").layers
    assert {name for name in sandbox.OS_LAYERS if caps[name]} == set(active)
    assert all(isinstance(caps["details"][name], str) for name in sandbox.OS_LAYERS)


def test_a_missing_layer_is_reported_never_pretended(monkeypatch):
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", frozenset({"landlock"}))
    result = run_program("def solution():\n    return 1\n")
    assert result.ok and "landlock" not in result.layers
    caps = capabilities()
    assert caps["landlock"] is False and "disabled" in caps["details"]["landlock"]


def test_without_the_security_libraries_the_run_says_which_layers_are_missing(monkeypatch, caplog):
    monkeypatch.setattr(sandbox.policy, "security_lib_dirs", lambda: [])  # as if pyseccomp and landlock were absent
    with caplog.at_level("WARNING", logger="prompts.sandbox"):
        result = run_program("def solution():\n    return 1\n")
    assert result.ok and not {"seccomp", "landlock"} & set(result.layers)
    assert "rlimits" in result.layers
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "without its seccomp layer" in warned and "without its landlock layer" in warned


def test_a_required_layer_that_is_missing_refuses_the_run(monkeypatch):
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", frozenset({"landlock"}))
    monkeypatch.setattr(sandbox, "REQUIRED_LAYERS", frozenset({"landlock"}))
    result = run_program("def solution():\n    print('ran')\n    return 1\n")
    assert result.kind == "error" and "landlock" in result.error and result.stdout == ""


# --- the import allowlist (a usability layer: clear messages) ------------------------------------

@pytest.mark.parametrize("code, module", [
    ("import os\n    os.system('touch {marker}')", "os"),
    ("__import__('os').system('touch {marker}')", "os"),
    ("from os import system\n    system('touch {marker}')", "os"),
    ("import importlib\n    importlib.import_module('os').system('touch {marker}')", "importlib"),
    ("getattr(__builtins__, '__imp' + 'ort__')('subprocess').run(['touch', '{marker}'])", "subprocess"),
    ("getattr(__builtins__, 'ev' + 'al')(\"__imp\" + \"ort__('o' + 's')\").system('touch {marker}')", "os"),
    ("import socket\n    socket.create_connection(('127.0.0.1', 9))", "socket"),
    ("import ctypes\n    ctypes.CDLL(None).system(b'touch {marker}')", "ctypes"),
    ("import sys\n    sys.modules['os'].system('touch {marker}')", "sys"),
])
def test_imports_outside_the_allowlist_are_refused_by_name(code, module, public_dir):
    marker = public_dir / "marker"
    result = run_program(f"def solution():\n    {code.format(marker=marker)}\n    return 1\n")
    assert result.kind == "violation" and f"import of '{module}' is not allowed (allowed: " in result.error
    assert not marker.exists()


def test_a_decorator_cannot_smuggle_in_an_import(public_dir):
    marker = public_dir / "marker"
    program = f'@exec\n@lambda _: "import os\\nos.system(\'touch {marker}\')"\ndef solution():\n    return 1\n'
    result = run_program(program)
    assert result.kind == "violation" and "'os'" in result.error and not marker.exists()


# --- files: Landlock (and, when the host is root, the dropped uid) --------------------------------

def test_open_cannot_read_a_world_readable_secret(file_layers, canary):
    path, secret = canary
    result = run_program(f"def solution():\n    return open({str(path)!r}).read()\n")
    assert result.kind == "violation" and secret not in everything(result)
    assert "operation not permitted by the sandbox: open" in result.error


def test_os_open_cannot_read_the_trace_database(file_layers, tmp_path):
    database = tmp_path / "traces.sqlite"
    secret = f"SQLite format 3 canary-{uuid.uuid4().hex}"
    database.write_text(secret)
    result = attack(f"""
def solution():
    os = _os()
    fd = os['open']({str(database)!r}, os['O_RDONLY'])
    return os['read'](fd, 1000).decode()
""")
    assert not result.ok and secret not in everything(result)


def test_the_home_directory_cannot_be_listed_or_read(file_layers):
    home = Path.home()
    result = attack(f"""
def solution():
    return _os()['listdir']({str(home)!r})
""")
    assert not result.ok and result.value is None


def test_writes_outside_the_temp_dir_do_not_happen(file_layers, public_dir):
    name = f"pal-canary-{uuid.uuid4().hex}"
    targets = [public_dir / name, Path.home() / name, Path(tempfile.gettempdir()) / name]
    try:
        result = attack(f"""
def solution():
    written = []
    for path in {[str(t) for t in targets]!r}:
        try:
            open(path, 'w').write('pwned')
            written.append(path)
        except OSError:
            pass
    return written
""")
        assert result.value == [] and not any(t.exists() for t in targets)
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_links_from_the_temp_dir_do_not_expose_outside_files(file_layers, canary):
    path, secret = canary
    result = attack(f"""
def solution():
    os, seen = _os(), []
    for make in ('link', 'symlink'):
        try:
            os[make]({str(path)!r}, make)
            seen.append(open(make).read())
        except OSError:
            pass
    return seen
""")
    assert secret not in everything(result) and result.value == []


def test_the_host_process_memory_and_environment_cannot_be_read_through_proc(file_layers, monkeypatch):
    secret = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    result = attack(f"""
def solution():
    os, seen = _os(), []
    for path in ('/proc/{os.getpid()}/environ', '/proc/{os.getpid()}/cmdline', '/proc/self/environ'):
        try:
            seen.append(open(path, 'rb').read().decode(errors='replace'))
        except OSError:
            pass
    return seen
""")
    assert secret not in everything(result) and result.value == []


def test_file_metadata_outside_landlock_reach_cannot_be_changed(seccomp_on, canary):
    path, _ = canary
    before = path.stat()
    result = attack(f"""
def solution():
    os, done = _os(), []
    for name, args in (('chmod', (0o777,)), ('chown', (65534, 65534)), ('utime', ((0, 0),))):
        try:
            os[name]({str(path)!r}, *args)
            done.append(name)
        except OSError:
            pass
    return done
""")
    after = path.stat()
    assert result.value == []
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_mtime) == (
        stat.S_IMODE(before.st_mode), before.st_uid, before.st_mtime)


# --- processes, network, signals: seccomp (and the dropped uid) -----------------------------------

def test_a_fork_bomb_spawns_nothing(process_layers):
    result = attack("""
def solution():
    os, made = _os(), 0
    for _ in range(50):
        try:
            pid = os['fork']()
        except OSError:
            continue
        if pid == 0:
            print('CHILD-ALIVE', flush=True)
            os['_exit'](0)
        made += 1
    return made
""")
    assert result.value == 0 and "CHILD-ALIVE" not in result.stdout


def test_an_unguarded_fork_is_a_violation_named_fork(seccomp_on):
    result = attack("def solution():\n    while True:\n        _os()['fork']()\n")
    assert result.kind == "violation" and "sandbox: fork" in result.error


@x86_64_only
def test_raw_fork_vfork_and_clone_syscalls_through_ctypes_fail(process_layers):
    result = attack("""
def solution():
    libc = _os()['sys'].modules['ctypes'].CDLL(None)
    pids = [libc.syscall(57), libc.syscall(58), libc.syscall(56, 17, 0, 0, 0, 0)]
    if 0 in pids:
        print('CHILD-ALIVE', flush=True)
        _os()['_exit'](0)
    return pids
""")
    assert result.value == [-1, -1, -1] and "CHILD-ALIVE" not in result.stdout


@x86_64_only
def test_the_x32_syscall_back_door_kills_the_program(seccomp_on):
    result = attack("""
def solution():
    libc = _os()['sys'].modules['ctypes'].CDLL(None)
    return libc.syscall(0x40000000 | 57)
""")
    assert result.kind == "violation" and result.value is None


def test_threads_still_work_inside_the_sandbox():
    result = attack("""
def solution():
    thread = _os()['sys'].modules['_thread']
    out, lock = [], thread.allocate_lock()
    lock.acquire()
    thread.start_new_thread(lambda: (out.append('from a thread'), lock.release()), ())
    lock.acquire()
    return out
""")
    assert result.value == ["from a thread"]


@pytest.mark.parametrize("how", ["os.system", "posix_spawn", "execv", "subprocess.run", "ctypes system"])
def test_no_program_can_be_started(process_layers, how, public_dir):
    marker = public_dir / "marker"
    shell = f"echo SPAWNED; touch {marker}"
    calls = {
        "os.system": f"_os()['system']({shell!r})",
        "posix_spawn": f"_os()['posix_spawn']('/bin/sh', ['sh', '-c', {shell!r}], {{}})",
        "execv": f"_os()['execv']('/bin/sh', ['sh', '-c', {shell!r}])",
        "subprocess.run": "_os()['sys'].modules['_frozen_importlib']._gcd_import('subprocess')"
                          f".run(['sh', '-c', {shell!r}]).returncode",
        "ctypes system": f"_os()['sys'].modules['ctypes'].CDLL(None).system({shell.encode()!r})",
    }
    result = attack(f"def solution():\n    return {calls[how]}\n")
    assert not marker.exists() and "SPAWNED" not in result.stdout
    assert result.value in (None, -1, 127 << 8)  # system(3) reports a shell that could not start as 127


def test_no_connection_reaches_a_loopback_server(process_layers, tcp_server):
    port = tcp_server.getsockname()[1]
    result = attack(f"""
def solution():
    sys = _os()['sys']
    try:
        sock = sys.modules['_frozen_importlib']._gcd_import('socket')
        sock.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')
    except (OSError, ImportError):  # the module itself may be out of reach
        pass
    ct = sys.modules['ctypes']
    libc = ct.CDLL(None)
    fd = libc.socket(2, 1, 0)
    address = ct.create_string_buffer(b'\\x02\\x00' + ({port}).to_bytes(2, 'big') + bytes([127, 0, 0, 1]) + bytes(8), 16)
    return [fd, libc.connect(fd, address, 16)]
""")
    assert not connection_arrived(tcp_server)
    assert result.value == [-1, -1]


def test_the_host_survives_a_kill_of_its_own_pid(seccomp_on):
    result = attack("def solution():\n    os = _os()\n    os['kill'](os['getppid'](), 9)\n    return 'sent'\n")
    assert result.kind == "violation" and "sandbox: kill" in result.error


def test_other_processes_cannot_be_signalled(process_layers, victim):
    result = attack(f"""
def solution():
    os, sent = _os(), []
    for name, target in (('kill', {victim.pid}), ('killpg', {os.getpgid(victim.pid)}), ('kill', 0)):
        try:
            os[name](target, 9)
            sent.append(name)
        except OSError:
            pass
    return sent
""")
    assert victim.poll() is None and result.value == []


def test_the_environment_holds_no_secrets(monkeypatch):
    secret = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    result = attack("def solution():\n    return dict(_os()['environ'])\n")
    assert result.ok and secret not in everything(result)
    assert set(result.value) <= {"PATH", "LANG"}


# --- resources: rlimits, the timeout, the output cap ----------------------------------------------

@pytest.mark.parametrize("body", [
    "return 'x' * 10**10",
    "hoard = []\n    while True:\n        hoard.append(bytearray(10**7))",
])
def test_a_memory_bomb_hits_the_memory_limit(body, monkeypatch):
    monkeypatch.setattr(sandbox, "MEMORY_LIMIT_BYTES", 128 * 2**20)  # the same path, reached sooner
    result = run_program(f"def solution():\n    {body}\n", timeout_s=5)
    assert result.kind == "memory" and "memory limit exceeded" in result.error


def test_an_infinite_loop_times_out_and_its_process_group_is_gone(spawned_pids):
    result = run_program("def solution():\n    while True:\n        pass\n", timeout_s=1)
    assert result.kind == "timeout" and result.error == "timed out after 1 s"
    assert 1000 <= result.duration_ms < 1000 + 3000
    assert len(spawned_pids) == 1 and not group_alive(spawned_pids[0])


def test_the_timeout_is_wall_clock_not_cpu_time():
    result = attack("def solution():\n    _os()['sys'].modules['time'].sleep(60)\n", timeout_s=1)
    assert result.kind == "timeout" and result.duration_ms < 4000


def test_deep_recursion_is_an_ordinary_error():
    result = run_program("def solution():\n    def down(n):\n        return down(n + 1)\n    return down(0)\n")
    assert result.kind == "error" and result.error.startswith("RecursionError")


def test_lifting_the_recursion_limit_only_hurts_the_program():
    result = attack("""
def solution():
    _os()['sys'].setrecursionlimit(10**8)
    def down(n):
        return down(n + 1)
    return down(0)
""", timeout_s=1)
    assert not result.ok and result.kind in ("memory", "error", "timeout")


def test_huge_output_is_capped():
    result = run_program("def solution():\n    for i in range(200_000):\n        print(i)\n    return 'done'\n")
    assert result.value == "done" and result.stdout.startswith("0\n1\n2\n")
    assert len(result.stdout.encode()) < sandbox.STDOUT_LIMIT_BYTES + 100
    assert "[output truncated" in result.stdout


def test_raw_writes_past_the_print_cap_are_capped_by_the_host():
    result = attack("def solution():\n    _os()['write'](1, b'x' * 10**7)\n    return 'done'\n")
    assert result.value == "done" and len(result.stdout) < sandbox.STDOUT_LIMIT_BYTES + 100
