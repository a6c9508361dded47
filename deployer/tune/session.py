"""One model on a running server, driven through Triton's repository API (explicit model control).

`apply(config)` loads the model with a config override (`POST v2/repository/models/<m>/load` with
`{"parameters": {"config": "<json>"}}`), then proves the served config equals it field by field.
`restore()` loads the config that was served before the first `apply`, with Ctrl-C held off until
it is back, and proves it too. Nothing in the repository changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from deployer.errors import EnvironmentProblem, ServerError, UserError

log = logging.getLogger(__name__)

_NOT_EXPLICIT = ("not allowed", "explicit model load")


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold SIGINT until the block ends, then raise KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def server_address(url: str, *, what: str = "HTTP") -> str:
    """`host:port` of a server endpoint given by URL: `HOST:PORT` or `SCHEME://HOST:PORT[/]`, the scheme
    `http` for the HTTP endpoint and `grpc` for the gRPC one (UserError otherwise: the trials' load
    generator speaks plain HTTP or insecure gRPC to one address, so there is no path or TLS to carry)."""
    import urllib.parse

    scheme = "grpc" if what == "gRPC" else "http"
    example = f"HOST:PORT of Triton's {what} endpoint, e.g. 127.0.0.1:{8001 if scheme == 'grpc' else 8000}"
    parsed = urllib.parse.urlsplit(url if "://" in url else f"{scheme}://{url}")
    if parsed.scheme != scheme:
        raise UserError(f"server URL {url!r}: only {scheme}:// is supported (the load generator speaks plain {what})",
                        hint=example)
    try:
        port = parsed.port
    except ValueError:  # out of range or not a number
        port = None
    host = parsed.hostname or ""
    if (port is None or port < 1 or not host or any(c.isspace() for c in url) or parsed.path not in ("", "/")
            or parsed.query or parsed.fragment or parsed.username is not None):
        raise UserError(f"server URL {url!r} is not HOST:PORT", hint=example)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ModelSession:
    """Load candidate configs of `model` on the server at `http_url` (host:port)."""

    def __init__(self, http_url: str, model: str, *, load_timeout_s: float = 300.0) -> None:
        import tritonclient.http as httpclient

        self.http_url, self.model = http_url, model
        self.client = httpclient.InferenceServerClient(http_url, connection_timeout=10.0,
                                                       network_timeout=load_timeout_s)
        self.original: dict[str, Any] | None = None
        self.changed = False

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def served(self) -> dict[str, Any]:
        """The served config (GET v2/models/<m>/config)."""
        from tritonclient.utils import InferenceServerException

        try:
            return dict(self.client.get_model_config(self.model))
        except InferenceServerException as exc:
            raise ServerError(f"the server at {self.http_url} does not serve {self.model!r}: {exc.message()}",
                              hint="deploy it first (deployer up SPEC), or check --url") from None
        except (ConnectionError, OSError) as exc:
            raise EnvironmentProblem(f"no Triton server answers at {self.http_url}: {exc}",
                                     hint="start it (deployer up SPEC) or fix --url") from None

    def server_version(self) -> str:
        """Triton's version from the server metadata ('' when unknown)."""
        try:
            return str(self.client.get_server_metadata().get("version", ""))
        except Exception:
            return ""

    def begin(self) -> dict[str, Any]:
        """Remember the config served now: `restore` brings it back."""
        self.original = self.served()
        return self.original

    def apply(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Load `config`, check the served config equals it (ServerError when Triton refuses or differs),
        and return the served config."""
        from deployer.config.diff import diff_config

        self._load(config)
        served = self.served()
        diffs = diff_config(config, served)
        if diffs:
            raise ServerError(f"{self.model}: the served config differs from the candidate: "
                              + "; ".join(d.format() for d in diffs[:3]))
        return served

    def _load(self, config: Mapping[str, Any]) -> None:
        from tritonclient.utils import InferenceServerException

        was_changed, self.changed = self.changed, True
        try:
            self.client.load_model(self.model, config=json.dumps(config))
        except InferenceServerException as exc:
            text = exc.message() or str(exc)
            if any(s in text.lower() for s in _NOT_EXPLICIT):
                self.changed = was_changed  # refused before loading anything: this call changed nothing
                raise EnvironmentProblem(f"the server at {self.http_url} does not allow loading models: {text}",
                                         hint="run tritonserver with --model-control-mode=explicit") from None
            raise ServerError(f"{self.model}: the server refused the candidate config: {text}") from None
        except (ConnectionError, OSError) as exc:
            raise EnvironmentProblem(f"lost the server at {self.http_url}: {exc}") from None

    def restore(self) -> None:
        """Serve the original config again (SIGINT held until done), proven by the served config."""
        if self.original is None or not self.changed:
            return
        with sigint_deferred():
            log.info("restoring the original config of %s", self.model)
            self.apply(self.original)
            self.changed = False


def candidate_config(original: Mapping[str, Any], c: Any) -> dict[str, Any]:
    """The served config with the candidate's knobs set (everything else as served: inputs, versions...)."""
    import copy

    cfg = copy.deepcopy(dict(original))
    if c.max_batch_size == 0 and "dynamic_batching" not in cfg:
        pass  # a model that does not batch: only its instances change
    else:
        cfg["max_batch_size"] = c.max_batch_size
        db = dict(cfg.get("dynamic_batching") or {})
        if c.preferred_batch_size:
            db["preferred_batch_size"] = list(c.preferred_batch_size)
        else:  # none: Triton then prefers max_batch_size and serves [mbs]; sending [] would fail the check
            db.pop("preferred_batch_size", None)
        db["max_queue_delay_microseconds"] = c.max_queue_delay_microseconds
        if c.max_queue_size is not None or c.default_timeout_microseconds is not None:
            qp = dict(db.get("default_queue_policy") or {})
            if c.max_queue_size is not None:
                qp["max_queue_size"] = c.max_queue_size
            if c.default_timeout_microseconds is not None:
                qp["default_timeout_microseconds"] = c.default_timeout_microseconds
            db["default_queue_policy"] = qp
        cfg["dynamic_batching"] = db
    groups = [dict(g) for g in cfg.get("instance_group") or [{}]]
    for g in groups:
        g["count"] = c.instance_count
    cfg["instance_group"] = groups
    return cfg
