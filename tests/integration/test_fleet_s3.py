"""Three local replicas on one S3 repository (a real SeaweedFS), real nginx in front: `deploy` passes
smoke through the balancer and per replica, and Triton's own counters show the load on all three."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployer import Pipeline
from deployer.fleet import from_spec as fleet
from tests.fleet_load import Load, classifier_fleet_spec, infer_count
from tests.seaweed import Seaweed, running_seaweed

pytestmark = [pytest.mark.triton, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                                 reason="nginx missing (apt-get install -y nginx-light)")]


@pytest.fixture
def seaweed(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seaweed]:
    # credentials only in the environment, as a user sets them (SeaweedFS without identities takes any)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "DEPLOYERFLEETKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "deployer-fleet-secret")
    with running_seaweed(tmp_path_factory.mktemp("seaweed-fleet")) as weed:
        weed.client().create_bucket(Bucket="fleet")
        yield weed


def test_three_replicas_on_one_bucket_behind_nginx(
    tmp_path: Path, seaweed: Seaweed, find_free_ports: Callable[..., list[int]],
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    spec = classifier_fleet_spec(tmp_path, find_free_ports(3), repository="s3://fleet/prod/models",
                                 extra=f'repository_s3: {{endpoint: "{seaweed.endpoint}"}}\n')
    p = Pipeline.load(spec)
    result = p.deploy(keep=True)
    try:
        assert result.report.passed, [(s.model, c) for s in result.report.suites for c in s.checks
                                      if c.status == "fail"]
        assert {"r0:classifier", "r1:classifier", "r2:classifier"} <= {s.model for s in result.report.suites}
        st = fleet.current(p.deployment)
        assert len(st.replicas) == 3
        # every replica loads the bucket itself: its argv names the s3:// repository, not a local copy
        assert p.deployment.remote is not None
        for r in st.replicas:
            assert r.pid is not None
            argv = Path(f"/proc/{r.pid}/cmdline").read_bytes().split(b"\0")
            assert f"--model-repository={p.deployment.remote.triton_url}".encode() in argv, argv
        m = p.deployment.models[0]
        i = m.config["input"][0]
        inp = (str(i["name"]), [1, *[int(d) for d in i["dims"]]])
        before = [infer_count(r.http_url, m.name) for r in st.replicas]
        with Load(st.balancer.http_url, m.name, inp, 16) as load:
            load.wait_ok(300, 120.0)
        spread = [infer_count(r.http_url, m.name) - b for r, b in zip(st.replicas, before, strict=True)]
        assert load.failed == [], load.failed[:5]
        assert all(d > 0 for d in spread), f"per-replica inference counts {spread}: not spread over all 3"
    finally:
        p.down()
    assert processes_mentioning(str(tmp_path)) == []
