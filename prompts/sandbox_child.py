"""Child side of the PAL sandbox: lock this process down, then run one model-written program.

Started by prompts.sandbox as `python -I -S sandbox_child.py CONFIG_JSON`; imports nothing from the project.
"""
import ast
import builtins
import errno
import io
import json
import linecache
import os
import resource
import signal
import sys
import traceback

PROGRAM_FILENAME = "<pal-program>"


class SandboxImportError(ImportError):
    """An import the allowlist refuses (a usability message; the OS layers are the boundary)."""


class _CappedWriter(io.TextIOBase):
    """A text stream that forwards at most `limit` characters, so a print loop stops costing syscalls."""

    def __init__(self, stream, limit: int) -> None:
        super().__init__()
        self._stream, self._left = stream, limit

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._left > 0:
            chunk = str(text)[: self._left]
            self._left -= len(chunk)
            self._stream.write(chunk)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def main() -> None:
    """Set limits, load what the program may use, lock down, report the layers, run, report the result."""
    cfg = json.loads(sys.argv[1])
    fd = cfg["result_fd"]
    try:
        _set_rlimits(cfg)
        source = _read_program(cfg["program"])
        _preload(cfg["allowed_modules"] + cfg["helper_modules"])
        seccomp, landlock = _import_security_libraries(cfg["lib_dirs"])
        layers = _lock_down(cfg, seccomp, landlock)
    except Exception as exc:  # noqa: BLE001 - any failure here must stop the run: never run code half locked down
        _write_all(fd, _frame({"setup_error": f"{type(exc).__name__}: {exc}"}))
        os._exit(2)
    _write_all(fd, _frame({"layers": layers}))
    if set(cfg["required_layers"]) - {name for name, (active, _) in layers.items() if active}:
        os._exit(4)  # the host names what is missing; the program must not run without it
    memory_frame = _frame({"status": "memory", "error": _memory_message(cfg)})
    stdout = _cap_output(cfg["stdout_limit"])
    _finish(fd, _outcome(source, cfg), stdout, memory_frame)


def _frame(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _set_rlimits(cfg: dict) -> None:
    cpu, memory, fsize, nofile = cfg["cpu_s"], cfg["memory_bytes"], cfg["file_size_bytes"], cfg["open_files"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write then fails with EFBIG instead of killing


def _read_program(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _preload(names: list) -> None:
    # Loaded while still privileged: after the uid drop and Landlock the stdlib may be unreadable.
    for name in names:
        try:
            __import__(name)
        except ImportError:
            pass  # a missing optional stdlib module just stays unavailable to programs


def _import_security_libraries(lib_dirs: list) -> tuple:
    sys.path[:0] = lib_dirs
    try:
        seccomp = _optional_import("pyseccomp")
        landlock = _optional_import("landlock")
    finally:
        del sys.path[: len(lib_dirs)]
    return seccomp, landlock


def _optional_import(name: str):
    try:
        return __import__(name)
    except (ImportError, OSError, RuntimeError):  # pyseccomp raises RuntimeError without libseccomp
        return None


def _lock_down(cfg: dict, seccomp, landlock) -> dict:
    disabled = set(cfg["disabled_layers"])
    limits = f"cpu {cfg['cpu_s']} s, memory {cfg['memory_bytes'] >> 20} MiB, file size {cfg['file_size_bytes'] >> 10} KiB"
    layers = {"rlimits": [True, limits + f", {cfg['open_files']} descriptors"]}
    ruleset, layers["landlock"] = _prepare_landlock(cfg, landlock, "landlock" in disabled)
    layers["unprivileged"] = _drop_privileges(cfg, "unprivileged" in disabled)
    if ruleset is not None:
        _apply_landlock(ruleset)
    layers["seccomp"] = _apply_seccomp(seccomp, cfg["seccomp_policy"], "seccomp" in disabled)
    enabled = "import_allowlist" not in disabled
    layers["import_allowlist"] = [enabled, f"{len(cfg['allowed_modules'])} modules" if enabled else "disabled"]
    return layers


def _prepare_landlock(cfg: dict, landlock, disabled: bool) -> tuple:
    """Build the ruleset while still privileged: rules hold paths by descriptor."""
    if disabled:
        return None, [False, "disabled by configuration"]
    if landlock is None:
        return None, [False, "the landlock Python package is not importable"]
    try:
        abi = landlock.landlock_abi_version()
    except landlock.SyscallError as exc:
        return None, [False, f"the kernel offers no Landlock: {exc.reason or exc.strerror}"]
    access = landlock.FSAccess
    ruleset = landlock.Ruleset()
    read_dir = access.READ_FILE | access.READ_DIR
    for path in cfg["read_only_paths"]:
        ruleset.allow(path, rules=read_dir if os.path.isdir(path) else access.READ_FILE)
    for path in cfg["read_write_files"]:
        ruleset.allow(path, rules=access.READ_FILE | access.WRITE_FILE)
    ruleset.allow(cfg["workdir"], rules=_workdir_access(access, abi))
    return ruleset, [True, f"ABI {abi}; read-only {', '.join(cfg['read_only_paths'])}; "
                      "read-write only the temp dir and /dev/null"]


def _workdir_access(access, abi: int):
    rights = (access.READ_FILE | access.WRITE_FILE | access.READ_DIR | access.REMOVE_DIR
              | access.REMOVE_FILE | access.MAKE_DIR | access.MAKE_REG)
    return rights | access.TRUNCATE if abi >= 3 else rights


def _apply_landlock(ruleset) -> None:
    ruleset.apply()
    os.close(ruleset._fd)  # the library keeps it open; the program has no use for it


def _drop_privileges(cfg: dict, disabled: bool) -> list:
    if os.geteuid() != 0:
        return [True, f"runs as uid {os.geteuid()} (not root)"]
    if disabled or not cfg["drop_to"]:
        return [False, "runs as root"]
    uid, gid = cfg["drop_to"]
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # as root this sets real, effective and saved ids, and clears all capabilities
    return [True, f"dropped root to uid {uid}, gid {gid}"]


def _apply_seccomp(seccomp, policy: dict, disabled: bool) -> list:
    if disabled:
        return [False, "disabled by configuration"]
    if seccomp is None:
        return [False, "libseccomp or the pyseccomp package is unavailable"]
    flt = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))  # an allowlist: whatever is not allowed fails
    flt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)  # also kills x32 / int 0x80 calls
    unknown = _add_rules(seccomp, flt, policy)
    try:
        flt.load()
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS):
            return [False, f"the kernel refused the filter: {exc.strerror}"]
        raise
    allowed = len(policy["allow"]) + len({name for name, _ in policy["allow_if"]}) - len(unknown)
    skipped = f"; unknown to libseccomp: {', '.join(unknown)}" if unknown else ""
    return [True, f"allowlist of {allowed} syscalls, some only with certain arguments; all else EPERM{skipped}"]


def _add_rules(seccomp, flt, policy: dict) -> list:
    """Add the policy's rules; return the names this libseccomp (or architecture) does not know."""
    known = {name for name in [*policy["allow"], *(n for n, _ in policy["allow_if"]), *policy["enosys"]]
             if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0}
    for name in policy["allow"]:
        if name in known:
            flt.add_rule(seccomp.ALLOW, name)
    for name, conditions in policy["allow_if"]:
        if name in known:
            flt.add_rule(seccomp.ALLOW, name, *(_condition(seccomp, *c) for c in conditions))
    for name in policy["enosys"]:
        if name in known:
            flt.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
    every = [*policy["allow"], *(n for n, _ in policy["allow_if"])]
    return sorted(set(every) - known)


def _condition(seccomp, index: int, op: str, *values):
    # "self" is this process's pid, which only the child knows.
    values = [os.getpid() if value == "self" else value for value in values]
    return seccomp.Arg(index, getattr(seccomp, op), *values)


def _memory_message(cfg: dict) -> str:
    return f"memory limit exceeded ({cfg['memory_bytes'] >> 20} MiB)"


def _cap_output(limit: int) -> _CappedWriter:
    # Line-buffered so prints made before a timeout still reach the host; +1 so the host sees overflow.
    sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")
    sys.stderr.reconfigure(errors="backslashreplace")
    sys.stdout = _CappedWriter(sys.stdout, limit + 1)
    sys.stderr = _CappedWriter(sys.stderr, limit + 1)
    return sys.stdout


def _outcome(source: str, cfg: dict) -> dict:
    try:
        return _run(source, cfg)
    except MemoryError:
        return {"status": "memory", "error": _memory_message(cfg)}
    except BaseException:  # noqa: BLE001 - hostile objects (an errno property, a serialiser hook) can make describing them fail
        return {"status": "error", "error": "the program's result or exception could not be described"}


def _run(source: str, cfg: dict) -> dict:
    """Compile and run the program, call its entry point; every outcome becomes a result frame."""
    linecache.cache[PROGRAM_FILENAME] = (len(source), None, source.splitlines(True), PROGRAM_FILENAME)
    if "import_allowlist" not in cfg["disabled_layers"]:
        _install_import_guard(cfg)
    namespace = {"__name__": "__pal__", "__builtins__": builtins}
    entry = cfg["entry"]
    try:
        exec(compile(source, PROGRAM_FILENAME, "exec"), namespace)
        function = namespace.get(entry)
        if not callable(function):
            return {"status": "error", "error": f"the program defines no function {entry}()"}
        value = function()
    except BaseException as exc:  # noqa: BLE001 - the program may raise anything, SystemExit included: report it all
        return _describe_failure(exc, source, cfg)
    return _encode_value(value, entry, cfg["result_limit"])


def _install_import_guard(cfg: dict) -> None:
    allowed = frozenset(cfg["allowed_modules"])
    helpers = frozenset(cfg["helper_modules"])
    listing = ", ".join(sorted(allowed))
    trusted = tuple(cfg["trusted_code_prefixes"])
    real_import, modules, get_frame = builtins.__import__, sys.modules, sys._getframe

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if _from_program(get_frame(1), modules, trusted):
            top = str(name).partition(".")[0]
            if level or not (top in allowed or (name in helpers and name in modules)):
                raise SandboxImportError(f"import of {name!r} is not allowed (allowed: {listing})")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import


def _from_program(frame, modules: dict, trusted: tuple) -> bool:
    """True unless the importing frame is code of a real stdlib module (whose own imports are fine)."""
    scope = frame.f_globals
    name = scope.get("__name__")
    module = modules.get(name) if type(name) is str else None
    if module is None or getattr(module, "__dict__", None) is not scope:
        return True
    return not frame.f_code.co_filename.startswith(trusted)


def _describe_failure(exc: BaseException, source: str, cfg: dict) -> dict:
    if isinstance(exc, SandboxImportError):
        return {"status": "violation", "error": str(exc)}
    if isinstance(exc, MemoryError):
        return {"status": "memory", "error": _memory_message(cfg)}
    if isinstance(exc, OSError) and exc.errno in (errno.EPERM, errno.EACCES):
        return {"status": "violation", "error": _blocked_message(exc, source)}
    if isinstance(exc, SystemExit):
        return {"status": "error", "error": f"the program called exit({_safe_str(exc.code)})"}
    if isinstance(exc, SyntaxError):
        line = f" (line {exc.lineno})" if exc.lineno else ""
        return {"status": "error", "error": f"SyntaxError: {_safe_str(exc.msg)}{line}"}
    message = _safe_str(exc)
    return {"status": "error", "error": f"{type(exc).__name__}{': ' if message else ''}{message}{_where(exc)}"}


def _safe_str(obj) -> str:
    try:
        text = str(obj)
    except Exception:  # noqa: BLE001 - the program's own __str__ may raise anything
        text = f"<unprintable {type(obj).__name__}>"
    return " ".join(text.split())[:500]


def _where(exc: BaseException) -> str:
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == PROGRAM_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def _blocked_message(exc: OSError, source: str) -> str:
    what = _blocked_call(exc, source)
    target = f" {exc.filename!r}" if isinstance(exc.filename, (str, bytes)) else ""
    return f"operation not permitted by the sandbox: {what}{target} ({exc.strerror}){_where(exc)}"


def _blocked_call(exc: OSError, source: str) -> str:
    """The failing call: the innermost library function, or the program's own call expression."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "system call"
    code = tb.tb_frame.f_code
    if code.co_filename != PROGRAM_FILENAME:
        return code.co_qualname.removesuffix(".__init__")
    summary = traceback.extract_tb(tb, limit=1)[0]
    lines = source.splitlines()
    if summary.lineno != summary.end_lineno or summary.colno is None or not 0 < summary.lineno <= len(lines):
        return "system call"
    return _callee(lines[summary.lineno - 1][summary.colno:summary.end_colno])


def _callee(expression: str) -> str:
    """`open` for `open(p)`, `fork` for `os.fork()` or `g['fork']()`: the name a reader recognises."""
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        return "system call"
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Subscript) and isinstance(func.slice, ast.Constant):
        return str(func.slice.value)[:80]
    return func.id if isinstance(func, ast.Name) else ast.unparse(func)[:80]


def _encode_value(value, entry: str, limit: int) -> dict:
    try:
        payload = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as exc:
        return {"status": "error", "error": f"{entry}() returned a value that is not JSON data "
                f"({_safe_str(exc)}); return numbers, strings, booleans, None, lists or dicts"}
    if len(payload) > limit:
        return {"status": "error", "error": f"{entry}() returned {len(payload)} bytes of JSON; the limit is {limit}"}
    return {"status": "ok", "payload": payload}


def _finish(fd: int, result: dict, stdout: _CappedWriter, memory_frame: bytes) -> None:
    """Write the result frame and leave at once: no finalizer of the program may run afterwards."""
    try:
        stdout.flush()
    except Exception:  # noqa: BLE001 - the program closed or tampered with its stdout; the result has its own channel
        pass
    try:
        payload = result.pop("payload", None)
        data = _frame(result) if payload is None else ('{"status": "ok", "value": ' + payload + "}\n").encode()
    except MemoryError:
        data = memory_frame
    try:
        _write_all(fd, data)
    except OSError:
        os._exit(3)
    os._exit(0)


if __name__ == "__main__":
    main()
