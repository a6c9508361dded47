"""The tritonserver command line built from ServerSettings (pure)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deployer.errors import ExitCode, UserError
from deployer.server.argv import ALLOWED_EXTRA_FLAGS, MANAGED_FLAGS, normalize_extra_args, tritonserver_argv
from deployer.server.base import ServerSettings


def _settings(**kw: object) -> ServerSettings:
    base = ServerSettings(
        runtime="local", repository=Path("/repo"), models=("a", "b"), state_dir=Path("/state")
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _argv(settings: ServerSettings, **kw: str | None) -> list[str]:
    args: dict[str, str | None] = {
        "binary": "/bin/ts",
        "repository": "/repo",
        "backend_dir": None,
        "cache_dir": None,
    }
    args.update(kw)
    return tritonserver_argv(settings, **args)  # type: ignore[arg-type]


def test_core_flags_addresses_and_ports() -> None:
    argv = _argv(_settings(host="127.0.0.1", http_port=18000, grpc_port=18001, metrics_port=18002))
    assert argv[0] == "/bin/ts"
    for flag in (
        "--model-repository=/repo",
        "--model-control-mode=explicit",
        "--exit-on-error=false",
        "--strict-readiness=true",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        "--http-port=18000",
        "--grpc-port=18001",
        "--metrics-port=18002",
        "--log-verbose=0",
    ):
        assert flag in argv
    # models are loaded through the API, one by one
    assert not any(a.startswith("--load-model") for a in argv)
    assert not any(a.startswith(("--backend-directory", "--cache-directory", "--cache-config")) for a in argv)


def test_directories_cache_and_backend_config() -> None:
    settings = _settings(
        response_cache_bytes=1048576,
        log_verbose=2,
        backend_config=("python,shm-default-byte-size=16777216", "onnxruntime,default-max-batch-size=8"),
    )
    argv = _argv(settings, backend_dir="/b", cache_dir="/c")
    assert "--backend-directory=/b" in argv
    assert "--cache-directory=/c" in argv
    assert "--cache-config=local,size=1048576" in argv
    assert "--log-verbose=2" in argv
    assert "--backend-config=python,shm-default-byte-size=16777216" in argv
    assert "--backend-config=onnxruntime,default-max-batch-size=8" in argv


def test_docker_style_replace_for_container_address() -> None:
    inner = dataclasses.replace(_settings(http_port=9100), host="0.0.0.0", http_port=8000)
    argv = _argv(inner, binary="tritonserver", repository="/models")
    assert argv[:2] == ["tritonserver", "--model-repository=/models"]
    assert "--http-address=0.0.0.0" in argv and "--http-port=8000" in argv


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--model-load-thread-count=2",), ["--model-load-thread-count=2"]),
        (("--model-load-thread-count", "2"), ["--model-load-thread-count=2"]),
        (("--disable-auto-complete-config", "--id", "x"), ["--disable-auto-complete-config", "--id=x"]),
        (("--trace-config", "level=TIMESTAMPS"), ["--trace-config=level=TIMESTAMPS"]),
    ],
)
def test_extra_args_whitelisted_are_normalized(extra: tuple[str, ...], expected: list[str]) -> None:
    assert normalize_extra_args(extra) == expected
    assert _argv(_settings(extra_args=extra))[-len(expected) :] == expected


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--rm-rf=/",), "--rm-rf"),
        (("--load-model=x",), "--load-model"),
        (("--http-port=1",), "--http-port"),
        (("--exit-on-error=true",), "--exit-on-error"),
        (("--model-control-mode", "poll"), "--model-control-mode"),
        (("--strict-model-config=false",), "--strict-model-config"),
        (("-v",), "'-v'"),
        (("--id",), "--id"),
        (("--disable-auto-complete-config=true",), "--disable-auto-complete-config"),
    ],
)
def test_extra_args_rejected_name_the_flag(extra: tuple[str, ...], named: str) -> None:
    with pytest.raises(UserError) as err:
        _argv(_settings(extra_args=extra))
    assert named in err.value.message
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert err.value.hint


def test_managed_and_allowed_do_not_overlap() -> None:
    assert not set(MANAGED_FLAGS) & set(ALLOWED_EXTRA_FLAGS)


@pytest.mark.parametrize(
    "kw",
    [
        {"http_port": 0},
        {"grpc_port": 70000},
        {"metrics_port": 8000},  # same as http
        {"host": ""},
        {"log_verbose": -1},
        {"response_cache_bytes": -5},
        {"backend_config": ("no-comma-or-equals",)},
    ],
)
def test_bad_settings_rejected(kw: dict[str, object]) -> None:
    with pytest.raises(UserError):
        _argv(_settings(**kw))


def _spec_with_backend_config(tmp_path: Path, values: str) -> Path:
    import shutil

    shutil.copy(Path(__file__).resolve().parents[3] / "examples" / "quickstart" / "classifier.onnx", tmp_path)
    spec = tmp_path / "deployer.yaml"
    spec.write_text(f"server: {{backend_config: {values}}}\n"
                    "models:\n  - {name: classifier, source: classifier.onnx, max_batch_size: 8}\n")
    return spec


def test_the_specs_backend_config_reaches_the_command_line(tmp_path: Path) -> None:
    from deployer.server.from_spec import server_settings
    from deployer.spec import load_deployment

    spec = _spec_with_backend_config(tmp_path, "['python,shm-default-byte-size=16777216', 'onnxruntime,x=1']")
    argv = _argv(server_settings(load_deployment(spec)))
    assert "--backend-config=python,shm-default-byte-size=16777216" in argv
    assert "--backend-config=onnxruntime,x=1" in argv


@pytest.mark.parametrize("bad", ["['python']", "['python,=1']", "['python,a=']", "['a b,c=1']"])
def test_a_malformed_backend_config_is_a_located_spec_error(tmp_path: Path, bad: str) -> None:
    from deployer.errors import SpecError
    from deployer.spec import load_deployment

    with pytest.raises(SpecError) as exc:
        load_deployment(_spec_with_backend_config(tmp_path, bad))
    assert exc.value.exit_code == ExitCode.BAD_INPUT
    assert "server.backend_config" in exc.value.render()
