"""Outputs never clobber inputs: refuse an output that is an input, and write it atomically.

Every command that writes a file calls `refuse_inputs(out, *inputs)` before it reads anything, and
writes through `atomic(out)`: a temporary file in the output's folder, renamed over the output only
once complete, so a failed or killed command leaves the old output (and every input) as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from traces.exitcodes import InvalidInput


class OutputError(InvalidInput, ValueError):
    """An output path that would destroy an input (or cannot be written): exit 104."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths name one file: the same path (existing or not), a symbolic or hard link."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def refuse_inputs(
    out: str | os.PathLike | None, *inputs: str | os.PathLike | None, option: str = ""
) -> None:
    """OutputError when `out` is (or links to) one of `inputs`; None values are skipped."""
    if out is None:
        return
    name = f"{option} {out}" if option else str(out)
    for src in inputs:
        if src is not None and same_file(out, src):
            shown = "" if os.fspath(src) == os.fspath(out) else f" ({src})"
            raise OutputError(f"{name}: the output is also an input{shown}; write to another file")


def partial_path(dst: str | os.PathLike) -> Path:
    """The temporary name `dst` is written under: hidden, in the same folder, same suffix."""
    p = Path(dst)
    return p.with_name(f".{p.stem}.partial-{os.getpid()}{p.suffix}")


@contextlib.contextmanager
def atomic(dst: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `dst`; rename it over `dst` when the block completes.

    On any exception the temporary file is removed and `dst` is left as it was. A symbolic link
    stays a link: the file it points to is the one replaced. A `dst` that is not a regular file
    (/dev/null, /dev/full, a pipe) is written in place: it cannot be replaced.
    """
    real = Path(os.path.realpath(dst))
    try:
        special = not stat.S_ISREG(os.stat(real).st_mode)
    except OSError:
        special = False
    if special:
        yield Path(dst)  # its own name (and suffix): opening it follows the link
        return
    tmp = real.with_name(partial_path(dst).name)
    try:
        yield tmp
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_partial(path: str | os.PathLike) -> None:
    """Remove a half-written output, unless it is not a regular file (a link, /dev/full, a pipe)."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)


def write_text(dst: str | os.PathLike, text: str, what: str = "output") -> None:
    """Write text to `dst` atomically; OutputError naming the file and the OS's reason."""
    try:
        with atomic(dst) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise OutputError(f"{dst}: cannot write the {what}: {e.strerror or e}") from None
