"""write_atomic: a reader sees the old file or the new one, never a part."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from labkit.files import write_atomic


def test_writes_text_and_bytes_with_a_plain_files_mode(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_atomic(target, "é")
    assert target.read_bytes() == "é".encode()
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")

    def refuse(source: object, destination: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
