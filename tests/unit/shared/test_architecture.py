"""The package layering holds (import-linter contracts) and no module imports itself back (no cycles)."""

from __future__ import annotations

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
