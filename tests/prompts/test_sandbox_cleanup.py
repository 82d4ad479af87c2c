"""Removing a PAL run's temp dir: any depth, links never followed, bounded in time, never raising into the run."""
import os
import tempfile
import time
from pathlib import Path

import pytest

from prompts import sandbox, sandbox_cleanup, sandbox_workdir
from prompts.sandbox_cleanup import CleanupError, empty_dir
from prompts.sandbox_workdir import remove

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="runs the cleanup as another user, which needs root")
NOBODY = (65534, 65534)


def deep_tree(top: Path, depth: int, owner: tuple[int, int] | None = None) -> None:
    """`depth` nested dirs under `top`, a file in every 100th, built descriptor-relative (past PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY)
    for level in range(depth):
        if level % 100 == 0:
            os.close(os.open("file", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
            if owner:
                os.chown("file", *owner, dir_fd=fd)
        os.mkdir("dir", dir_fd=fd)
        child = os.open("dir", os.O_RDONLY, dir_fd=fd)
        if owner:
            os.fchown(child, *owner)
        os.close(fd)
        fd = child
    os.close(fd)


@pytest.mark.slow
def test_a_tree_6000_deep_is_emptied_without_recursion(tmp_path):
    deep_tree(tmp_path, 6000)
    empty_dir(str(tmp_path), time.monotonic() + 60)
    assert list(tmp_path.iterdir()) == []


def test_links_are_removed_never_followed(tmp_path):
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "data.txt").write_text("keep me")
    top = tmp_path / "top"
    top.mkdir()
    (top / "dir-link").symlink_to(outside)
    (top / "file-link").symlink_to(outside / "keep" / "data.txt")
    os.link(outside / "keep" / "data.txt", top / "hard-link")
    empty_dir(str(top), time.monotonic() + 10)
    assert list(top.iterdir()) == [] and (outside / "keep" / "data.txt").read_text() == "keep me"


def test_running_out_of_time_is_an_error_not_a_hang(tmp_path):
    deep_tree(tmp_path, 50)
    with pytest.raises(CleanupError, match="time"):
        empty_dir(str(tmp_path), time.monotonic() - 1)


def test_a_tree_moved_during_removal_is_left_alone(tmp_path):
    (tmp_path / "a").mkdir()
    fd = os.open(tmp_path / "a", os.O_RDONLY)
    try:
        with pytest.raises(CleanupError, match="moved"):
            sandbox_cleanup._ascend(fd, (0, 0))  # ".." is not the directory we came from
    finally:
        os.close(fd)


@root_only
def test_a_root_host_cleans_up_as_the_sandbox_user(tmp_path):
    """The deputy has the program's rights: root's own files in the dir are beyond it."""
    top = tmp_path / "work"
    top.mkdir()
    os.chown(tmp_path, *NOBODY)
    os.chown(top, *NOBODY)
    deep_tree(top, 3, owner=NOBODY)
    root_owned = top / "dir" / "roots"
    root_owned.mkdir()
    os.chown(top / "dir", 0, 0)  # nobody may not remove entries of a root-owned directory
    (root_owned / "x").write_text("root's")
    with pytest.raises(CleanupError, match="Permission denied"):
        sandbox_workdir._empty_as(NOBODY, str(top))
    assert (root_owned / "x").exists()


@root_only
def test_a_root_host_removes_a_deep_tree_left_by_the_program(tmp_path):
    top = Path(tempfile.mkdtemp(dir=tmp_path))
    os.chown(top, *NOBODY)
    deep_tree(top, 1100, owner=NOBODY)  # past the recursion limit that broke shutil.rmtree
    remove(str(top), NOBODY)
    assert not top.exists()


def test_a_cleanup_failure_is_logged_and_the_result_kept(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def fail(*_args):
        raise CleanupError("ran out of time")

    monkeypatch.setattr(sandbox_workdir, "empty_dir", fail)
    monkeypatch.setattr(sandbox_workdir, "_empty_as", fail)
    with caplog.at_level("WARNING", logger="prompts.sandbox_workdir"):
        result = sandbox.run_program("def solution():\n    return 'kept'\n")
    assert result.value == "kept" and "could not remove the sandbox temp dir" in caplog.text
    for leftover in tmp_path.iterdir():
        empty_dir(str(leftover), time.monotonic() + 10)
        leftover.rmdir()


def test_a_program_that_outruns_the_cleanup_budget_still_gets_its_result(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(sandbox_workdir, "CLEANUP_BUDGET_S", 0.0)
    program = "import dataclasses\nos = dataclasses.sys.modules['os']\n\ndef solution():\n" \
              "    for n in range(300):\n        os.mkdir(f'd{n}')\n    return 'made'\n"
    with caplog.at_level("WARNING", logger="prompts.sandbox_workdir"):
        start = time.monotonic()
        result = sandbox.run_program(program)
    assert result.value == "made" and time.monotonic() - start < 10
    assert "could not remove the sandbox temp dir" in caplog.text
    for leftover in tmp_path.iterdir():
        empty_dir(str(leftover), time.monotonic() + 30)
        leftover.rmdir()
