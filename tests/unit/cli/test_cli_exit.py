"""The console script's exit (`deployer.cli:run` -> `exit_process`): it skips only the interpreter's
teardown, so the exit code, the output, the atexit handlers and non-daemon threads are all kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart" / "deployer.yaml"


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_run_keeps_the_exit_code_the_output_and_runs_atexit_handlers_and_threads(tmp_path: Path) -> None:
    marker = tmp_path / "atexit.txt"
    done = tmp_path / "thread.txt"
    proc = _run(f"""
        import atexit, sys, threading, time
        from pathlib import Path
        atexit.register(lambda: Path({str(marker)!r}).write_text("ran"))
        def late():
            time.sleep(0.2)  # still running when main() returns: exit_process must wait for it
            Path({str(done)!r}).write_text("done")
        threading.Thread(target=late).start()
        sys.stdout.write("buffered, not flushed\\n")
        sys.argv = ["deployer", "validate", {str(QUICKSTART)!r}]
        from deployer.cli import run
        run()
        print("not reached")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("buffered, not flushed\n")
    assert "valid (2 models)" in proc.stdout and "not reached" not in proc.stdout
    assert marker.read_text() == "ran"
    assert done.read_text() == "done"


def test_run_exits_with_the_cli_exit_code_for_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: x}]\nrepository: r\nbogus_key: 1\n")
    proc = _run("import sys; sys.argv = ['deployer', 'validate', sys.argv[1]]\nfrom deployer.cli import run\nrun()",
                str(bad))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_python_dash_m_deployer_goes_through_run() -> None:
    proc = subprocess.run([sys.executable, "-m", "deployer", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    from deployer import __main__ as entry

    assert entry.run.__module__ == "deployer.cli"
