"""The pipeline as a library: one `Pipeline` over a loaded spec runs every stage and returns its result.

    from deployer import Pipeline
    p = Pipeline.load("deployer.yaml")          # validate: raises SpecError with every issue
    p.build()                                   # TensorRT engines (engine cache), if the spec has any
    p.render()                                  # {model: config.pbtxt text}, each proven by parse-back
    p.plan()                                    # what publish would change (writes nothing)
    p.publish()                                 # builds missing engines itself, then publishes atomically
    state = p.up(); report = p.smoke(); p.down()
    p.deploy()                                  # all of it, the server always stopped unless keep=True

Every CLI command is one call here (the CLI only maps options and prints). Stages raise the typed
errors of `deployer.errors`; nothing here prints. The module-level functions (`deployer.publish(dep)`,
`deployer.deploy(dep)`, ...) are the same stages for a loaded `Deployment`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from deployer.errors import DeployerError
from deployer.repository import DEFAULT_LOCK_TIMEOUT_S, PublishPlan, PublishResult, RollbackResult
from deployer.server.base import RuntimeName, ServerState, ServerStatus
from deployer.spec import Deployment

if TYPE_CHECKING:
    from deployer.fleet.run import FleetStatus
    from deployer.k8s import K8sResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    """Engines for the spec's tensorrt models: path and build manifest per model."""

    engines: Mapping[str, Path] = field(default_factory=dict)
    infos: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanResult:
    """What publish would change; `unbuilt` models need an engine first (publish builds it)."""

    plan: PublishPlan
    unbuilt: tuple[str, ...] = ()


@dataclass(frozen=True)
class RollbackOutcome:
    """The repository rollback, and whether this spec's running server reloaded the model."""

    result: RollbackResult
    reloaded: bool


@dataclass(frozen=True)
class RepositoryStatus:
    """What the repository holds for the spec's models: `served[m]` is a ServingState (None: not
    published), `versions[m]` the VersionInfo of each version dir, `problems` what verify found."""

    served: Mapping[str, Any]
    versions: Mapping[str, tuple[Any, ...]]
    problems: tuple[str, ...] = ()


@dataclass
class DeployResult:
    """What `deploy` did, with timings (seconds) per stage."""

    report: Any = None
    published: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    state: ServerState | None = None
    kept: bool = False


class Pipeline:
    """One deployment spec, driven stage by stage (or end to end with `deploy`).

    Args:
        deployment: a validated spec (`load_deployment`, or `Pipeline.load`).
        runtime: overrides the spec's `server.runtime` for `up` and `deploy`.
        builder: overrides each tensorrt model's `engine.builder` ("local" or "container").
        trt_module: the `tensorrt` module to build with (default: import it); tests pass a fake.
    """

    def __init__(self, deployment: Deployment, *, runtime: RuntimeName | None = None,
                 builder: str | None = None, trt_module: ModuleType | None = None) -> None:
        self.deployment = deployment
        self.runtime = runtime
        self.builder = builder
        self.trt_module = trt_module

    @classmethod
    def load(cls, spec: Path | str, *, fallback: str | None = None, runtime: str | None = None,
             builder: str | None = None) -> Pipeline:
        """Load and validate `spec` (raises SpecError listing every issue, located)."""
        from deployer.errors import UserError
        from deployer.spec import load_deployment

        for option, value, allowed in (("fallback", fallback, ("onnxruntime",)),
                                       ("runtime", runtime, ("local", "docker", "compose")),
                                       ("builder", builder, ("local", "container"))):
            if value is not None and value not in allowed:
                raise UserError(f"{option} (--{option}) takes {' or '.join(allowed)}, not {value!r}")
        return cls(load_deployment(spec, fallback=fallback), runtime=cast("RuntimeName | None", runtime),
                   builder=builder)

    # ------------------------------------------------------------------ offline stages

    def build(self) -> BuildResult:
        """Build every engine the spec needs, through the engine cache (unchanged models are not rebuilt)."""
        from deployer.engines.from_spec import build_engines_for, needs_engine

        if not any(needs_engine(m) for m in self.deployment.models):
            return BuildResult()
        engines, infos = build_engines_for(self.deployment, builder=self.builder, trt_module=self.trt_module)
        return BuildResult(engines, infos)

    def engines(self, *, build_missing: bool = True) -> BuildResult:
        """The engines the last build left; missing ones are built first (unless `build_missing=False`)."""
        from deployer.engines.from_spec import build_engines_for, built_engines

        engines, infos, missing = built_engines(self.deployment)
        if missing and build_missing:
            from deployer.engines.manifest import read_manifest
            from deployer.engines.versions import check_triton_can_serve

            more, more_infos = build_engines_for(self.deployment, builder=self.builder, only=missing,
                                                 trt_module=self.trt_module)
            for path in more.values():  # as `built_engines` does for plans already on disk (RTX: refused)
                check_triton_can_serve(read_manifest(path))
            engines, infos = {**engines, **more}, {**infos, **more_infos}
        return BuildResult(engines, infos)

    def render(self) -> dict[str, str]:
        """config.pbtxt text per model, each proven equal to the spec's configuration."""
        from deployer.repository.from_spec import render_all

        return render_all(self.deployment)

    def write_rendered(self, output: Path) -> list[Path]:
        """Render and write `<output>/<model>/config.pbtxt`, all or nothing; returns the files."""
        from deployer.repository.from_spec import render_all, write_rendered

        return write_rendered(render_all(self.deployment), output)

    def plan(self, *, force: bool = False) -> PlanResult:
        """What publishing would change (writes nothing, builds nothing)."""
        from deployer.engines.from_spec import built_engines
        from deployer.repository.from_spec import plan

        engines, infos, missing = built_engines(self.deployment)
        return PlanResult(plan(self.deployment, force=force, engines=engines, skip=missing, build_info=infos), missing)

    def publish(self, *, force: bool = False, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> PublishResult:
        """Build missing engines (engine cache), render and publish every model atomically."""
        from deployer.repository.from_spec import publish

        built = self.engines()
        return publish(self.deployment, force=force, engines=built.engines, build_info=built.infos,
                       lock_timeout_s=lock_timeout_s)

    def rollback(self, model: str, to: int | None = None, *, prune: bool = False,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> RollbackOutcome:
        """Serve an earlier version again (deletes nothing unless `prune`); a running server reloads it."""
        from deployer.repository import rollback
        from deployer.server.from_spec import reload_model

        if self.deployment.remote is not None:
            from deployer.repository.s3_apply import rollback_s3

            result = rollback_s3(self.deployment.remote, model, to, prune=prune, lock_timeout_s=lock_timeout_s)
        else:
            result = rollback(self.deployment.repository, model, to, prune=prune, lock_timeout_s=lock_timeout_s)
        return RollbackOutcome(result, reload_model(self.deployment.spec_path, model))

    def compose_file(self) -> str:
        """The compose.yaml text for the spec's server, with paths relative to the current directory."""
        return self.compose_file_at(Path.cwd())

    def compose_file_at(self, base: Path) -> str:
        """The compose.yaml text, paths relative to `base` (the directory the file will live in)."""
        if self._fleet:
            from deployer.fleet import from_spec as fleet

            return fleet.compose_file(self.deployment, base)
        from deployer.server.from_spec import compose_file

        return compose_file(self.deployment, base)

    def k8s(self, output: Path | None = None) -> K8sResult:
        """Kubernetes manifests for the spec, written into `output` (or returned as one YAML stream)."""
        from deployer.k8s import k8s

        return k8s(self.deployment, output)

    # ------------------------------------------------------------------ serving stages

    def up(self) -> ServerState:
        """Start the server on the published repository and load every model (a fleet: the balancer's
        state; `deployer.fleet` has the replicas)."""
        if self._fleet:
            from deployer.fleet import from_spec as fleet

            return fleet.up(self.deployment, runtime=self.runtime).balancer
        from deployer.server.from_spec import up

        return up(self.deployment, runtime=self.runtime)

    def status(self) -> ServerStatus | FleetStatus:
        """Is this spec's server running and ready, and how is each model (a fleet: a FleetStatus)."""
        from deployer.server.from_spec import status

        if self._fleet:
            from deployer.fleet import from_spec as fleet

            return fleet.status(self.deployment)

        return status(self.deployment)

    def repository_status(self) -> RepositoryStatus:
        """Per model what the repository serves and holds, and every problem `verify_repository` finds."""
        from deployer.repository import list_versions, serving_state, verify_repository

        if self.deployment.remote is not None:
            return _s3_repository_status(self.deployment)
        repo = self.deployment.repository
        served: dict[str, Any] = {}
        versions: dict[str, tuple[Any, ...]] = {}
        for m in self.deployment.models:
            model_dir = repo / m.name
            published = model_dir.is_dir()
            served[m.name] = serving_state(model_dir) if published else None
            versions[m.name] = tuple(list_versions(repo, m.name, verify_hashes=False)) if published else ()
        problems = tuple(verify_repository(repo, verify_hashes=False)) if repo.is_dir() else ()
        return RepositoryStatus(served, versions, problems)

    def smoke(self, *, state: ServerState | None = None, progress: Callable[[str, Any], None] | None = None) -> Any:
        """Run the smoke suite against this spec's running server; returns the SmokeReport."""
        from deployer.smoke.from_spec import smoke

        if self._fleet:
            from deployer.fleet import from_spec as fleet

            return fleet.smoke(self.deployment, progress=progress)

        return smoke(self.deployment, state=state, progress=progress)

    def down(self) -> ServerState | None:
        """Stop this spec's server (whatever runtime started it); the state that was stopped, if any."""
        from deployer.server.from_spec import down

        if self._fleet:
            from deployer.fleet import from_spec as fleet

            stopped = fleet.down(self.deployment)
            return stopped.balancer if stopped else None

        return down(self.deployment)

    def rollout(self) -> Any:
        """Publish, then replica by replica load the new versions and smoke that replica (a running fleet);
        on a failure every replica returns to the previous versions and CheckFailed names the replica."""
        from deployer.fleet import from_spec as fleet

        return fleet.rollout(self.deployment, publish=self.publish)

    def tune(self, model: str | None = None, *, url: str | None = None, grpc_url: str | None = None,
             dry_run: bool = False, progress: Callable[[str, int, Any, Any], None] | None = None) -> Any:
        """Tune one model's dynamic batching and instances on a running server; write the winner into the spec.

        The server is the one given by `url` (host:port, explicit model control; `grpc_url` its gRPC endpoint,
        needed for `tune.load.protocol: grpc`), else this spec's running
        server, else one this call publishes, starts and stops. Returns a TuneResult (its
        `raise_for_unmet()` raises CheckFailed when no candidate met the objective); bad `tune:` input
        raises before any server is touched.
        """
        from deployer.server.from_spec import current_state
        from deployer.tune import TuneServer, plan_tune, tune_model

        plan, validator = plan_tune(self.deployment, model)
        gpus = self.deployment.spec.server.gpus
        gpu_text = gpus if isinstance(gpus, str) else ",".join(map(str, gpus))
        if grpc_url is not None and url is None:
            from deployer.errors import UserError

            raise UserError("--grpc-url names the gRPC endpoint of the server given by --url; give --url too")
        if url is not None:
            from deployer.tune.session import server_address

            grpc = server_address(grpc_url, what="gRPC") if grpc_url is not None else None
            server = TuneServer(server_address(url), "url", grpc)
            return tune_model(plan, validator, server, dry_run=dry_run, progress=progress)
        if self._fleet:
            from deployer.errors import UserError

            # trials reload the model on one server; behind the balancer they would hit every replica unevenly
            raise UserError("tune needs one server, not a fleet (server.replicas > 1)",
                            hint="tune one replica with --url HOST:PORT, then deploy the fleet")
        state = current_state(self.deployment)
        status = self.status()
        started = state is None or not (isinstance(status, ServerStatus) and status.running)
        if started:
            self.publish()
            state = self.up()
        assert state is not None
        server = TuneServer(state.http_url, state.runtime, state.grpc_url, gpu_text)
        try:
            return tune_model(plan, validator, server, dry_run=dry_run, progress=progress)
        finally:
            if started:
                from deployer.server.from_spec import get_runtime

                _safe_down(get_runtime, state)

    @property
    def _fleet(self) -> bool:
        return self.deployment.spec.server.replicas > 1

    def _stop(self, get_runtime: Callable[[RuntimeName], Any], state: ServerState, *, quick: bool = False) -> None:
        if not self._fleet:
            _safe_down(get_runtime, state, quick=quick)
            return
        try:
            self.down()
        except DeployerError as exc:  # as _safe_down: never mask the original outcome
            log.error("stopping the fleet failed: %s", exc.render())

    def deploy(self, *, keep: bool = False, progress: Callable[[str, Any], None] | None = None,
               on_stage: Callable[[str], None] | None = None, graceful_stop: bool = False) -> DeployResult:
        """build engines -> publish -> up -> smoke -> down (unless `keep`); validation happened at load.

        The server is always stopped when anything after `up` fails, Ctrl-C included. It is deploy's own
        server and idle once the smoke returned, so it is stopped quickly (`Runtime.down(quick=True)`:
        no drain; the python backend alone would spend 1 s per model instance finalizing its stubs)
        unless `graceful_stop` (unload every model first, python models' `finalize()` runs).
        """
        from deployer.engines.from_spec import needs_engine
        from deployer.repository.from_spec import publish
        from deployer.server.from_spec import get_runtime, up

        result = DeployResult()

        def stage(name: str) -> float:
            if on_stage:
                on_stage(name)
            return time.perf_counter()

        built = BuildResult()
        if any(needs_engine(m) for m in self.deployment.models):
            t = stage("build")
            built = self.engines()
            result.timings["build"] = time.perf_counter() - t
        t = stage("publish")
        published = publish(self.deployment, engines=built.engines, build_info=built.infos)
        result.published = [f"{m.name}:{m.version}:{m.status}" for m in published.models]
        result.timings["publish"] = time.perf_counter() - t
        t = stage("up")
        state = self.up() if self._fleet else up(self.deployment, runtime=self.runtime)
        result.state = state
        result.timings["up"] = time.perf_counter() - t
        stopped = False
        try:
            t = stage("smoke")
            result.report = self.smoke(state=state, progress=progress)
            result.timings["smoke"] = time.perf_counter() - t
        except BaseException:
            self._stop(get_runtime, state, quick=not graceful_stop)
            stopped = True
            raise
        finally:
            if not keep and not stopped:
                t = stage("down")
                self._stop(get_runtime, state, quick=not graceful_stop)
                result.timings["down"] = time.perf_counter() - t
        result.kept = keep
        return result


def _s3_repository_status(dep: Deployment) -> RepositoryStatus:
    from deployer.repository.s3 import S3Reader, client_for
    from deployer.repository.s3_apply import list_versions_s3, serving_state_s3, verify_s3

    assert dep.remote is not None
    reader = S3Reader(client_for(dep.remote), dep.remote)
    names = [m.name for m in dep.models]
    return RepositoryStatus({n: serving_state_s3(reader, n) for n in names},
                            {n: tuple(list_versions_s3(reader, n)) for n in names}, tuple(verify_s3(reader, names)))


def _safe_down(get_runtime: Callable[[RuntimeName], Any], state: ServerState, *, quick: bool = False) -> None:
    try:
        get_runtime(state.runtime).down(state, quick=quick)
    except DeployerError as exc:  # report, but never mask the original outcome
        log.error("stopping the server failed: %s", exc.render())


# ---------------------------------------------------------------------- the stages as plain functions


def build(dep: Deployment, *, builder: str | None = None) -> BuildResult:
    """`Pipeline(dep).build()`."""
    return Pipeline(dep, builder=builder).build()


def render_all(dep: Deployment) -> dict[str, str]:
    """`Pipeline(dep).render()`."""
    return Pipeline(dep).render()


def plan(dep: Deployment, *, force: bool = False) -> PlanResult:
    """`Pipeline(dep).plan()`."""
    return Pipeline(dep).plan(force=force)


def publish(dep: Deployment, *, force: bool = False, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> PublishResult:
    """`Pipeline(dep).publish()`: builds missing engines (engine cache) first."""
    return Pipeline(dep).publish(force=force, lock_timeout_s=lock_timeout_s)


def rollback(dep: Deployment, model: str, to: int | None = None, *, prune: bool = False) -> RollbackOutcome:
    """`Pipeline(dep).rollback(...)`."""
    return Pipeline(dep).rollback(model, to, prune=prune)


def up(dep: Deployment, *, runtime: RuntimeName | None = None) -> ServerState:
    """`Pipeline(dep).up()`."""
    return Pipeline(dep, runtime=runtime).up()


def status(dep: Deployment) -> ServerStatus | FleetStatus:
    """`Pipeline(dep).status()`."""
    return Pipeline(dep).status()


def smoke(dep: Deployment) -> Any:
    """`Pipeline(dep).smoke()`."""
    return Pipeline(dep).smoke()


def down(dep: Deployment) -> ServerState | None:
    """`Pipeline(dep).down()`."""
    return Pipeline(dep).down()


def tune(dep: Deployment, model: str | None = None, *, url: str | None = None, grpc_url: str | None = None,
         dry_run: bool = False, runtime: RuntimeName | None = None) -> Any:
    """`Pipeline(dep).tune(...)`: a TuneResult."""
    return Pipeline(dep, runtime=runtime).tune(model, url=url, grpc_url=grpc_url, dry_run=dry_run)


def deploy(dep: Deployment, *, keep: bool = False, runtime: RuntimeName | None = None,
           graceful_stop: bool = False) -> DeployResult:
    """`Pipeline(dep).deploy()`: build -> publish -> up -> smoke -> down."""
    return Pipeline(dep, runtime=runtime).deploy(keep=keep, graceful_stop=graceful_stop)
