"""Versioned Triton model repository: pure planning, atomic publish, pruning, rollback, verification.

Layout written::

    <repo>/.deployer.lock                  exclusive flock; a file, so Triton never takes it for a model
    <repo>/<model>/config.pbtxt            written last, atomically (temp file + fsync + os.replace)
    <repo>/<model>/<N>/...                 version files, renamed in complete
    <repo>/<model>/<N>/deployer.manifest.json
    <repo-parent>/.<repo-name>.deployer-staging/   scratch area on the same filesystem, outside the repo

Every version's manifest records the sha256 of each file, the config text and its sha256, the
content hash (files + config; it decides "unchanged"), the tool version and the artifact's own
manifest keys (spec hash, source sha256, build info).
"""

from __future__ import annotations

from deployer.repository.apply import apply_publish, rollback
from deployer.repository.fs import CONFIG_NAME, MANIFEST_NAME, staging_root
from deployer.repository.inspect import ServingState, list_versions, serving_state, verify_repository
from deployer.repository.lock import DEFAULT_LOCK_TIMEOUT_S, LOCK_NAME, RepositoryLocked
from deployer.repository.plan import plan_publish
from deployer.repository.records import (
    ArtifactFile,
    FileAction,
    FileActionKind,
    ModelArtifact,
    ModelPlan,
    PlanRow,
    PublishedModel,
    PublishPlan,
    PublishResult,
    RollbackResult,
    VersionInfo,
)

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_LOCK_TIMEOUT_S",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "ArtifactFile",
    "FileAction",
    "FileActionKind",
    "ModelArtifact",
    "ModelPlan",
    "PlanRow",
    "PublishPlan",
    "PublishResult",
    "PublishedModel",
    "RepositoryLocked",
    "RollbackResult",
    "ServingState",
    "VersionInfo",
    "apply_publish",
    "list_versions",
    "plan_publish",
    "rollback",
    "serving_state",
    "staging_root",
    "verify_repository",
]
