from __future__ import annotations

import pytest

from curation.core.config import apply_overrides, expand_env
from curation.core.errors import ConfigError
from curation.core.pipeline import load_pipeline


def test_dotted_overrides_are_typed():
    pipeline = load_pipeline("dclm_baseline", ["extract.max_payload_bytes=1000", "ray.num_cpus=2",
                                               "select.where=language = 'en'"])
    assert pipeline.stage("extract").config.max_payload_bytes == 1000
    assert pipeline.ray.num_cpus == 2
    assert pipeline.stage("select").config.where == "language = 'en'"


def test_filter_thresholds_come_from_yaml():
    pipeline = load_pipeline("dclm_baseline")
    steps = pipeline.stage("filter").config.steps
    assert steps["page_length"] == {"min_words": 50, "max_words": 100000, "ignore_punctuation": True}
    assert steps["language"]["min_score"] == 0.65
    assert steps["word_removal_ratio"]["max_fraction"] == 0.05
    assert list(steps)[:5] == ["url_blocklist", "url_removal", "newline_runs", "language", "page_length"]  # run order


def test_one_filter_threshold_is_reachable_from_the_command_line():
    from curation.filters.heuristics import build_steps

    pipeline = load_pipeline("dclm_baseline", ["filter.steps.page_length.min_words=120",
                                               "filter.steps.url_blocklist=null"])
    steps = {step.name: step for step in build_steps(pipeline.stage("filter").config.steps)}
    assert steps["page_length"].config.min_words == 120
    assert steps["page_length"].config.max_words == 100000  # the rest of the step is untouched
    assert "url_blocklist" not in steps


def test_a_step_without_its_threshold_is_a_config_error():
    with pytest.raises(ConfigError, match=r"filter\.steps\.page_length"):
        load_pipeline("dclm_baseline", ["filter.steps.page_length={min_words: 5}"])


def test_wrong_type_names_the_field():
    with pytest.raises(ConfigError, match=r"^extract\.language_id"):
        load_pipeline("dclm_baseline", ["extract.language_id=[1, 2]"])


def test_apply_overrides_creates_levels():
    assert apply_overrides({}, ["a.b.c=3"]) == {"a": {"b": {"c": 3}}}
    with pytest.raises(ConfigError):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("CURATION_TEST_X", "/data")
    assert expand_env("${CURATION_TEST_X}/t.json") == "/data/t.json"
    assert expand_env("${CURATION_TEST_UNSET:-/d}/t") == "/d/t"
    with pytest.raises(ConfigError):
        expand_env("${CURATION_TEST_UNSET}")
