"""The card's top-level tokenize/ folder must never shadow the standard library's tokenize."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_path("stdlib")
CHECK = (
    "import tokenize, os, sysconfig; "
    "assert os.path.dirname(tokenize.__file__) == sysconfig.get_path('stdlib'), tokenize.__file__; "
    "import curation.tokenize.shards as s; print('ok', s.__file__)"
)


def test_no_init_in_top_level_tokenize():
    assert (REPO / "tokenize").is_dir()
    assert not (REPO / "tokenize" / "__init__.py").exists()


def test_python_c_from_repo_root():
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ok")
    assert str(REPO / "tokenize" / "shards.py") in out.stdout


def test_python_m_from_repo_root():
    # `python -m` puts the working directory first on sys.path, as `python -m pytest` does.
    out = subprocess.run([sys.executable, "-m", "curation.cli", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "pytest", "--version"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_in_this_pytest_process():
    import tokenize

    assert Path(tokenize.__file__).parent == Path(STDLIB)
    assert hasattr(tokenize, "generate_tokens")


def test_inside_ray_worker_shipped_with_working_dir():
    import ray

    from curation.core.ray_exec import _RUNTIME_EXCLUDES

    script = f"""
import ray, json
ray.init(num_cpus=1, include_dashboard=False, runtime_env={{"working_dir": {str(REPO)!r}, "excludes": {_RUNTIME_EXCLUDES!r}}})
@ray.remote
def probe():
    import os, sys, tokenize, sysconfig
    import curation.tokenize.shards as shards
    return {{"tokenize": tokenize.__file__, "stdlib": sysconfig.get_path("stdlib"), "cwd": os.getcwd(),
            "shards": shards.__file__}}
print(json.dumps(ray.get(probe.remote())))
ray.shutdown()
"""
    del ray
    out = subprocess.run([sys.executable, "-c", script], cwd="/", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(probe["tokenize"]).parent == Path(probe["stdlib"])
    # The worker runs inside the shipped copy of the checkout, whose root is on sys.path.
    assert Path(probe["shards"]).parent.name == "tokenize"
    assert Path(probe["cwd"]) != REPO
    assert probe["shards"].startswith(probe["cwd"]), probe
