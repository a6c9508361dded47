"""The S3 repository lock: one object, taken with a conditional write, held by a lease that is renewed.

- take: `PUT <prefix>/.deployer.lock` with `If-None-Match: *`; exactly one of several racing
  publishers gets 200, the others 412 (verified on SeaweedFS 4.48; AWS S3 has it since 2024).
- hold: a thread rewrites the object every lease/3 with `If-Match: <our etag>` (each rewrite has a
  new counter, so a new etag); a failed renewal marks the lock lost, and `check()` (called before the
  config switch and before every delete) raises, so a publisher that lost its lock never switches.
- expire: a waiter that sees the *same* etag for longer than the lease, on its own monotonic clock,
  takes the object over with `If-Match: <that etag>` (one of several waiters wins). No wall clocks are
  compared, so clock skew between machines cannot expire a live lock.
- release: `DELETE` with `If-Match: <our etag>`. A SIGKILLed holder's lock expires after the lease.

The object holds owner (user@host, pid), a random token and the times, for the waiting message; it
holds no credential.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from deployer.errors import EnvironmentProblem
from deployer.repository.lock import LOCK_NAME, RepositoryLocked
from deployer.repository.s3 import s3_errors
from deployer.spec.model import S3Location

LOGGER = logging.getLogger(__name__)


class LockLost(EnvironmentProblem):
    """The lease could not be renewed (store unreachable, or another run took the lock over): stop (exit 3)."""


class S3Lock:
    """A held lock; `check()` raises LockLost once a renewal failed."""

    def __init__(self, client: Any, loc: S3Location, lease_s: float) -> None:
        self.client, self.loc, self.lease_s = client, loc, lease_s
        self.key = loc.key(LOCK_NAME)
        self.token = secrets.token_hex(8)
        self.etag: str | None = None
        self.renewals = 0
        self.lost: str | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()

    def body(self) -> bytes:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "?"
        return json.dumps({
            "owner": f"{user}@{socket.gethostname()} pid {os.getpid()}",
            "token": self.token,
            "renewal": self.renewals,
            "lease_s": self.lease_s,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }).encode()

    def check(self) -> None:
        """Raise LockLost if the lease is no longer ours (call before every step that changes what is served)."""
        with self._mutex:
            if self.lost is not None:
                raise LockLost(f"lost the repository lock of {self.loc.url}: {self.lost}",
                               hint="nothing was switched after that; re-run the command")

    def renew(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        with self._mutex:
            if self.lost is not None:
                return
            self.renewals += 1
            try:
                out = self.client.put_object(Bucket=self.loc.bucket, Key=self.key, Body=self.body(), IfMatch=self.etag)
                self.etag = str(out["ETag"])
            except (ClientError, BotoCoreError) as exc:
                self.lost = f"renewal failed ({exc})"

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            self.renew()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._heartbeat, name="deployer-s3-lock", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        self._stop.set()
        from botocore.exceptions import BotoCoreError, ClientError

        with self._mutex, contextlib.suppress(ClientError, BotoCoreError):
            if self.lost is None and self.etag is not None:
                self.client.delete_object(Bucket=self.loc.bucket, Key=self.key, IfMatch=self.etag)


def _read(client: Any, loc: S3Location, key: str) -> tuple[str, str] | None:
    """(etag, owner) of the lock object, or None when there is none."""
    from botocore.exceptions import ClientError

    try:
        out = client.get_object(Bucket=loc.bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    try:
        owner = str(json.loads(out["Body"].read()).get("owner", "?"))
    except (ValueError, AttributeError):
        owner = "?"
    return str(out["ETag"]), owner


@contextlib.contextmanager
def s3_repository_lock(client: Any, loc: S3Location, timeout_s: float) -> Iterator[S3Lock]:
    """Hold the repository's lock object for the block (see the module doc).

    Raises:
        RepositoryLocked: another live run held it for longer than `timeout_s` (exit 3).
    """
    from botocore.exceptions import ClientError

    lock = S3Lock(client, loc, loc.lock_lease_s)
    deadline = time.monotonic() + timeout_s
    seen: tuple[str, float] | None = None  # (etag, first seen at, monotonic)
    told = False
    while True:
        with s3_errors(loc, "taking the repository lock"):
            try:
                if seen is not None and time.monotonic() - seen[1] > lock.lease_s:
                    out = client.put_object(Bucket=loc.bucket, Key=lock.key, Body=lock.body(), IfMatch=seen[0])
                    LOGGER.warning("took over the lock of %s: unchanged for %.0f s (its holder died?)", loc.url,
                                   lock.lease_s)
                else:
                    out = client.put_object(Bucket=loc.bucket, Key=lock.key, Body=lock.body(), IfNoneMatch="*")
                lock.etag = str(out["ETag"])
                break
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    raise
            current = _read(client, loc, lock.key)
        if current is None:
            seen = None
            continue
        if seen is None or seen[0] != current[0]:
            seen = (current[0], time.monotonic())
        if time.monotonic() >= deadline:
            raise RepositoryLocked(
                f"repository {loc.url} is locked by another deployer run ({current[1]}); gave up after "
                f"{timeout_s:.0f} s",
                hint=f"wait for it to finish; a killed run's lock expires {lock.lease_s:.0f} s after its last renewal "
                "(repository_s3.lock_lease); --lock-timeout sets how long to wait",
            )
        if not told:
            LOGGER.warning("repository %s is locked by %s; waiting up to %.0f s", loc.url, current[1], timeout_s)
            told = True
        time.sleep(min(0.2, lock.lease_s / 10))
    thread = lock.start()
    try:
        yield lock
    finally:
        lock.release()
        thread.join(timeout=5)
