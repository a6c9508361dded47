"""`--url` is parsed before anything is contacted: HOST:PORT or http://HOST:PORT, else a clear exit 2."""

from __future__ import annotations

import pytest

from deployer.errors import ExitCode, UserError
from deployer.tune.session import server_address


@pytest.mark.parametrize(("url", "address"), [
    ("127.0.0.1:8000", "127.0.0.1:8000"),
    ("http://127.0.0.1:8000", "127.0.0.1:8000"),
    ("http://localhost:8000/", "localhost:8000"),
    ("[::1]:8000", "[::1]:8000"),
    ("gpu-box.example:31000", "gpu-box.example:31000"),
])
def test_host_port_is_kept(url: str, address: str) -> None:
    assert server_address(url) == address


@pytest.mark.parametrize(("url", "says"), [
    ("127.0.0.1:99999", "is not HOST:PORT"),
    ("127.0.0.1", "is not HOST:PORT"),
    ("127.0.0.1:0", "is not HOST:PORT"),
    ("foo bar:8000", "is not HOST:PORT"),
    ("http://127.0.0.1:8000/v2", "is not HOST:PORT"),
    ("http://user@127.0.0.1:8000", "is not HOST:PORT"),
    ("127.0.0.1:http", "is not HOST:PORT"),
    ("https://127.0.0.1:8443", "only http:// is supported"),
    ("grpc://127.0.0.1:8001", "only http:// is supported"),
])
def test_anything_else_is_bad_input(url: str, says: str) -> None:
    with pytest.raises(UserError) as info:
        server_address(url)
    assert info.value.exit_code == ExitCode.BAD_INPUT and says in info.value.message
    assert "127.0.0.1:8000" in (info.value.hint or "")


@pytest.mark.parametrize(("url", "address"), [
    ("127.0.0.1:8001", "127.0.0.1:8001"),
    ("grpc://127.0.0.1:8001", "127.0.0.1:8001"),
    ("grpc://gpu-box.example:31001/", "gpu-box.example:31001"),
])
def test_grpc_endpoint_is_kept(url: str, address: str) -> None:
    assert server_address(url, what="gRPC") == address


@pytest.mark.parametrize("url", ["http://127.0.0.1:8001", "grpcs://127.0.0.1:8001"])
def test_grpc_endpoint_with_another_scheme_is_bad_input(url: str) -> None:
    with pytest.raises(UserError) as info:
        server_address(url, what="gRPC")
    assert info.value.exit_code == ExitCode.BAD_INPUT and "only grpc:// is supported" in info.value.message
    assert "127.0.0.1:8001" in (info.value.hint or "")
