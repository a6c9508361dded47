"""Manifests as YAML that YAML 1.1 and YAML 1.2 parsers read back as the same data.

kubectl reads YAML through sigs.k8s.io/yaml (go-yaml, YAML 1.1 rules): a plain `on`, `yes`, `1e3` or `017`
there is a bool or a number, so a namespace called `on` would be refused by the API server. ruamel (YAML 1.2)
quotes only what 1.2 would misread; every string that either version would read as something else is
written double-quoted here. Values are never pasted into templates: the emitter escapes them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import SafeRepresenter
from ruamel.yaml.resolver import VersionedResolver

_STR = "tag:yaml.org,2002:str"
_RESOLVERS = (VersionedResolver(version=(1, 1)), VersionedResolver(version=(1, 2)))


def ambiguous(value: str) -> bool:
    """Would a YAML 1.1 or 1.2 parser read `value`, written plain, as anything but this string?"""
    return any(str(r.resolve(ScalarNode, value, (True, False))) != _STR for r in _RESOLVERS)


class _Representer(SafeRepresenter):
    def represent_str(self, data: str) -> ScalarNode:
        return self.represent_scalar(_STR, data, style='"' if ambiguous(data) else None)


_Representer.add_representer(str, _Representer.represent_str)


def _yaml() -> YAML:
    y = YAML(typ="safe", pure=True)
    y.Representer = _Representer
    y.default_flow_style = False
    y.width = 4096  # long `--load-model=...` args stay on one line (folding would be valid, but unreadable)
    y.indent(mapping=2, sequence=4, offset=2)
    y.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # ruamel annotates it None
    return y


def dump(document: Mapping[str, Any], *, header: str = "") -> str:
    """One document as YAML text, `header` (trusted text, e.g. a `# ...` line) first."""
    buf = io.StringIO()
    _yaml().dump(_plain(document), buf)
    return header + buf.getvalue()


def dump_all(documents: Iterable[Mapping[str, Any]], *, header: str = "") -> str:
    """A `---`-separated stream (what `kubectl apply -f -` reads)."""
    return header + "---\n".join(dump(d) for d in documents)


def _plain(value: Any) -> Any:
    """Mappings and sequences as dict and list, the types the safe representer knows (frozen data uses others)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
