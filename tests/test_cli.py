"""Bad configuration gets one clear error line, not a traceback."""

from __future__ import annotations

import pytest
from conftest import run_curate


def _one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("curate: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "no_such_pipeline"], "unknown pipeline 'no_such_pipeline'"),
        (["run", "dclm_baseline", "--set", "nostage.x=1"], "no stage or section named 'nostage'"),
        (["run", "dclm_baseline", "--set", "extract.max_payload_bytes=lots"], "extract.max_payload_bytes"),
        (["run", "dclm_baseline", "--set", "extract.no_such_option=1"], "unknown option(s) no_such_option"),
        (["run", "dclm_baseline", "--set", "select.score=null", "--set", "select.top_percent=10"], "needs 'score'"),
        (["run", "dclm_baseline", "--set", "filter.steps.extra={type: nope}"], "unknown type 'nope'"),
        (["run", "dclm_baseline", "--input", "/no/such/file.warc.gz"], "input not found: /no/such/file.warc.gz"),
        (["stats", "/no/such/run"], "run not found"),
    ],
)
def test_bad_configuration_is_one_line(args, expected, tmp_path):
    if args[0] == "run":
        args = [*args, "--output", str(tmp_path / "run")]
    line = _one_line_error(run_curate(args, check=False))
    assert expected in line


def test_unknown_stage_kind_in_yaml(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\ninput: [demo]\nstages:\n  x: {kind: frobnicate}\n")
    line = _one_line_error(run_curate(["run", str(pipeline), "--output", str(tmp_path / "r")], check=False))
    assert "unknown stage kind 'frobnicate'" in line


def test_help_explains_each_command():
    for command in ("run", "stats", "status", "extract", "filter", "tokenize"):
        out = run_curate([command, "--help"])
        assert "usage: curate " + command in out.stdout
        assert len(out.stdout.splitlines()) > 5
