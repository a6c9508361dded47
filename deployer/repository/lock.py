"""The repository lock: one deployer run at a time changes a repository, and a waiter says whom it waits for."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from deployer.errors import EnvironmentProblem, RepositoryError
from deployer.repository.fs import refuse_symlink

LOGGER = logging.getLogger(__name__)

LOCK_NAME = ".deployer.lock"
DEFAULT_LOCK_TIMEOUT_S = 120.0


class RepositoryLocked(EnvironmentProblem):
    """Another deployer run holds the repository lock for longer than we may wait (exit 3)."""


def _open_lock(path: Path, *, create: bool) -> int:
    """Open the lock file without following a symlink (a dangling one would create a file at its target)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_symlink(path, "lock file")
        if isinstance(exc, FileNotFoundError) and not create:
            raise
        raise RepositoryError(
            f"cannot open the repository lock {path}: {exc.strerror}",
            hint="the repository must be writable by this user",
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RepositoryError(f"lock path {path} is not a regular file", hint="move it away")
    return fd


@contextlib.contextmanager
def repository_lock(repository: Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive lock on `<repo>/.deployer.lock` (a file: Triton only treats dirs as models).

    A plain `flock`: the kernel drops it when the holder dies (even by SIGKILL), and the lock file is
    never unlinked, so there is no unlink/re-create race between waiters. A waiter names the holder
    (pid, host, command, since) from the kernel's lock table.

    Raises:
        RepositoryLocked: still held by another run after `timeout_s` (exit 3: the environment).
    """
    path = repository / LOCK_NAME
    fd = _open_lock(path, create=True)
    try:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = _holder(fd)
                if time.monotonic() >= deadline:
                    raise RepositoryLocked(
                        f"repository {repository} is locked by another deployer run ({holder}); "
                        f"gave up after {timeout_s:.0f} s",
                        hint=f"wait for that run to finish, or stop it; the lock ({path}) is released when "
                        "its process exits; --lock-timeout sets how long to wait",
                    ) from exc
                if not told:
                    LOGGER.warning("repository %s is locked by %s; waiting up to %.0f s", repository, holder,
                                   timeout_s)
                    told = True
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _holder(fd: int) -> str:
    """Who holds the flock on `fd`'s file, from the kernel's /proc/locks (nothing is written to the file,
    so a publish that changes nothing leaves the repository byte-identical)."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            rows = [line.split() for line in fh]
    except OSError:
        return "another process (its pid is not visible here)"
    pids = sorted({int(r[4]) for r in rows if len(r) >= 6 and r[1] == "FLOCK" and r[5] == ident and r[4].isdigit()})
    found = "; ".join(_describe(pid) for pid in pids)
    return found or "another process (not on this host, or in another pid namespace)"


def _describe(pid: int) -> str:
    """`pid 123 on host (deployer publish spec.yaml) since 07:35:01 UTC`, as much as /proc tells."""
    text = f"pid {pid} on {socket.gethostname()!r}"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        text += f" ({cmd[:120]})"
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        since = datetime.fromtimestamp(btime + ticks / os.sysconf("SC_CLK_TCK"), timezone.utc)
        text += f" since {since.isoformat(timespec='seconds')}"
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return text


def lock_is_free(repository: Path) -> bool:
    """True if no process holds the repository lock (never creates the lock file)."""
    path = repository / LOCK_NAME
    try:
        fd = _open_lock(path, create=False)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


