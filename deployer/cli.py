"""`deployer` command line: a thin layer over the library. It alone prints and picks exit codes.

Exit codes: 0 ok, 1 checks failed, 2 bad input, 3 environment (missing binary/daemon/extra, busy port).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deployer import __version__
from deployer.errors import DeployerError, ExitCode

app = typer.Typer(
    name="deployer",
    help="From an ONNX file to a proven NVIDIA Triton deployment, driven by one YAML spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
image_app = typer.Typer(help="Container images.", no_args_is_help=True)
app.add_typer(image_app, name="image")

# Reports are wide tables; when piped (CI logs) rich would fall back to 80 columns.
_WIDTH = None if sys.stdout.isatty() else 160
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

F = TypeVar("F", bound=Callable[..., Any])

SpecArg = Annotated[Path, typer.Argument(help="The deployment spec (YAML).", show_default=False)]
FallbackOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional at runtime on 3.10
    typer.Option("--fallback", help="Serve tensorrt models through onnxruntime when TensorRT is unavailable."),
]


def _handle_errors(fn: F) -> F:
    """Print a DeployerError once, without a traceback, and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DeployerError as exc:
            # Messages quote user values verbatim (`[...]` included): never interpret them as markup, and
            # keep one issue per line (grep, editors and CI annotations read `file:line:col:` lines).
            err.print(f"[bold red]error:[/] {escape(exc.render())}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        # the command, its version and the distribution to `pip install` (PyPI's `deployer` is another project)
        out.print(f"deployer {__version__} (triton-deployer)")
        raise typer.Exit(0)


@app.callback()
def _main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")] = 0,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    from rich.logging import RichHandler

    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)],
                        force=True)


def _pipeline(spec: Path, fallback: str | None = None, *, runtime: str | None = None,
              builder: str | None = None) -> Any:
    """The library's Pipeline for the spec (it checks the options): every command below is one call on it."""
    from deployer.pipeline import Pipeline

    return Pipeline.load(spec, fallback=fallback, runtime=runtime, builder=builder)


# --------------------------------------------------------------------------- offline stages


@app.command()
@_handle_errors
def validate(spec: SpecArg, fallback: FallbackOpt = None) -> None:
    """Check a spec completely: schema, Triton's load-time rules, consistency with the model files."""
    dep = _pipeline(spec, fallback).deployment
    for m in dep.models:
        note = f" (served by {m.backend})" if m.backend != m.requested_backend else ""
        out.print(f"ok  {m.name}: {m.requested_backend}{note}, max_batch_size {m.max_batch_size}, "
                  f"{len(m.inputs)} input(s), {len(m.outputs)} output(s)")
    out.print(f"{spec}: valid ({len(dep.models)} model{'s' if len(dep.models) != 1 else ''})")


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editor validation and autocompletion)."""
    from deployer.spec.schema import Spec

    out.print_json(json.dumps(Spec.model_json_schema()))


@app.command()
@_handle_errors
def init(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Spec to write.")] = None,  # noqa: UP045
    name: Annotated[Optional[str], typer.Option(help="Model name (default: from the file name).")] = None,  # noqa: UP045
    backend: Annotated[str, typer.Option(help="onnxruntime or tensorrt.")] = "onnxruntime",
    max_batch_size: Annotated[int, typer.Option(help="Used when the model can batch.")] = 8,
    force: Annotated[bool, typer.Option(help="Overwrite an existing spec.")] = False,
    http_port: Annotated[int, typer.Option(help="Server HTTP port; gRPC and metrics use the next two.")] = 8000,
) -> None:
    """Scaffold a commented, deployable spec from an ONNX file."""
    from deployer.spec.init import init_spec

    result = init_spec(model, output=output, name=name, backend=backend, max_batch_size=max_batch_size,
                       force=force, http_port=http_port)
    out.print(f"wrote {result.spec_path}")
    out.print(f"  model {result.model_name!r}: max_batch_size {result.max_batch_size} — {result.reason}")
    out.print(f"next: deployer validate {result.spec_path} && deployer deploy {result.spec_path}")


@app.command()
@_handle_errors
def render(
    spec: SpecArg,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write <DIR>/<model>/config.pbtxt.")] = None,  # noqa: UP045
    fallback: FallbackOpt = None,
) -> None:
    """Render every model's config.pbtxt (proven equal to the spec through Triton's protobuf schema)."""
    p = _pipeline(spec, fallback)
    if output is not None:
        for path in p.write_rendered(output):
            out.print(f"wrote {path}", markup=False)
        return
    for name, text in p.render().items():
        out.print(f"# ---- {name}/config.pbtxt", markup=False)
        out.print(text, end="", markup=False)


@app.command()
@_handle_errors
def plan(spec: SpecArg, force: Annotated[bool, typer.Option(help="Plan overwriting explicit versions.")] = False,
         fallback: FallbackOpt = None) -> None:
    """Show what `publish` would create, update or delete. Writes nothing."""
    p = _pipeline(spec, fallback)
    result = p.plan(force=force)
    the_plan = result.plan
    where = p.deployment.remote.url if p.deployment.remote else p.deployment.repository
    table = Table("model", "version", "action", "path", "detail", title=f"plan for {where}")
    for row in the_plan.rows():
        table.add_row(row.model, str(row.version), row.action, row.path, row.detail)
    out.print(table)
    for mp in the_plan.models:
        if mp.newer_kept:
            out.print(f"{mp.artifact.name}: serves {list(mp.served)}; newer versions {list(mp.newer_kept)} are kept, "
                      "not served (pinned)")
    for name in result.unbuilt:
        out.print(f"{name}: no TensorRT engine yet; `deployer build` (or publish) builds it, then it is planned")
    out.print("no changes" if not (the_plan.changed or result.unbuilt) else "run `deployer publish` to apply")


@app.command()
@_handle_errors
def build(
    spec: SpecArg,
    fallback: FallbackOpt = None,
    builder: Annotated[Optional[str], typer.Option(help="local (in-process TensorRT) or container (NGC image).")] = None,  # noqa: UP045, E501
) -> None:
    """Build TensorRT engines for the spec's tensorrt models (engine cache: unchanged models are not rebuilt)."""
    result = _pipeline(spec, fallback, builder=builder).build()
    if not result.engines:
        out.print("no model needs a TensorRT engine" + (" (served through onnxruntime)" if fallback else ""))
        return
    for name, path in result.engines.items():
        info = result.infos[name]
        hit = " (engine cache)" if info.get("cache_hit") else ""
        out.print(f"{name}: {path}{hit} — TensorRT {info.get('trt_version')}, {info.get('precision')}")
        acc = info.get("accuracy")
        if isinstance(acc, dict):
            from deployer.engines.accuracy import AccuracyReport

            known = {k: v for k, v in acc.items() if k in AccuracyReport.__dataclass_fields__}
            out.print(f"{name}: accuracy {AccuracyReport(**known).summary()}", markup=False)


LockTimeoutOpt = Annotated[
    float, typer.Option("--lock-timeout", help="Seconds to wait for another run holding the repository lock.")
]


@app.command()
@_handle_errors
def publish(spec: SpecArg, force: Annotated[bool, typer.Option(help="Overwrite explicit versions.")] = False,
            fallback: FallbackOpt = None, lock_timeout: LockTimeoutOpt = 120.0) -> None:
    """Publish every model to the repository atomically (new versions only for changed content)."""
    result = _pipeline(spec, fallback).publish(force=force, lock_timeout_s=lock_timeout)
    for m, mp in zip(result.models, result.plan.models, strict=True):
        pruned = f", pruned {list(m.pruned)}" if m.pruned else ""
        kept = f"; newer versions {list(mp.newer_kept)} kept, not served" if mp.newer_kept else ""
        out.print(f"{m.name}: version {m.version} {m.status}{pruned} (serves {list(mp.served)}){kept}")


@app.command()
@_handle_errors
def rollout(spec: SpecArg, fallback: FallbackOpt = None) -> None:
    """Publish, then replica by replica (a running fleet): load the new versions, smoke that replica, go on.
    On a failure the updated replicas return to the previous versions; exit 1 names the replica and check."""
    result = _pipeline(spec, fallback).rollout()
    moves = ", ".join(f"{m} v{old} -> v{new}" for m, (old, new) in result.changed.items()) or "nothing new"
    out.print(f"rolled out {moves} on {', '.join(result.replicas)}")


@app.command()
@_handle_errors
def rollback(
    spec: SpecArg,
    model: Annotated[str, typer.Argument(help="Model name.")],
    to: Annotated[Optional[int], typer.Option(help="Version to serve (default: the one below the served one).")] = None,  # noqa: UP045
    prune: Annotated[bool, typer.Option(help="Delete the versions newer than the one rolled back to.")] = False,
    lock_timeout: LockTimeoutOpt = 120.0,
) -> None:
    """Serve an earlier version again (pinned in config.pbtxt, with its own config); deletes nothing unless --prune."""
    # the repository as every command resolves it; no TensorRT needed to roll back
    outcome = _pipeline(spec, "onnxruntime").rollback(model, to, prune=prune, lock_timeout_s=lock_timeout)
    result = outcome.result
    out.print(f"{model}: version {result.version} is served (serves {list(result.served)})")
    if result.kept:
        out.print(f"{model}: newer versions {list(result.kept)} are kept, not served; `deployer publish` of new "
                  "content serves a new version, `rollback --to N` serves a kept one, `--prune` deletes them")
    if result.removed:
        out.print(f"{model}: removed newer versions {list(result.removed)}")
    if outcome.reloaded:
        out.print(f"{model}: reloaded in the running server (explicit model control)")


# --------------------------------------------------------------------------- serving

RuntimeOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--runtime", help="local | docker | compose (default: the spec's server.runtime)."),
]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Write the smoke report as JSON.")]  # noqa: UP045
JunitOpt = Annotated[Optional[Path], typer.Option("--junit", help="Write the smoke report as JUnit XML.")]  # noqa: UP045


@app.command()
@_handle_errors
def up(spec: SpecArg, runtime: RuntimeOpt = None, fallback: FallbackOpt = None) -> None:
    """Start Triton on the published repository and load every model (explicit model control)."""
    _print_state(_pipeline(spec, fallback, runtime=runtime).up())


def _print_state(state: Any) -> None:
    where = f"pid {state.pid}" if state.pid else f"container {(state.container_id or '')[:12]}"
    out.print(f"Triton is up ({state.runtime}, {where}): http {state.http_url}  grpc {state.grpc_url}  "
              f"metrics {state.metrics_url}")
    out.print(f"models: {', '.join(state.models)}")
    if state.log_path:
        out.print(f"log: {state.log_path}")


@app.command()
@_handle_errors
def down(spec: SpecArg) -> None:
    """Stop the server started for this spec (whatever runtime started it)."""
    state = _pipeline(spec, "onnxruntime").down()
    out.print("no server was running for this spec" if state is None else f"stopped ({state.runtime})")


@app.command()
@_handle_errors
def status(spec: SpecArg) -> None:
    """Is the server up and ready; the state of each model. Exit 1 when not running or not ready."""
    p = _pipeline(spec, "onnxruntime")
    _print_repository(p.repository_status())
    st = p.status()
    if hasattr(st, "replicas"):  # a fleet (server.replicas > 1)
        _print_fleet(st)
        return
    if st.state is None:
        out.print("not running")
        raise typer.Exit(int(ExitCode.CHECKS_FAILED))
    _print_state(st.state)
    table = Table("model", "state")
    for name, state in st.models.items():
        table.add_row(name, state)
    out.print(table)
    out.print(f"running: {st.running}  ready: {st.ready}")
    if not (st.running and st.ready):
        raise typer.Exit(int(ExitCode.CHECKS_FAILED))


def _print_fleet(st: Any) -> None:
    if st.balancer is None:
        out.print("not running")
        raise typer.Exit(int(ExitCode.CHECKS_FAILED))
    b = st.balancer
    where = f"pid {b.pid}" if b.pid is not None else f"{b.runtime} project {b.project}"
    out.print(f"balancer nginx ({where}, {'up' if st.balancer_running else 'DOWN'}): http {b.http_url}  "
              f"grpc {b.grpc_url}")
    if st.pinned_models:
        out.print(f"pinned to one replica per client (sequence models): {', '.join(st.pinned_models)}")
    table = Table("replica", "state", "http", "models")
    for name, r in st.replicas:
        where = r.state.http_url if r.state else "-"
        up_ = "up" if r.running and r.ready else ("running, not ready" if r.running else "down")
        table.add_row(name, up_, where, ", ".join(f"{m} {s}" for m, s in r.models.items()))
    out.print(table)
    if not st.ready:
        raise typer.Exit(int(ExitCode.CHECKS_FAILED))


def _print_repository(status: Any) -> None:
    """Per model: the versions held, what the repository serves, and newer versions a pin keeps unserved."""
    for name, st in status.served.items():
        if st is None:
            out.print(f"{name}: not published")
            continue
        held = ", ".join(f"{v.number}" + ("" if v.complete else " (incomplete)") for v in status.versions[name])
        pin = f"; pinned: newer versions {list(st.newer_kept)} kept, not served" if st.pinned else ""
        out.print(f"{name}: versions [{held}]; repository serves {list(st.served)}{pin}")
    for problem in status.problems:
        out.print(f"repository problem: {problem}", markup=False)


def _report(report: Any, json_path: Path | None, junit_path: Path | None) -> None:
    from deployer.smoke import raise_for_failures, render_report, write_json, write_junit

    out.print(render_report(report))
    if json_path:
        write_json(report, json_path)
        out.print(f"wrote {json_path}")
    if junit_path:
        write_junit(report, junit_path)
        out.print(f"wrote {junit_path}")
    raise_for_failures(report)


@app.command()
@_handle_errors
def smoke(spec: SpecArg, json_path: JsonOpt = None, junit_path: JunitOpt = None, fallback: FallbackOpt = None) -> None:
    """Prove the running deployment: readiness, served config, inference vs ONNX Runtime, batching, latency."""
    _report(_pipeline(spec, fallback).smoke(), json_path, junit_path)


@app.command()
@_handle_errors
def deploy(
    spec: SpecArg,
    keep: Annotated[bool, typer.Option(help="Leave the server running afterwards.")] = False,
    runtime: RuntimeOpt = None,
    fallback: FallbackOpt = None,
    json_path: JsonOpt = None,
    junit_path: JunitOpt = None,
    graceful_stop: Annotated[bool, typer.Option(
        help="Unload every model before stopping (python models' finalize() runs; ~1 s per instance).")] = False,
) -> None:
    """validate -> build engines -> publish -> up -> smoke -> down, with one report and exit code."""
    result = _pipeline(spec, fallback, runtime=runtime).deploy(
        keep=keep, graceful_stop=graceful_stop, on_stage=lambda name: err.print(f"[dim]» {escape(name)}[/]"))
    out.print(f"published: {', '.join(result.published)}")
    timings = "  ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    out.print(f"stages: {timings}")
    if keep and result.state is not None:
        _print_state(result.state)
    _report(result.report, json_path, junit_path)


@app.command()
@_handle_errors
def tune(
    spec: SpecArg,
    model: Annotated[Optional[str], typer.Argument(help="Model to tune (default: the one that batches).")] = None,  # noqa: UP045
    url: Annotated[Optional[str], typer.Option(help="Tune on this running server (host:port, explicit model control).")] = None,  # noqa: UP045, E501
    grpc_url: Annotated[Optional[str], typer.Option(help="That server's gRPC endpoint (host:port), for gRPC load.")] = None,  # noqa: UP045, E501
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff, write nothing.")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every trial as JSON.")] = None,  # noqa: UP045
    html_path: Annotated[Optional[Path], typer.Option("--html", help="Write an HTML report with plots.")] = None,  # noqa: UP045
    runtime: RuntimeOpt = None,
    fallback: FallbackOpt = None,
) -> None:
    """Find the dynamic-batching and instance settings that meet the spec's tune objective; write them back."""
    from deployer.cli_progress import TuneProgress
    from deployer.tune.report import render_result, write_json

    p = _pipeline(spec, fallback, runtime=runtime)
    with TuneProgress(err) as progress:  # a live bar on a terminal, a line per trial elsewhere
        result = p.tune(model, url=url, grpc_url=grpc_url, dry_run=dry_run, progress=progress)
    out.print(render_result(result))
    if result.diff:
        out.print(result.diff, markup=False, end="")
    if result.met:
        out.print("wrote " + str(spec) if result.written else
                  ("dry run: nothing written" if result.diff else "the original config is the best; spec unchanged"))
    if json_path:
        write_json(result, json_path)
        out.print(f"wrote {json_path}")
    if html_path:
        from deployer.tune.html import write_html

        write_html(result, html_path)
        out.print(f"wrote {html_path}")
    result.raise_for_unmet()


@app.command()
@_handle_errors
def compose(
    spec: SpecArg,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="File to write (default: print).")] = None,  # noqa: UP045
) -> None:
    """Render a compose.yaml for the spec's server (GPU reservation, healthcheck, read-only repository)."""
    p = _pipeline(spec, "onnxruntime")
    if output is None:
        out.print(p.compose_file(), end="", markup=False)
        return
    from deployer._files import atomic_write

    atomic_write(output, p.compose_file_at(output.absolute().parent).encode("utf-8"))
    out.print(f"wrote {output}; start it with `docker compose -f {output} up -d` (or docker-compose)")


@app.command()
@_handle_errors
def k8s(
    spec: SpecArg,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Directory for the manifests (default: print).")] = None,  # noqa: UP045, E501
) -> None:
    """Render Kubernetes manifests (Deployment, Service, HPA, PodDisruptionBudget; optional KServe) for the spec."""
    result = _pipeline(spec, "onnxruntime").k8s(output)
    if result.stream is not None:
        out.print(result.stream, end="", markup=False)
        return
    for path in result.written:
        out.print(f"wrote {path}", markup=False)
    for note in result.plan.notes:
        out.print(f"note: {note}", markup=False)
    out.print(f"apply with `kubectl apply -f {output}` (not validated against a cluster: none was contacted)",
              markup=False)


@image_app.command("build-cpu")
@_handle_errors
def image_build_cpu(
    tag: Annotated[Optional[str], typer.Option(help="Image tag (default: deployer's CPU image tag).")] = None,  # noqa: UP045
    base_image: Annotated[Optional[str], typer.Option(help="A Debian bookworm base image (default: debootstrap).")] = None,  # noqa: UP045, E501
    force: Annotated[bool, typer.Option(help="Rebuild even when the inputs did not change.")] = False,
) -> None:
    """Build (or reuse) a CPU Triton image from PyPI wheels and a Debian base, without any registry."""
    from deployer.server.docker.cpu_image import CPU_IMAGE, build_cpu_image

    result = build_cpu_image(tag=tag or CPU_IMAGE, base_image=base_image, force=force)
    _print_build(result)


def _print_build(result: Any) -> None:
    what = "built" if result.built else "up to date"
    out.print(f"{result.tag}: {what} ({result.image_id[:19]}, inputs {result.inputs_digest[:12]}, "
              f"{result.seconds:.1f} s)")


@image_app.command("build-balancer")
@_handle_errors
def image_build_balancer(
    force: Annotated[bool, typer.Option(help="Rebuild even when the inputs did not change.")] = False,
) -> None:
    """Build (or reuse) the nginx balancer image for replicas on compose (Debian base, no container registry)."""
    from deployer.server.docker.balancer_image import build_balancer_image

    result = build_balancer_image(force=force)
    _print_build(result)


def main() -> None:
    """Run the CLI in this process; ends with SystemExit(exit code) (tests and embedders call this)."""
    try:
        app()
    except SystemExit as exc:  # typer exits through SystemExit; keep its code
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else int(ExitCode.BAD_INPUT))
        sys.exit(code)


def run() -> None:
    """Console-script entry point: `main()`, then `exit_process` with its code."""
    try:
        main()
    except SystemExit as exc:
        exit_process(exc.code if isinstance(exc.code, int) else int(ExitCode.BAD_INPUT))
    exit_process(0)


def exit_process(code: int) -> NoReturn:
    """End the process once everything it owes is done: non-daemon threads joined, the atexit handlers
    run (logging's flush, a runtime's stop of what it left running), stdout/stderr flushed. Only the
    interpreter's teardown of its modules is skipped: ~0.1 s after a deploy has loaded numpy, ONNX
    Runtime and grpc, and nothing of deployer's runs in it (benchmarks/deploy_overhead.py)."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what Py_Finalize would run; os._exit below skips it otherwise
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`): nothing left to tell
            stream.flush()
    os._exit(code)
