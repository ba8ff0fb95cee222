"""Shared fixtures: the fixture data in ../shared/data, a small demo crawl, the CLI as a subprocess,
this process's local Ray, and a real S3 endpoint (moto's server) on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI draws the same examples every run (hypothesis' own advice), so a result there is
# reproducible; locally each run explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``HYPOTHESIS_STRESS=N`` runs every property test with N times its examples and no example
    database: how the readers' rarer cases were found, e.g.
    ``HYPOTHESIS_STRESS=100 .venv/bin/python -m pytest tests/ingest/test_ingest.py -k arc``.
    (Hypothesis has no public override of a test's own ``@settings``; this sets the attribute its
    ``@given`` reads, once per function, whatever its parametrisations.)"""
    factor = int(os.environ.get("HYPOTHESIS_STRESS", "1"))
    if factor <= 1:
        return
    tests = {id(item.obj): item.obj for item in items if hasattr(getattr(item, "obj", None), "hypothesis")}
    for test in tests.values():
        current = getattr(test, "_hypothesis_internal_use_settings", settings.default)
        test._hypothesis_internal_use_settings = settings(
            current, max_examples=current.max_examples * factor, database=None, suppress_health_check=list(HealthCheck))


REPO = Path(__file__).resolve().parent.parent
CURATE = [sys.executable, "-m", "curation.cli"]


def shared_data_dir() -> Path:
    return Path(os.environ.get("CURATION_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "MANIFEST.md").is_file():
        pytest.skip(f"fixture data not found at {path} (set CURATION_DATA)")
    return path


@pytest.fixture(scope="session")
def tokenizer_path(shared_data: Path) -> Path:
    return shared_data / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"


@pytest.fixture(scope="session")
def small_crawl(tmp_path_factory) -> list[str]:
    """A 480-page demo crawl in 8 WARC files (8 shards per stage)."""
    from curation.ingest.demo_crawl import DemoCrawl, DemoCrawlConfig

    directory = tmp_path_factory.mktemp("crawl")
    return DemoCrawl(DemoCrawlConfig(pages=480, files=8, seed=7)).write(str(directory))


@pytest.fixture
def ray_local():
    """This process's local Ray (2 CPUs): started on first use and kept for the session. A test that
    needs another cluster shuts it down first; the next test that asks for it starts it again."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield


@pytest.fixture(scope="session", autouse=True)
def _cache_in_the_session_tmp(tmp_path_factory):
    """Remote models are copied into the session's temporary folder (set before any Ray worker starts,
    so workers inherit it), not into the user's cache, where every run would leave another copy."""
    os.environ["CURATION_CACHE"] = str(tmp_path_factory.mktemp("curation-cache"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _stop_ray_at_the_end():
    yield
    if "ray" in sys.modules:
        import ray

        ray.shutdown()


def run_curate(args: list[str], env: dict[str, str] | None = None, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("CURATION_DATA", str(shared_data_dir()))
    result = subprocess.run([*CURATE, *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"curate {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback. s3fs fails with moto when region_name is passed, so the
    region comes from AWS_DEFAULT_REGION."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint, env
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_single_stage(rows: list[dict], stage: dict, directory: Path, shards: int = 1) -> Path:
    """Write ``rows`` as ``shards`` Parquet shards under ``directory/in`` and run one stage (a flat
    run, in this process's Ray) into ``directory/out``; returns the output directory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.core.pipeline import pipeline_from_tree
    from curation.core.runner import Runner

    inputs = []
    for i, part in enumerate(np.array_split(np.arange(len(rows)), shards)):
        path = directory / "in" / f"part-{i:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([rows[j] for j in part]), path)
        inputs.append(str(path))
    tree = {"name": stage["kind"], "stages": {stage["kind"]: stage}}
    out = directory / "out"
    Runner(pipeline_from_tree(tree, [], None), str(out), echo=lambda m: None, flat=True).run(inputs)
    return out
