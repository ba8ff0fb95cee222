"""Pipelines: a DAG of named stages, defined in YAML, with typed configs and dotted overrides.

```yaml
name: dclm_baseline
input: [demo]            # raw inputs for the source stage; "demo" = the bundled demo crawl
stages:
  extract: {kind: extract, extractor: resiliparse}
  filter:  {kind: heuristic_filter, after: extract, steps: {page_length: {min_words: 50, max_words: 100000}}}
```

``--set filter.steps.page_length.min_words=80`` overrides a stage option, ``--set ray.num_cpus=4`` a section.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.core import io as fio
from curation.core.config import apply_overrides, build_config, load_yaml
from curation.core.errors import ConfigError
from curation.core.stage import Stage, stage_class

_SECTIONS = ("name", "description", "input", "ray", "storage", "stages")


@dataclass
class RayOptions:
    address: str | None = None  # None: local Ray; "auto" or ray://host:10001 for a cluster
    num_cpus: int | None = None  # local Ray only
    max_workers_per_stage: int | None = None
    progress_bars: bool = True  # Ray Data's bars on a terminal
    progress_interval_s: float = 30.0  # elsewhere (logs, CI, cluster jobs): a progress line per stage this often


@dataclass
class StorageOptions:
    endpoint_url: str | None = None
    anon: bool = False
    retries: int = 6  # a remote input's passing failures (503, 429, a dropped connection): see fio.Storage
    retry_wait_s: float = 1.0

    def to_storage(self) -> fio.Storage:
        return fio.Storage(endpoint_url=self.endpoint_url, anon=self.anon, retries=self.retries,
                           retry_wait_s=self.retry_wait_s)


@dataclass
class StageSpec:
    name: str
    kind: str
    after: str | None  # upstream stage; None for the source stage
    config: Any

    def build(self) -> Stage:
        return stage_class(self.kind)(self.config)


@dataclass
class Pipeline:
    name: str
    inputs: list[str]
    stages: list[StageSpec]
    ray: RayOptions = field(default_factory=RayOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)
    description: str = ""
    source_tree: dict[str, Any] = field(default_factory=dict)  # resolved YAML, for run.json

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise ConfigError(f"pipeline {self.name!r} has no stage {name!r}")


def pipeline_dirs() -> list[Path]:
    import curation

    here = Path(curation.__file__).resolve().parent
    return [here.parent / "pipelines", here / "pipelines"]


def find_pipeline(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(f"pipeline file not found: {name_or_path}")
        return candidate
    for directory in pipeline_dirs():
        path = directory / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in pipeline_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"unknown pipeline {name_or_path!r}; known: {', '.join(known) or 'none'}")


def _route_override(override: str, stage_names: list[str]) -> str:
    key = override.split("=", 1)[0].strip()
    head = key.split(".", 1)[0]
    if head in _SECTIONS:
        return override
    if head in stage_names:
        return f"stages.{override.strip()}"
    raise ConfigError(
        f"override {key!r}: no stage or section named {head!r} "
        f"(stages: {', '.join(stage_names)}; sections: {', '.join(_SECTIONS[2:5])})"
    )


def load_pipeline(
    name_or_path: str, overrides: list[str] | None = None, inputs: list[str] | None = None
) -> Pipeline:
    path = find_pipeline(name_or_path)
    tree = load_yaml(path)
    return pipeline_from_tree(tree, overrides or [], inputs, where=str(path))


def pipeline_from_tree(
    tree: dict[str, Any], overrides: list[str], inputs: list[str] | None, where: str = "pipeline"
) -> Pipeline:
    tree = copy.deepcopy(tree)
    unknown = sorted(set(tree) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}")
    stages_tree = tree.get("stages")
    if not isinstance(stages_tree, dict) or not stages_tree:
        raise ConfigError(f"{where}: 'stages' must be a non-empty mapping of stage name to options")
    apply_overrides(tree, [_route_override(o, list(stages_tree)) for o in overrides])

    specs: list[StageSpec] = []
    previous: str | None = None
    for name, options in tree["stages"].items():
        if not isinstance(options, dict) or "kind" not in options:
            raise ConfigError(f"{where}: stage {name!r} needs a 'kind'")
        options = dict(options)
        kind = options.pop("kind")
        after = options.pop("after", previous)
        cls = stage_class(kind)
        if cls.is_source:
            if specs:
                raise ConfigError(f"{where}: source stage {name!r} ({kind}) must come first")
            after = None
        elif after is None:
            if specs:
                raise ConfigError(f"{where}: stage {name!r} has no upstream stage")
            # A first stage that is not a source reads the pipeline's input Parquet files.
        elif after not in {s.name for s in specs}:
            raise ConfigError(f"{where}: stage {name!r} runs after unknown or later stage {after!r}")
        config = build_config(cls.Config, options, where=f"{name}")
        specs.append(StageSpec(name=name, kind=kind, after=after, config=config))
        previous = name

    raw_inputs = inputs if inputs else tree.get("input") or []
    if isinstance(raw_inputs, str):
        raw_inputs = [raw_inputs]
    return Pipeline(
        name=str(tree.get("name") or Path(where).stem),
        description=str(tree.get("description") or ""),
        inputs=[str(i) for i in raw_inputs],
        stages=specs,
        ray=build_config(RayOptions, tree.get("ray"), "ray"),
        storage=build_config(StorageOptions, tree.get("storage"), "storage"),
        source_tree=tree,
    )
