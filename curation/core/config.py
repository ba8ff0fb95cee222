"""Typed dataclass configs loaded from YAML with dotted CLI overrides (as OLMo-core).

Validation uses pydantic's ``TypeAdapter`` over plain stdlib dataclasses, in strict mode for
scalars, so a wrong type is reported as one line naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from curation.core.errors import ConfigError

T = TypeVar("T")

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in a string."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (referenced as ${{{name}}})")

    return _ENV_PATTERN.sub(replace, value)


def resolve_data_path(pattern: str) -> str:
    """Expand ``${VAR}``; a relative path (or glob) that matches nothing from the working
    directory is taken relative to the checkout root, where pipeline defaults point
    (e.g. ``../shared/data``)."""
    import glob

    pattern = expand_env(pattern)
    if os.path.isabs(pattern) or "://" in pattern or glob.glob(pattern, recursive=True):
        return pattern
    from curation.core.layout import checkout_root

    root = checkout_root()
    return str(root / pattern) if root is not None else pattern


def _expand_env_tree(value: Any) -> Any:
    if isinstance(value, str):
        return expand_env(value)
    if isinstance(value, list):
        return [_expand_env_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand_env_tree(v) for k, v in value.items()}
    return value


def parse_override_value(text: str) -> Any:
    """Parse the value side of ``--set key=value`` as YAML (so 0.5, true, [a, b] work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict, creating levels as needed."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        key, raw = override.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {override!r} has an empty key")
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = parse_override_value(raw)
    return tree


def build_config(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Build and validate dataclass ``cls`` from a mapping; unknown keys are errors."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return pydantic.TypeAdapter(cls).validate_python(values, strict=False)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.{loc}: {first['msg']} (got {first.get('input')!r})") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON rendering: the identity of a config."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return _expand_env_tree(tree)
