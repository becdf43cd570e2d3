"""mlxkit._io: atomic files and folders, whose leftovers only their writer removes, and I/O
errors that name the path."""

from __future__ import annotations

import os
import subprocess
import sys

from mlxkit._io import (
    PathError,
    atomic_write_bytes,
    atomic_write_file,
    atomic_write_folder,
    remove_folder,
    writer_id,
)

import pytest


def write_files(**files):
    def write(folder):
        for name, text in files.items():
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)

    return write


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "out"
    atomic_write_folder(target, write_files(a="1", b="1"))
    atomic_write_folder(target, write_files(c="2"))
    assert sorted(os.listdir(target)) == ["c"]
    assert os.listdir(tmp_path) == ["out"]  # no temporary, old or lock file is left


def test_a_failed_folder_write_keeps_the_old_folder_and_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    atomic_write_folder(target, write_files(a="old"))

    def fail(folder):
        write_files(a="new")(folder)
        raise OSError(28, "No space left on device")

    with pytest.raises(PathError, match=r"Cannot write '.*out': No space left on device") as info:
        atomic_write_folder(target, fail)
    assert info.value.errno == 28 and info.value.filename == str(target)
    assert (target / "a").read_text() == "old"
    assert os.listdir(tmp_path) == ["out"]


def test_a_failed_file_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "log.csv"
    atomic_write_bytes(target, b"old")

    def fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"ne")
        raise RuntimeError("[write] Unable to write 8 bytes to file.")

    with pytest.raises(PathError, match=r"log\.csv.*Unable to write 8 bytes"):
        atomic_write_file(target, fail)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["log.csv"]


def test_an_unrelated_runtime_error_is_not_disguised(tmp_path):
    def fail(tmp):
        raise RuntimeError("[addmm] shapes do not match")

    with pytest.raises(RuntimeError, match="addmm"):
        atomic_write_file(tmp_path / "x.bin", fail)


def test_leftovers_of_a_live_writer_survive_and_of_a_dead_one_go(tmp_path):
    """Only their writer removes its temporary folders, or a later writer once it is dead."""
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        host = writer_id().split("-")[0]
        live_tmp = tmp_path / f".out.tmp-{host}-{alive.pid}-aaaa"
        dead_tmp = tmp_path / f".out.tmp-{host}-{dead.pid}-bbbb"
        dead_old = tmp_path / f".out.del-{host}-{dead.pid}-cccc"
        other_host = tmp_path / ".out.tmp-elsewhere-1-dddd"
        for folder in (live_tmp, dead_tmp, dead_old, other_host):
            folder.mkdir()
        atomic_write_folder(tmp_path / "out", write_files(a="1"))
        left = sorted(os.listdir(tmp_path))
        assert left == sorted(["out", live_tmp.name, other_host.name])
    finally:
        alive.kill()
        alive.wait()


def test_remove_folder_leaves_nothing(tmp_path):
    atomic_write_folder(tmp_path / "out", write_files(a="1"))
    remove_folder(tmp_path / "out")
    remove_folder(tmp_path / "out")  # nothing there: nothing to do
    assert os.listdir(tmp_path) == []


def test_a_folder_write_refuses_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("keep")
    for path in ("", ".", os.getcwd(), os.path.dirname(os.getcwd())):
        with pytest.raises(ValueError, match="Received: path="):
            atomic_write_folder(path, write_files(a="1"))
    assert os.listdir(tmp_path) == ["mine.txt"]
