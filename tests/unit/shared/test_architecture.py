"""The package layering holds (import-linter contracts) and no module imports itself back (no cycles)."""

from __future__ import annotations

import configparser
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _layer_modules(section: str) -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    contract = config[f"importlinter:contract:{section}"]
    containers = contract.get("containers", "").split()
    names = set()
    for line in contract["layers"].split("\n"):
        for name in line.replace("|", ":").split(":"):
            if name.strip():
                names.add(f"{containers[0]}.{name.strip()}" if containers else name.strip())
    return names


def test_every_module_of_a_layered_package_is_in_a_layer() -> None:
    """A new top-level module, server module or docker module must be placed in the layering, not left
    outside every contract where it could import anything."""
    import deployer
    import deployer.server
    import deployer.server.docker

    for section, package in (("layers", deployer), ("server", deployer.server), ("docker", deployer.server.docker)):
        present = {f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)}
        present.discard("deployer.__main__")  # the `python -m deployer` shim: it only calls cli.main
        assert present - _layer_modules(section) == set(), f"not in the {section!r} contract's layers"


def test_no_import_cycles_between_modules() -> None:
    import grimp

    graph = grimp.build_graph("deployer", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            # a package importing its own submodules (re-exports) is not a cycle
            if imported.startswith(module + ".") or module.startswith(imported + ".") or imported == module:
                continue
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None and not all(m.startswith(module + ".") for m in back[1:-1]):
                cycles.append(" -> ".join((module, *back)))
    assert cycles == [], "\n".join(cycles)
