"""Files sreval writes, and the folders it writes them into: the one home of "nothing is lost
and nothing is harmed".

- `atomic_write` / `atomic_write_many`: a temporary file beside the target, fsync, rename;
  several files are all staged before any is renamed, so a full disk or a crash leaves
  either the old set or the new one (never a report.json without its results.csv). A target
  that exists and is not a regular file (symlink, FIFO, device, folder) is never replaced;
  `-` writes through to standard output.
- `sha256_file`: the one file hash (weights, cells, datasets).
- `claim_run_dir`: checked BEFORE the work starts (a file in the way, read-only, a name too
  long, no space), then locked, so two runs never write into one folder at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from sreval.errors import DataError

STDOUT = "-"
LOCK = ".sreval.lock"
# The longest file name a run writes (images are named within this, see evaluate.ImageSaver).
LONGEST_NAME = 200
MIN_FREE_BYTES = 16 << 20


def assets_dir() -> Path:
    """The shared assets folder: env SREVAL_ASSETS, else ../shared/assets (relative to CWD)."""
    return Path(os.environ.get("SREVAL_ASSETS") or "../shared/assets").expanduser().absolute()


def cache_dir() -> Path:
    """sreval's user cache (built zoo models, downloaded weights, exported checkpoints):
    SREVAL_CACHE, else $XDG_CACHE_HOME/sreval, else ~/.cache/sreval."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("SREVAL_CACHE") or Path(base) / "sreval")


def sha256_file(path: Path | str) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "device"),
                       (stat.S_ISBLK, "device"), (stat.S_ISDIR, "folder"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_target(path: Path) -> None:
    """A path sreval may replace: absent, or a regular file (not followed through a link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DataError(f"cannot write {path}: {_why(exc)}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"cannot write {path}: it is a {_kind(mode)}, and sreval only replaces regular files "
                        f"(use '-' for standard output)")


def _stage(path: Path, data: bytes) -> str:
    """Write data to a temporary file beside path (mode 0644, or the old file's); its name."""
    check_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sreval.", suffix=".tmp")
    except OSError as exc:
        raise DataError(f"cannot write {path}: {_why(exc)}") from None
    try:
        # mkstemp makes the file 0600; results are for others to read too (keep an existing mode)
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {_why(exc)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_many(files: Mapping[Path | str, str | bytes]) -> None:
    """Write every file, or none: all are staged first, then renamed into place."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            if str(path) == STDOUT:
                continue
            staged.append((_stage(Path(path), raw), Path(path)))
        for path, data in files.items():  # standard output last: nothing else can fail after it
            if str(path) == STDOUT:
                sys.stdout.buffer.write(data.encode() if isinstance(data, str) else data)
                sys.stdout.flush()
        for tmp, path in staged:
            check_target(path)  # nothing may have put a link there meanwhile
            os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"cannot write {exc.filename or 'output'}: {_why(exc)}") from None
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def atomic_write(path: Path | str, data: str | bytes) -> None:
    """One file, atomically (see atomic_write_many); '-' is standard output."""
    atomic_write_many({path: data})


def check_writable_dir(folder: Path) -> None:
    """Everything that would make writing results into `folder` fail, found now: a file in
    the way, no permission or a read-only file system, a name too long for it, no space."""
    folder = Path(folder)
    if str(folder) == STDOUT:
        raise DataError("an output folder cannot be '-' (standard output)")
    for parent in [folder, *folder.parents]:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise DataError(f"cannot write results into {folder}: {parent} is not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot write results into {folder}: {_why(exc)}") from None
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if name_max < LONGEST_NAME:
        raise DataError(f"cannot write results into {folder}: its file system allows names of {name_max} "
                        f"characters, sreval needs {LONGEST_NAME}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".sreval.probe.")
        try:
            os.write(fd, b"\0" * 65536)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise DataError(f"cannot write results into {folder}: {_why(exc)}") from None
    try:
        free = os.statvfs(folder)
        if free.f_bavail * free.f_frsize < MIN_FREE_BYTES:
            raise DataError(f"cannot write results into {folder}: less than {MIN_FREE_BYTES >> 20} MB free")
    except OSError:
        pass


@contextlib.contextmanager
def claim_run_dir(folder: Path) -> Iterator[Path]:
    """Check `folder` (check_writable_dir), then hold its lock while the run writes into it.
    Another live run holding it is a one-line refusal; the lock of a run that died is free (the
    kernel released it)."""
    folder = Path(folder)
    made = [p for p in [folder, *folder.parents] if not os.path.lexists(p)]
    try:
        check_writable_dir(folder)
        with _locked(folder):
            yield folder
    except BaseException:
        # a run that failed before writing anything leaves no trace: the folders it made go
        for p in made:
            try:
                p.rmdir()  # only when empty
            except OSError:
                break
        raise


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock: an exclusive `flock` on its lock file, which the kernel releases
    when the holder dies, so a crashed run's lock needs no takeover (a takeover by pid was a
    race: two restarting runs could each remove the other's fresh lock and both write). A nested
    job of this same run (a sweep's cell) finds its own pid there and goes on."""
    lock = folder / LOCK
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataError(f"cannot lock {folder}: {_why(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _pid_in(fd)
            os.close(fd)
            if pid == os.getpid():  # a nested job of this same run
                yield
                return
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataError(f"{folder} is in use by another sreval run (process {pid or 'unknown'}); "
                                f"choose another --out or wait for it") from None
            raise DataError(f"cannot lock {folder}: {_why(exc)}") from None
        if _same_file(fd, lock):
            break
        os.close(fd)  # the holder removed the file as we waited for it: lock the new one
    else:
        raise DataError(f"cannot lock {folder}: its lock file keeps changing")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding it: a waiter then sees another file
        os.close(fd)


def _pid_in(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


__all__ = ["atomic_write", "atomic_write_many", "check_target", "check_writable_dir", "claim_run_dir", "STDOUT"]
