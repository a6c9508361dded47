"""`artifacts.write_rendered`: all configs or none, typed errors naming the path."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from deployer.errors import EnvironmentProblem, ExitCode, UserError
from deployer.repository.from_spec import write_rendered

RENDERED = {"first": 'name: "first"\n', "second": 'name: "second"\n'}


def test_writes_every_config_into_created_dirs(tmp_path: Path) -> None:
    written = write_rendered(RENDERED, tmp_path / "a" / "b")
    assert written == [tmp_path / "a" / "b" / m / "config.pbtxt" for m in RENDERED]
    assert [p.read_text() for p in written] == list(RENDERED.values())
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == ["b", "config.pbtxt", "config.pbtxt", "first",
                                                                   "second"]
    write_rendered({"first": "again\n"}, tmp_path / "a" / "b")  # an existing config is replaced
    assert written[0].read_text() == "again\n"


def test_existing_file_on_the_way_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for output, text in ((tmp_path / "f", "exists and is not a directory"),
                         (tmp_path / "f" / "sub", f"cannot be created: {tmp_path / 'f'} is not a directory")):
        with pytest.raises(UserError) as info:
            write_rendered(RENDERED, output)
        assert str(output) in info.value.message and text in info.value.message
        assert info.value.exit_code == ExitCode.BAD_INPUT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"] and (tmp_path / "f").read_text() == "x"


def test_a_failing_write_removes_what_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = Path.open

    def full_disk_for_second(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.parent.name == "second":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_disk_for_second)
    out = tmp_path / "out"
    with pytest.raises(EnvironmentProblem) as info:
        write_rendered(RENDERED, out)
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    assert f"cannot write the rendered configs to {out}" in info.value.message
    assert "No space left on device" in info.value.message and str(out / "second") in info.value.message
    assert list(tmp_path.iterdir()) == [], "the first model's config and every created dir are gone"
