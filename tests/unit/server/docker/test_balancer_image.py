"""The balancer image's recipe and cache key (pure: no Docker)."""

from __future__ import annotations

from deployer.server.docker.balancer_image import balancer_inputs_digest, balancer_recipe
from deployer.server.docker.plan import BALANCER_IMAGE, image_hint


def test_recipe_builds_nginx_light_on_the_registry_free_base() -> None:
    text = balancer_recipe().read_text(encoding="utf-8")
    assert "ARG BASE_IMAGE=deployer/debian-bookworm-minbase:py311" in text
    assert "apt-get install -y --no-install-recommends nginx-light" in text
    # the prefix and conf path the compose fleet's nginx.conf and command use
    assert "/var/lib/deployer-balancer" in text and "/etc/deployer/nginx.conf" in text


def test_cache_key_changes_with_the_recipe_or_the_base_only() -> None:
    a = balancer_inputs_digest(b"FROM x\n", "sha256:1")
    assert a == balancer_inputs_digest(b"FROM x\n", "sha256:1")
    assert a != balancer_inputs_digest(b"FROM x\nRUN true\n", "sha256:1")
    assert a != balancer_inputs_digest(b"FROM x\n", "sha256:2")


def test_a_missing_balancer_image_says_how_to_build_it() -> None:
    assert "deployer image build-balancer" in image_hint(BALANCER_IMAGE)
