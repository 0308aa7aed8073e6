"""traces.outputs: an output that is an input is refused (same path, symbolic or hard link), and
outputs appear only when complete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces.outputs import OutputError, atomic, partial_path, refuse_inputs, same_file, write_text


def test_same_file_sees_paths_symlinks_and_hard_links(tmp_path: Path) -> None:
    a, b = tmp_path / "a.grt", tmp_path / "b.grt"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    os.link(a, tmp_path / "hard.grt")
    (tmp_path / "sym.grt").symlink_to(a)
    assert (
        same_file(a, a)
        and same_file(a, tmp_path / "hard.grt")
        and same_file(tmp_path / "sym.grt", a)
    )
    assert same_file(tmp_path / "sub" / ".." / "new.grt", tmp_path / "new.grt")  # not existing yet
    assert not same_file(a, b) and not same_file(a, tmp_path / "missing.grt")


def test_refuse_inputs_names_the_option_and_the_input(tmp_path: Path) -> None:
    a = tmp_path / "a.grt"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "h.grt")
    with pytest.raises(
        OutputError, match=r"--out .*h\.grt: the output is also an input \(.*a\.grt\)"
    ):
        refuse_inputs(tmp_path / "h.grt", None, a, option="--out")
    refuse_inputs(None, a)
    refuse_inputs(tmp_path / "other.grt", a, None)
    assert isinstance(OutputError("x"), ValueError) and OutputError("x").exit_code == 104


def test_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic(out) as tmp:
        assert tmp == partial_path(out) and tmp.parent == out.parent
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "old" and list(tmp_path.iterdir()) == [out]
    with atomic(out) as tmp:
        tmp.write_text("new")
        assert out.read_text() == "old"  # not until the block completes
    assert out.read_text() == "new" and list(tmp_path.iterdir()) == [out]


def test_write_text_to_a_full_device_or_a_missing_folder_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "full.json").symlink_to("/dev/full")
    with pytest.raises(OutputError, match=r"full\.json: cannot write the summary: No space left"):
        write_text(tmp_path / "full.json", "{}", "summary")
    with pytest.raises(OutputError, match=r"nodir/x\.json: cannot write"):
        write_text(tmp_path / "nodir" / "x.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.json"]


@settings(deadline=None, max_examples=50)
@given(st.text(max_size=200))
def test_write_text_round_trips(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "t.txt"
        write_text(out, text)
        assert out.read_bytes() == text.encode("utf-8") and os.listdir(d) == ["t.txt"]
