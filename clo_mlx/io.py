"""Atomic file writes: write a temporary file beside the target, fsync, then rename over it.

A crash at any point leaves either the previous version or the new one, never a torn file. A
failed write (full disk, read-only folder) raises WriteError naming the path and removes its
temporary file; the previous version stays. Files get the mode a plain write would (umask).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CloError

TMP_MARK = ".tmp"  # every temporary name contains it: `.{stem}.XXXX.tmp{suffix}`


class WriteError(CloError):
    """A file or folder that cannot be written (full disk, read-only, not a folder)."""


class LockedError(CloError):
    """A folder that another process is using."""


def _write_error(path: Path, e: OSError) -> WriteError:
    why = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        why += "; free some space and run the same command again"
    return WriteError(f"{path}: cannot write ({why})")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_folder(path: str | Path) -> Path:
    """`mkdir -p path`, with a WriteError naming the path when that is impossible."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e) from None
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` for a temporary path in the same folder, then rename it to `path`."""
    path = Path(path)
    ensure_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem}.", suffix=f"{TMP_MARK}{path.suffix}"
        )
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        if isinstance(e, RuntimeError) and "write" in str(e).lower():
            # mx.save_safetensors reports a failed write (e.g. a full disk) as a RuntimeError.
            raise WriteError(f"{path}: cannot write ({e})") from None
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_save_safetensors(path: str | Path, arrays: dict, metadata: dict | None = None) -> Path:
    import mlx.core as mx

    return atomic_write(path, lambda p: mx.save_safetensors(str(p), arrays, metadata=metadata))


def append_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Append whole JSON lines in one write and fsync (a crash never leaves half a line)."""
    if not rows:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    try:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _write_error(Path(path), e) from None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (and checkpoint folders) a killed writer leaves behind.

    Call only while holding the folder's lock (see `lock_folder`): another writer's temporary
    file would be removed too.
    """
    import shutil

    folder = Path(folder)
    removed = []
    for p in folder.glob(f".*{TMP_MARK}*") if folder.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


LOCK_FILE = ".clo-mlx.lock"


@contextmanager
def lock_folder(folder: str | Path, what: str = "clo-mlx") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if needed) for the duration of the block.

    A second process gets a LockedError naming the holder's pid. The lock is an flock on
    `folder/.clo-mlx.lock`, so it is released when its holder exits, even after kill -9; the file
    is removed when the block ends.
    """
    import fcntl

    folder = ensure_folder(folder)
    path = folder / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise _write_error(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{folder}: in use by another {what} (pid {holder}); wait for it to finish, or "
                "choose another adapter_path"
            ) from None
        try:  # the holder before us may have removed the file we opened: lock the current one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            raise _write_error(path, e) from None
        yield path
    finally:
        Path(path).unlink(missing_ok=True)  # while still locked
        os.close(fd)
