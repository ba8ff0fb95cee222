"""No Docker engine here: check the cluster files for what would break a build or a cluster."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def test_dockerfile_uses_official_ray_base_matching_pin():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+)", dockerfile, re.M)
    assert base, "the base image must be an official rayproject/ray image"
    pyproject = (DOCKER.parent / "pyproject.toml").read_text()
    ray_pin = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', pyproject).group(1)
    assert base.group(1).startswith(ray_pin + "-py311")
    for copied in re.findall(r"^COPY \S+ (\S+) ", dockerfile, re.M):
        assert (DOCKER.parent / copied).exists(), f"COPY of missing path {copied}"


def test_compose_has_head_two_workers_and_s3():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert "--head" in services["ray-head"]["command"]
    workers = [s for s in services.values() if "--address=ray-head:6379" in str(s.get("command", ""))]
    assert len(workers) == 2
    assert "minio" in services and "9000:9000" in services["minio"]["ports"]
    assert "8265:8265" in services["ray-head"]["ports"]


def test_hadolint_is_clean():
    import shutil
    import subprocess
    import sys

    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
