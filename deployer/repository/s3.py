"""S3 repositories: the client, the planner's read view of a bucket prefix, and verified uploads.

Client library: boto3 (the `s3` extra, imported lazily). It is AWS's own SDK, the best-kept S3
client for Python, and it exposes exactly the request options the crash-safe publish is built on:
`ChecksumSHA256` on PUT (the store recomputes the body's sha256 and refuses a mismatch with
BadDigest, then keeps the checksum, which `HeadObject(ChecksumMode=ENABLED)` returns) and the
conditional writes `IfNoneMatch="*"` / `IfMatch=etag` for the lock object. It reads credentials the
standard way (environment, AWS profile, instance roles) so deployer never handles a secret itself.
obstore is faster but hides these per-request headers; s3fs adds a filesystem layer we do not need.

Layout (what Triton reads from `s3://...` is the same tree as a local repository)::

    <prefix>/.deployer.lock                 lock object (owner + lease), a file: never a model
    <prefix>/<model>/config.pbtxt           the switch: one PUT, pins the served versions
    <prefix>/<model>/<N>/...                version objects, uploaded and verified before the switch
    <prefix>/<model>/<N>/deployer.manifest.json   uploaded last: a version with it is complete
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from deployer.errors import EnvironmentProblem, MissingDependency, RepositoryError
from deployer.repository import fs
from deployer.spec.model import S3Location

LOGGER = logging.getLogger(__name__)

MAX_SINGLE_PUT = 5 * 1024**3  # S3's limit for one PUT (multipart has no whole-object sha256 to verify)


def client_for(loc: S3Location) -> Any:
    """A boto3 S3 client for `loc`; credentials from the environment or `loc.profile`, never from deployer.

    Raises:
        MissingDependency: boto3 is not installed (the `s3` extra).
        EnvironmentProblem: no credentials found, or the profile does not exist.
    """
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ProfileNotFound
    except ImportError:
        raise MissingDependency("an s3:// repository needs boto3",
                                hint="pip install 'triton-deployer[s3]' (or pip install 'boto3>=1.34')") from None
    try:
        session = boto3.Session(profile_name=loc.profile, region_name=loc.region)
    except ProfileNotFound:
        raise EnvironmentProblem(f"AWS profile {loc.profile!r} (repository_s3.profile) not found",
                                 hint="create it with `aws configure --profile NAME`, or remove the key") from None
    if session.get_credentials() is None:
        raise EnvironmentProblem(
            f"no S3 credentials for {loc.url}",
            hint="export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or set repository_s3.profile); "
            "deployer never stores credentials",
        )
    config = Config(
        s3={"addressing_style": "path"} if loc.endpoint else {},  # S3-compatible stores rarely do virtual hosts
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
    )
    return session.client("s3", endpoint_url=loc.endpoint, config=config)


@contextlib.contextmanager
def s3_errors(loc: S3Location, what: str) -> Iterator[None]:
    """Turn botocore failures into EnvironmentProblem naming the repository (botocore messages hold no secret)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code", "?")
        if code in ("NoSuchBucket", "404") and what.startswith("list"):
            raise RepositoryError(f"bucket {loc.bucket!r} of {loc.url} does not exist",
                                  hint="create the bucket first (deployer does not create buckets)") from None
        raise EnvironmentProblem(f"S3 {what} failed for {loc.url}: {code}: {err.get('Message', '')}",
                                 hint="check repository_s3.endpoint, the bucket and the credentials") from None
    except BotoCoreError as exc:
        raise EnvironmentProblem(f"S3 {what} failed for {loc.url}: {exc}",
                                 hint="is the store reachable at repository_s3.endpoint?") from None


def b64_sha256(hex_digest: str) -> str:
    """The `x-amz-checksum-sha256` form (base64 of the raw digest) of a hex sha256."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


@dataclass(frozen=True)
class StoredObject:
    size: int
    etag: str


class S3Reader:
    """The planner's view of a repository prefix: one listing (a snapshot), objects fetched on demand."""

    def __init__(self, client: Any, loc: S3Location) -> None:
        self.client = client
        self.loc = loc
        self.objects: dict[str, StoredObject] = {}  # relpath inside the repository -> object
        base = loc.key() + "/" if loc.prefix else ""
        with s3_errors(loc, "listing"):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(base):]
                    if rel:
                        self.objects[rel] = StoredObject(int(obj["Size"]), str(obj["ETag"]))

    @property
    def root(self) -> PurePath:
        return PurePosixPath("/", self.loc.bucket, *([self.loc.prefix] if self.loc.prefix else []))

    def check_root(self) -> None:
        return None  # a prefix needs no creation; a missing bucket fails the listing with its own message

    def model_exists(self, name: str) -> bool:
        return any(rel.startswith(name + "/") for rel in self.objects)

    def versions(self, name: str) -> dict[int, PurePath]:
        found: dict[int, PurePath] = {}
        for rel in self.objects:
            parts = rel.split("/")
            if len(parts) >= 3 and parts[0] == name:
                number = fs.version_number(parts[1])
                if number is not None:
                    found[number] = self.root / name / parts[1]
        return dict(sorted(found.items()))

    def get(self, rel: str) -> bytes | None:
        """An object's bytes (None when the listing does not have it, or it vanished since)."""
        from botocore.exceptions import ClientError

        if rel not in self.objects:
            return None
        with s3_errors(self.loc, f"reading {rel}"):
            try:
                return bytes(self.client.get_object(Bucket=self.loc.bucket, Key=self.loc.key(rel))["Body"].read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

    def config_text(self, name: str) -> str | None:
        data = self.get(f"{name}/{fs.CONFIG_NAME}")
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RepositoryError(f"{self.loc.url}/{name}/{fs.CONFIG_NAME} is not UTF-8: {exc}") from exc

    def manifest_bytes(self, name: str, version: int) -> bytes | None:
        return self.get(f"{name}/{version}/{fs.MANIFEST_NAME}")

    def version_files(self, name: str, version: int) -> list[str]:
        base = f"{name}/{version}/"
        return sorted(rel[len(base):] for rel in self.objects
                      if rel.startswith(base) and rel != base + fs.MANIFEST_NAME)

    def problems(self, name: str, version: int, manifest: Mapping[str, Any] | None) -> list[str]:
        """Presence and size from the listing; content from the sha256 the store verified at upload."""
        if manifest is None:
            return [f"{fs.MANIFEST_NAME} missing or unreadable (incomplete version or not made by deployer)"]
        files = manifest.get("files")
        if not isinstance(files, dict) or not isinstance(manifest.get("config_text"), str):
            return [f"{fs.MANIFEST_NAME} lacks 'files' or 'config_text'"]
        stored = set(self.version_files(name, version))
        problems = [f"file {rel!r} is not in the manifest" for rel in sorted(stored - set(files))]
        for rel, meta in sorted(files.items()):
            obj = self.objects.get(f"{name}/{version}/{rel}")
            want_sha = meta.get("sha256") if isinstance(meta, dict) else None
            want_size = meta.get("size") if isinstance(meta, dict) else None
            if obj is None:
                problems.append(f"file {rel!r} listed in the manifest is missing")
            elif want_size is not None and obj.size != want_size:
                problems.append(f"file {rel!r} has size {obj.size}, manifest says {want_size}")
            elif not isinstance(want_sha, str) or stored_sha256(self.client, self.loc, f"{name}/{version}/{rel}") \
                    != b64_sha256(want_sha):
                problems.append(f"file {rel!r} does not match its sha256 in the manifest")
        return problems


def stored_sha256(client: Any, loc: S3Location, rel: str) -> str | None:
    """The sha256 checksum the store recorded (and verified) for an object, base64; None if it has none."""
    from botocore.exceptions import ClientError

    with s3_errors(loc, f"checking {rel}"):
        try:
            head = client.head_object(Bucket=loc.bucket, Key=loc.key(rel), ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
    value = head.get("ChecksumSHA256")
    return str(value).split("-")[0] if value else None


def put_verified(client: Any, loc: S3Location, rel: str, sha256: str, size: int, *,
                 data: bytes | None = None, source: Path | None = None) -> None:
    """PUT one object with its sha256 (the store refuses other bytes), then HEAD it: size and checksum
    must be what we sent. Raises RepositoryError when the source changed or the store disagrees."""
    from botocore.exceptions import ClientError

    if size > MAX_SINGLE_PUT:
        raise RepositoryError(f"{rel}: {size} bytes is above S3's single-PUT limit of 5 GiB",
                              hint="deployer uploads each file with one verified PUT; split the model's weights")
    key = loc.key(rel)
    with s3_errors(loc, f"uploading {rel}"):
        try:
            if data is not None:
                client.put_object(Bucket=loc.bucket, Key=key, Body=data, ChecksumSHA256=b64_sha256(sha256))
            else:
                assert source is not None
                with source.open("rb") as fh:
                    client.put_object(Bucket=loc.bucket, Key=key, Body=fh, ContentLength=size,
                                      ChecksumSHA256=b64_sha256(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("BadDigest", "XAmzContentSHA256Mismatch",
                                                              "InvalidDigest"):
                raise RepositoryError(
                    f"{rel}: the bytes uploaded do not match the sha256 planned (source changed after planning?)",
                    hint="re-run the publish; do not modify artifacts while they are being published",
                ) from None
            raise
        head = client.head_object(Bucket=loc.bucket, Key=key, ChecksumMode="ENABLED")
    got = str(head.get("ChecksumSHA256") or "")
    if int(head["ContentLength"]) != size or got != b64_sha256(sha256):
        raise RepositoryError(f"{loc.url}/{rel}: the store holds {head['ContentLength']} bytes with sha256 "
                              f"{got or 'none'}, expected {size} bytes with {b64_sha256(sha256)}",
                              hint="the store does not keep sha256 checksums? deployer needs that to verify")


def delete_keys(client: Any, loc: S3Location, rels: list[str]) -> None:
    """Delete objects, 1000 per request (S3's batch limit)."""
    for i in range(0, len(rels), 1000):
        batch = [{"Key": loc.key(rel)} for rel in rels[i:i + 1000]]
        with s3_errors(loc, "deleting"):
            client.delete_objects(Bucket=loc.bucket, Delete={"Objects": batch, "Quiet": True})
