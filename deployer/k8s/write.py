"""The one side effect of `deployer k8s`: the planned manifests as files in a directory."""

from __future__ import annotations

from pathlib import Path

from deployer._files import atomic_write
from deployer.errors import UserError
from deployer.k8s.manifests import K8sPlan
from deployer.k8s.yamlout import dump, dump_all

__all__ = ["HEADER", "KNOWN_FILES", "render_stream", "render_texts", "write_manifests"]

# Marks files this module wrote: only those are ever replaced or removed (a user's own files in DIR stay).
HEADER = "# Rendered by `deployer k8s` (triton-deployer); edit the spec and render again, not this file.\n"
KNOWN_FILES = ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "kserve/inferenceservice.yaml")


def _header(plan: K8sPlan) -> str:
    return HEADER + f"# spec sha256 {plan.spec_sha256}\n"


def render_texts(plan: K8sPlan) -> dict[str, str]:
    """File name (relative to the output directory) -> YAML text."""
    return {m.filename: dump(m.body, header=_header(plan)) for m in plan.manifests}


def render_stream(plan: K8sPlan) -> str:
    """Every manifest as one multi-document stream (`kubectl apply -f -`), KServe's alternative left out."""
    return dump_all((m.body for m in plan.manifests if "/" not in m.filename), header=_header(plan))


def write_manifests(plan: K8sPlan, out_dir: Path) -> list[Path]:
    """Write every manifest into `out_dir` (each file whole: temp file + rename) and remove manifests of an
    earlier render that this plan no longer has (e.g. hpa.yaml after `autoscaling: null`)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is not a directory", hint="give -o a directory for the manifests")
    texts = render_texts(plan)  # everything rendered before anything is written
    for name in texts:
        target = out_dir / name
        for part in (target, *list(target.relative_to(out_dir).parents)[:-1]):
            path = part if part is target else out_dir / part
            if path.is_symlink():  # a planted link (e.g. kserve/ -> elsewhere) would redirect the write
                raise UserError(f"{path} is a symbolic link; refusing to write through it",
                                hint="remove the link or choose another output directory")
        if target.exists() and not _ours(target):
            raise UserError(f"{target} exists and was not written by `deployer k8s`",
                            hint="move it away or choose another output directory")
    written = []
    for name, text in texts.items():
        atomic_write(out_dir / name, text.encode("utf-8"))
        written.append(out_dir / name)
    for name in KNOWN_FILES:
        stale = out_dir / name
        if name not in texts and stale.is_file() and _ours(stale):
            stale.unlink()
    return written


def _ours(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(HEADER)) == HEADER.encode("utf-8")
    except OSError:
        return False
