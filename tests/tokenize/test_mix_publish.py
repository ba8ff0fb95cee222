"""Mixes resolve to the requested proportions; bundles verify, and a flipped byte is caught;
decontamination flags documents that quote evaluation sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_curate


@pytest.fixture(scope="module")
def token_run(tmp_path_factory, shared_data):
    """A small run through the default pipeline up to tokens (shared by the tests here)."""
    from curation.ingest.demo_crawl import DemoCrawl, DemoCrawlConfig

    base = tmp_path_factory.mktemp("mixrun")
    crawl = DemoCrawl(DemoCrawlConfig(pages=600, files=3, seed=11)).write(str(base / "crawl"))
    run = base / "run"
    # Keep every selected document (no top-10% cut) so the mixes have enough tokens to proportion.
    run_curate(["run", "dclm_baseline", "--input", *crawl, "--output", str(run),
                "--set", "select.score=null", "--set", "select.top_percent=null"])
    return run


def _spec(tmp_path: Path, run: Path, **extra) -> Path:
    spec = {
        "name": "test_mix", "max_repetition": 3, "seed": 1,
        "sources": [
            {"name": "long", "index": str(run / "tokenize"), "where": "num_tokens >= 400", "weight": 0.6},
            {"name": "short", "index": str(run / "tokenize"), "where": "num_tokens < 400", "weight": 0.4},
        ],
        **extra,
    }
    path = tmp_path / "mix.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("total", [None, 150_000, 900_000])
def test_mix_reaches_requested_proportions(token_run, tmp_path, total):
    extra = {} if total is None else {"total_tokens": total}
    out = tmp_path / "mix"
    printed = run_curate(["mix", str(_spec(tmp_path, token_run, **extra)), "--output", str(out)]).stdout
    mix = json.loads((out / "mix.json").read_text())
    shares = {s["name"]: s["proportion"] for s in mix["sources"]}
    if not any(s["capped_by_max_repetition"] for s in mix["sources"]):
        assert abs(shares["long"] - 0.6) < 0.01 and abs(shares["short"] - 0.4) < 0.01
        if total:
            assert abs(mix["total_tokens"] - total) / total < 0.01
    assert "requested 60.00%" in printed
    # Spans add up to the tokens claimed and stay inside their files.
    assert sum((s["end"] - s["start"]) * s["repeat"] for s in mix["spans"]) == mix["total_tokens"]
    for span in mix["spans"]:
        size = Path(span["file"]).stat().st_size // 2
        assert 0 <= span["start"] < span["end"] <= size
    documents = pq.read_table(out / "documents.parquet")
    assert set(documents.column("source").to_pylist()) == {"long", "short"}
    if total == 900_000:  # more than the shards hold: repetition, capped at 3
        assert all(s["repetition"] > 1 for s in mix["sources"])
        assert all(s["repetition"] <= 3 + 1e-9 for s in mix["sources"])


def test_mix_top_percent_by_quantile(token_run, tmp_path):
    spec = {"name": "top", "sources": [{"name": "top", "index": str(token_run / "tokenize"), "score": "num_tokens",
                                         "top_percent": 20, "weight": 1.0}]}
    import yaml

    (tmp_path / "top.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "top"
    run_curate(["mix", str(tmp_path / "top.yaml"), "--output", str(out)])
    chosen = pq.read_table(out / "documents.parquet").column("num_tokens").to_numpy()
    index = pa.concat_tables([pq.read_table(p) for p in sorted((token_run / "tokenize").glob("part-?????.parquet"))])
    everything = index.filter(pa.compute.equal(index.column("split"), "train")).column("num_tokens").to_numpy()
    assert abs(len(chosen) / len(everything) - 0.2) < 0.03
    assert chosen.min() >= np.quantile(everything, 0.8, method="lower")


def test_publish_verify_and_flipped_byte(token_run, tmp_path):
    out = tmp_path / "mix"
    run_curate(["mix", str(_spec(tmp_path, token_run)), "--output", str(out)])
    bundle = tmp_path / "bundle"
    run_curate(["publish", str(out), "--to", str(bundle)])
    card = (bundle / "README.md").read_text()
    assert "## Sources" in card and "Filter funnel" in card and "Decontamination" in card and "## License" in card
    assert "### Paragraph and page dedup (DCLM's BFF)" in card and "pages removed whole" in card
    ok = run_curate(["verify", str(bundle)])
    assert ok.stdout.strip().endswith("files checked") and ok.stdout.startswith("OK")
    mix = json.loads((bundle / "mix.json").read_text())
    assert all(not s["file"].startswith("/") for s in mix["spans"])  # bundle-relative
    token_file = next(bundle.glob("data/*/*.npy"))
    data = bytearray(token_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    token_file.write_bytes(bytes(data))
    bad = run_curate(["verify", str(bundle)], check=False)
    assert bad.returncode == 1
    assert f"MISMATCH  {token_file.relative_to(bundle)}" in bad.stdout


@pytest.mark.slow
def test_publish_to_s3_without_credentials_in_bundle(token_run, tmp_path, s3_endpoint):
    import s3fs

    endpoint, env = s3_endpoint
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    fs.mkdir("bundles")
    out = tmp_path / "mix"
    run_curate(["mix", str(_spec(tmp_path, token_run)), "--output", str(out)], env=env)
    published = run_curate(["publish", str(out), "--to", "s3://bundles/demo", "--endpoint-url", endpoint], env=env)
    verified = run_curate(["verify", "s3://bundles/demo", "--endpoint-url", endpoint], env=env)
    assert verified.stdout.startswith("OK")
    for key in fs.find("bundles/demo"):
        body = fs.cat_file(key)
        for secret in (env["AWS_SECRET_ACCESS_KEY"], env["AWS_ACCESS_KEY_ID"]):
            assert secret.encode() not in body, key
    for text in (published.stdout + published.stderr, verified.stdout + verified.stderr):
        assert env["AWS_SECRET_ACCESS_KEY"] not in text


def test_stats_plots_for_run_and_mix(token_run, tmp_path):
    printed = run_curate(["stats", str(token_run), "--plots"]).stdout
    for name in ("tokens_by_language", "tokens_by_domain", "document_length", "scores_by_source"):
        path = token_run / "plots" / f"{name}.png"
        assert f"plot: {path}" in printed and path.stat().st_size > 5000
    out = tmp_path / "mix"
    run_curate(["mix", str(_spec(tmp_path, token_run)), "--output", str(out)])
    printed = run_curate(["stats", str(out), "--plots"]).stdout
    assert (out / "plots" / "tokens_by_source.png").is_file() and "long" in printed
    rows = run_curate(["stats", str(out), "SELECT source, sum(num_tokens * repeat) AS t FROM documents GROUP BY 1 ORDER BY 1",
                       "--format", "json"]).stdout.strip().splitlines()
    mix = json.loads((out / "mix.json").read_text())
    assert {json.loads(r)["source"]: json.loads(r)["t"] for r in rows} == {s["name"]: s["achieved_tokens"] for s in mix["sources"]}


@pytest.mark.parametrize(("change", "message"), [
    ({"sources[1].name": "long"}, "unique; repeated: long"),
    ({"sources[0].weight": 0}, "weight must be positive"),
    ({"sources[0].top_percent": 0, "sources[0].score": "quality"}, "top_percent must be in"),
    ({"sources[0].top_percent": 150, "sources[0].score": "quality"}, "top_percent must be in"),
    ({"sources[0].tokens": -5}, "tokens must be positive"),
    ({"max_repetition": 0}, "max_repetition must be positive"),
    ({"total_tokens": 0}, "total_tokens must be positive"),
])
def test_mix_spec_rejects_what_cannot_be_mixed(tmp_path, change, message):
    import yaml
    from curation.tokenize.mix import load_mix_spec

    from curation.core.errors import ConfigError

    spec = yaml.safe_load(_spec(tmp_path, tmp_path / "run").read_text())
    for key, value in change.items():
        if key.startswith("sources["):
            position, option = int(key[8]), key.split(".", 1)[1]
            spec["sources"][position][option] = value
        else:
            spec[key] = value
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_mix_spec(str(tmp_path / "bad.yaml"))


def test_a_split_is_a_value_not_sql(token_run, tmp_path):
    """A split name with a quote selects the documents of that split (none here), not a SQL error;
    one that would widen the predicate if spliced in selects nothing either."""
    import yaml
    from curation.tokenize.mix import load_mix_spec, resolve_mix

    from curation.core.errors import ConfigError, CurationError

    for split in ["it's", "x' OR '1'='1"]:
        spec = yaml.safe_load(_spec(tmp_path, token_run).read_text())
        spec["sources"][0]["split"] = split
        (tmp_path / "split.yaml").write_text(yaml.safe_dump(spec))
        with pytest.raises(CurationError, match="mix source long selects no tokens") as raised:
            resolve_mix(load_mix_spec(str(tmp_path / "split.yaml")))
        assert not isinstance(raised.value, ConfigError)
    spec["sources"][0]["split"] = "train"
    (tmp_path / "split.yaml").write_text(yaml.safe_dump(spec))
    assert resolve_mix(load_mix_spec(str(tmp_path / "split.yaml")))["total_tokens"] > 0
