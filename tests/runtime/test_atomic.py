"""The one atomic-write helper: success renames, failure leaves the target as it was."""
import os
import time

import pytest

from hdn_deploy.atomic import (TEMP_PATTERN, atomic_path, atomic_write_text, create_temp_beside,
                               remove_stale_temps, staged_folder)


def test_success_replaces_target_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_failure_keeps_old_target_and_removes_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_new_file_has_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_staged_folder_is_all_or_nothing(tmp_path):
    out = tmp_path / "pkg"
    with pytest.raises(ValueError):
        with staged_folder(out) as stage:
            (stage / "f").write_text("x")
            raise ValueError
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with staged_folder(out) as stage:
        (stage / "f").write_text("x")
    assert (out / "f").read_text() == "x"


def test_remove_stale_temps_only_removes_old_temps_of_ours(tmp_path):
    stale = create_temp_beside(tmp_path / "a_mmse.tif")
    fresh = create_temp_beside(tmp_path / "b_mmse.tif")
    foreign = tmp_path / ".other.tmp"
    foreign.write_text("not ours")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(foreign, (old, old))
    assert TEMP_PATTERN.match(stale.name)
    assert remove_stale_temps(tmp_path, older_than_s=60) == [stale]
    assert not stale.exists() and fresh.exists() and foreign.exists()
