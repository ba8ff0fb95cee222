"""What the GPU machine needs from here, which has no package index and takes 64 MiB a call.

``pack`` (here, from a fresh checkout; one command) writes three ignored folders:

- ``.whl/``: the wheels of the project's needs that the machine's image lacks (pydantic, zstandard);
- ``.gpu/minilm``: the packaged MiniLM-L6 sentence encoder with its weights in bf16 (45 MB; the
  wheel's fp32 copy is twice that);
- ``.raywhl/``: Ray's wheel without what a Python-only local cluster never loads (Java, the
  dashboard's web client, RLlib, Serve, Tune, Train, the LLM libraries: about 43 MB of its 79), with
  the wheels of Ray's needs that the image lacks.

``unpack`` (there, one call earlier than the measurement) extracts Ray with its file modes (the
raylet must stay executable) into ``.raysite/``, ignored, so the next call on the same warm
machine finds it while it carries the model and the other wheels:

    python benchmarks/gpu_bundle.py pack                          # here
    run(carry=[".whl", ".raywhl"]):  ... python3 benchmarks/gpu_bundle.py unpack
    run(carry=[".whl", ".gpu"]):  ... export PYTHONPATH=/tmp/site:$PWD/.raysite:$PWD; python3 benchmarks/gpu_check.py --jobs quality_ray ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Top-level parts of the wheel a local Python cluster running Ray Data never imports or starts
DROPPED = ("ray/jars/", "ray/dashboard/client/", "ray/rllib/", "ray/serve/", "ray/tune/", "ray/train/", "ray/llm/",
           "ray/cpp/", "ray/tests/")
# Ray's needs (Requires-Dist) that the GPU image's package list (device KINDS.md) does not hold
MISSING_NEEDS = ("jsonschema", "jsonschema-specifications", "referencing", "rpds-py")
# the project's own needs that gpu_check imports and the image lacks (device KINDS.md)
PROJECT_NEEDS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "zstandard")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def trim(wheel: Path, target: Path) -> tuple[int, int]:
    """Copy ``wheel`` to ``target`` without the ``DROPPED`` parts, file modes kept; (files, bytes) kept."""
    kept = size = 0
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            if info.filename.startswith(DROPPED):
                continue
            out.writestr(info, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
            kept += 1
            size += info.compress_size
    return kept, size


def unpack(archive: Path, site: Path) -> int:
    """Extract ``archive`` into ``site`` with each file's Unix mode; the number of files."""
    site.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as source:
        for info in source.infolist():
            path = Path(source.extract(info, site))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)
        return len(source.infolist())


def pack_ray(directory: Path, download: list[str]) -> str:
    import ray

    directory.mkdir(parents=True, exist_ok=True)
    full = directory / "full"
    subprocess.run([*download, str(full), f"ray=={ray.__version__}"], check=True)
    subprocess.run([*download, str(directory), *MISSING_NEEDS], check=True)
    wheel = next(full.glob("ray-*.whl"))
    files, size = trim(wheel, directory / "ray-trimmed.zip")
    wheel.unlink()
    full.rmdir()
    return f"ray {ray.__version__}: {files} files kept ({size / 1e6:.1f} MB compressed)"


def pack_project_needs(directory: Path, download: list[str]) -> str:
    """The wheels of ``PROJECT_NEEDS`` at the versions installed here (pydantic-core must match pydantic)."""
    from importlib.metadata import version

    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run([*download, str(directory), *(f"{name}=={version(name)}" for name in PROJECT_NEEDS)], check=True)
    return f"{len(PROJECT_NEEDS)} wheels"


def pack_encoder(target: Path) -> str:
    """The packaged MiniLM directory with ``model.safetensors`` in bf16; the rest copied as it is."""
    import shutil

    import torch
    from curation.classifiers.models import default_embedding_model
    from safetensors.torch import load_file, save_file

    source = Path(default_embedding_model())
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors", "README.md", ".gitattributes"))
    weights = load_file(source / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
              target / "model.safetensors", metadata={"format": "pt"})
    return f"encoder in bf16 ({(target / 'model.safetensors').stat().st_size / 1e6:.0f} MB)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's (pack)")
    parser.add_argument("--directory", default=str(ROOT / ".raywhl"))
    parser.add_argument("--site", default=str(ROOT / ".raysite"))
    args = parser.parse_args(argv)
    directory = Path(args.directory)
    if args.action == "unpack":
        files = unpack(directory / "ray-trimmed.zip", Path(args.site))
        needs = sorted(str(p) for p in directory.glob("*.whl"))
        if needs:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--upgrade", "--target", args.site, *needs], check=True)
        print(f"unpacked {files} files and {len(needs)} wheels into {args.site}")
        return
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                args.python_version, "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS], "-d"]
    for packed in (pack_project_needs(ROOT / ".whl", download), pack_encoder(ROOT / ".gpu" / "minilm"),
                   pack_ray(directory, download)):
        print(packed)
    for folder in (ROOT / ".whl", ROOT / ".gpu", directory):
        print(f"{folder}: {sum(p.stat().st_size for p in folder.rglob('*') if p.is_file()) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
