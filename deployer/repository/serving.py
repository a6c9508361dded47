"""Which versions Triton serves: the `version_policy` deployer pins in the live config.pbtxt (pure).

The live `<model>/config.pbtxt` is the one switch of a model: every version's own config (the one its
spec rendered) is kept in that version's manifest, and the live file is that config with
`version_policy { specific { versions: [...] } }` naming exactly the served versions. So a new version
dir can be renamed into place without Triton seeing it, and one atomic replace of config.pbtxt changes
the served version and its config together. Rollback is the same switch pointed at an older version:
nothing is deleted.

The head is the version the last publish or rollback chose; it is recorded in a marker comment of the
live file (written in the same atomic replace, so it can never disagree with the pin).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf import text_format

from deployer.errors import RepositoryError

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

_MARKER = "# deployer: head version "
_MARKER_RE = re.compile(r"^# deployer: head version (\d{1,19})\b", re.M)


@dataclass(frozen=True)
class Policy:
    """A version's own `version_policy`: latest N (Triton's default: latest 1), all, or specific."""

    kind: str  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


def _parse(config_text: str) -> ModelConfig:
    from deployer.config.pb import parse_pbtxt

    try:
        return parse_pbtxt(config_text)
    except text_format.ParseError as exc:
        raise RepositoryError(f"config.pbtxt text does not parse: {exc}") from exc


def policy_of(config_text: str) -> Policy:
    """The version policy a version's own config asks for."""
    vp = _parse(config_text).version_policy
    which = vp.WhichOneof("policy_choice")
    if which == "all":
        return Policy("all")
    if which == "specific":
        return Policy("specific", versions=tuple(sorted(vp.specific.versions)))
    if which == "latest":
        return Policy("latest", num_versions=max(1, vp.latest.num_versions))
    return Policy("latest")


def served_versions(policy: Policy, existing: Iterable[int], head: int) -> tuple[int, ...]:
    """The versions Triton should serve when `head` is the chosen version (newer ones are kept, unserved).

    `latest N` serves the N highest versions up to the head, exactly what it served when the head was
    the newest; `all` serves every version up to the head; `specific` is the spec's own choice.
    """
    if policy.kind == "specific":
        return policy.versions
    upto = sorted((v for v in set(existing) | {head} if v <= head), reverse=True)
    if policy.kind == "all":
        return tuple(sorted(upto))
    return tuple(sorted(upto[: policy.num_versions]))


def live_config(config_text: str, served: tuple[int, ...], head: int) -> str:
    """The live config.pbtxt: the version's own config with the served versions pinned, plus the marker.

    The rendered text is kept as it is when it has no version_policy (the usual case: templates keep
    their layout); otherwise the policy is replaced through protobuf and the text re-serialized. Either
    way the result is parsed back and must equal the intended message.
    """
    msg = _parse(config_text)
    marker = f"{_MARKER}{head}; serves {list(served)} (publish and rollback switch this file atomically)\n"
    if msg.version_policy.WhichOneof("policy_choice") == "specific":
        return marker + config_text  # the spec chose the versions itself: deployer does not pin
    intended = _parse(config_text)
    intended.ClearField("version_policy")
    intended.version_policy.specific.versions.extend(served)
    if msg.HasField("version_policy"):
        comments = "".join(line + "\n" for line in config_text.splitlines() if line.startswith("#"))
        text = comments + text_format.MessageToString(intended, use_short_repeated_primitives=True)
    else:
        text = config_text.rstrip("\n") + f"\nversion_policy {{ specific {{ versions: {list(served)} }} }}\n"
    text = marker + text
    if _parse(text) != intended:  # a bug, never a user error: refuse to write a config we cannot prove
        raise RepositoryError("internal error: the pinned config.pbtxt does not parse back to the intended config")
    return text


def rollback_version(model: str, versions: list[int], live_text: str | None, to: int | None) -> int:
    """The version a rollback serves: `to`, or the highest one below the served head (local and S3 alike).

    Raises:
        RepositoryError: no version below the head, or `to` does not exist (the message lists the versions).
    """
    head = head_of(live_text)
    if head not in versions:
        head = versions[-1] if versions else None
    if to is None:
        below = [v for v in versions if head is not None and v < head]
        if not below:
            raise RepositoryError(
                f"model {model!r} has no version below the served version {head} to roll back to",
                details=f"versions: {versions}",
            )
        to = below[-1]
    if to not in versions:
        raise RepositoryError(f"model {model!r} has no version {to}", details=f"versions: {versions}",
                              hint="pick one of the listed versions")
    return to


def rollback_config(model: str, config_text: str, versions: Iterable[int], to: int) -> tuple[tuple[int, ...], str]:
    """What a rollback to `to` serves and the live config that serves it, from `to`'s own config text
    (local and S3 repositories alike).

    Raises:
        RepositoryError: `to`'s config pins versions itself (version_policy.specific).
    """
    policy = policy_of(config_text)
    if policy.kind == "specific":
        raise RepositoryError(
            f"model {model!r} version {to} names its served versions itself "
            f"(version_policy.specific {list(policy.versions)})",
            hint="change version_policy in the spec and publish, instead of rolling back",
        )
    served = served_versions(policy, versions, to)
    return served, live_config(config_text, served, to)


def head_of(live_text: str | None) -> int | None:
    """The head version recorded in a live config.pbtxt (None: not written by this deployer)."""
    if live_text is None:
        return None
    found = _MARKER_RE.search(live_text)
    return int(found.group(1)) if found else None


def pinned_versions(live_text: str | None) -> tuple[int, ...] | None:
    """The versions a live config.pbtxt serves under a specific policy (None: another policy)."""
    if live_text is None:
        return None
    try:
        vp = _parse(live_text).version_policy
    except RepositoryError:
        return None
    return tuple(sorted(vp.specific.versions)) if vp.WhichOneof("policy_choice") == "specific" else None
