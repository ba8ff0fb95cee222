"""The ``curate`` command line.

    curate run PIPELINE [--input ...] [--output RUN] [--set key=value ...] [--address ...]
    curate stats RUN ["SQL"]
    curate status RUN
    curate extract --input PATHS --output DIR
    curate filter --input DIR --output DIR
    curate dedup --input DOCS --output DIR [--method minhash|bff] [--threshold 0.8] [--ngram 5] [--num-perm N]
    curate tokenize --input DOCS --tokenizer PATH --output DIR
    curate classify train --positives PATHS --negatives PATHS --output MODEL_DIR [--kind fasttext|embedding]
    curate classify score --model MODEL_DIR --input DOCS --output DIR
    curate classify eval --model MODEL_DIR --labels LABELLED.jsonl [--plot ROC.png]
    curate train --data MIX_OR_SHARDS --preset tiny|small [--max-tokens N] [--output RUN]
    curate eval --run RUN [--tasks ...];  curate ablate MIX... --preset tiny --max-tokens N --seeds K
    curate mix SPEC --output DIR;  curate publish MIX --to DIR|s3://...;  curate verify BUNDLE

Configuration errors are reported as one line (``curate: error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from curation.core.errors import ConfigError, CurationError

EPILOG = ("Run `curate COMMAND --help` for the options of each command. `--verbose` anywhere on the line lets "
          "Ray's own log lines (worker output, backend notices) through.")


DOCUMENT_INPUTS = ("JSONL(.gz/.zst/.bz2/.xz), Parquet or Arrow documents (files, globs, folders, s3://, https://, "
                   "@LISTING), a Hugging Face dataset folder (save_to_disk), or a curate output folder")


def _add_common_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value with a dotted key, e.g. filter.steps.page_length.min_words=80 "
                             "or ray.num_cpus=2; repeatable")
    parser.add_argument("--text-field", help="the text field of JSONL / Parquet / Arrow documents (default: text)")
    parser.add_argument("--id-field", help="the id field of JSONL / Parquet / Arrow documents (default: id; missing ids are derived)")
    parser.add_argument("--strict", action="store_true",
                        help="the first bad record is an error (file, line, reason) instead of a counted rejection")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (e.g. auto, ray://head:10001); default: RAY_ADDRESS or a local Ray")
    parser.add_argument("--endpoint-url", default=None, help="S3 endpoint (MinIO, moto, Ceph); credentials come from AWS_* / ~/.aws")
    parser.add_argument("--input-base", default=None, metavar="URL",
                        help="where the relative entries of an --input @LISTING are (e.g. https://data.commoncrawl.org/ "
                             "for Common Crawl's warc.paths.gz); default: the listing's folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curate",
        description="Turn raw web crawl into a DCLM-style pretraining mix with staged Ray pipelines.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline (a DAG of stages) end to end",
                         description="Run a pipeline from pipelines/*.yaml (or a YAML path). Finished stages "
                                     "whose config, code and input are unchanged are skipped; a killed run "
                                     "resumes and redoes only unfinished shards.")
    run.add_argument("pipeline", help="pipeline name (e.g. dclm_baseline) or path to a YAML file")
    run.add_argument("--input", nargs="+", default=None,
                     help="input files: local paths, globs, directories, s3://, https://, @LISTING (a file naming one "
                          "input per line) (default: the pipeline's; 'demo' writes the bundled demo crawl)")
    run.add_argument("--output", default=None, help="run directory, local or s3:// (default: runs/<pipeline>)")
    _add_common_run_options(run)

    stats = sub.add_parser("stats", help="print a run's funnel, or run DuckDB SQL over it",
                           description="Without SQL: the funnel (documents in and out per stage, with reasons) "
                                       "and the path of its plot. With SQL: DuckDB over views named after each "
                                       "stage, plus `stats` (per-shard) and `reasons` (stage, shard, kind, reason, count).")
    stats.add_argument("run", help="run directory (local or s3://)")
    stats.add_argument("sql", nargs="?", default=None, help='e.g. "SELECT language, count(*) FROM extract GROUP BY 1"')
    stats.add_argument("--format", choices=["table", "csv", "json"], default="table")
    stats.add_argument("--plots", action="store_true",
                       help="also write PNG plots: tokens per language and domain, document length, score "
                            "distributions by source (RUN/plots/), or tokens per source for a mix directory")
    stats.add_argument("--endpoint-url", default=None)

    status = sub.add_parser("status", help="show which stages and shards of a run are done",
                            description="Per stage: finished (manifest written), shards committed out of planned.")
    status.add_argument("run", help="run directory (local or s3://)")
    status.add_argument("--endpoint-url", default=None)

    extract = sub.add_parser("extract", help="extract text and language from WARC/WET/ARC/JSONL/Parquet/Arrow",
                             description="Write Parquet shards (id, url, text, language, language_score, ...) to DIR, "
                                         "one per input file.")
    extract.add_argument("--input", nargs="+", required=True,
                         help="input files, globs, directories, s3://, https://, @LISTING (one input per line)")
    extract.add_argument("--output", required=True, help="output directory")
    _add_common_run_options(extract)

    filt = sub.add_parser("filter", help="add DCLM-Baseline heuristic filter columns",
                          description="Read documents (Parquet, e.g. from `curate extract`) and write them with "
                                      "<step>_keep / score columns, filter_keep and filter_reason.")
    filt.add_argument("--input", nargs="+", required=True, help=DOCUMENT_INPUTS)
    filt.add_argument("--output", required=True, help="output directory")
    _add_common_run_options(filt)

    tok = sub.add_parser("tokenize", help="tokenize documents into memory-mapped token shards",
                         description="Write <shard>.npy token files (headerless, EOS after each document) and a "
                                     "Parquet index (id, file, start, end, num_tokens, attributes).")
    tok.add_argument("--input", nargs="+", required=True, help=DOCUMENT_INPUTS)
    tok.add_argument("--tokenizer", required=True, help="path to a tokenizer.json")
    tok.add_argument("--output", required=True, help="output directory")
    _add_common_run_options(tok)
    dedup = sub.add_parser("dedup", help="global exact + MinHash LSH deduplication, or DCLM's BFF (attributes)",
                           description="Cluster near-duplicates of DOCS (JSONL or Parquet with id and text) globally on "
                                       "Ray and write Parquet with every input column (the text and id fields named text and id) "
                                       "plus cluster_id, cluster_size and "
                                       "is_duplicate (one keeper per cluster). --method bff does DCLM-Baseline's "
                                       "paragraph + document dedup instead: text without the paragraphs seen before, "
                                       "bff_keep, bff_removed_paragraphs, bff_contained_ngrams.")
    dedup.add_argument("--input", nargs="+", required=True, help=DOCUMENT_INPUTS)
    dedup.add_argument("--output", required=True, help="output directory")
    dedup.add_argument("--method", choices=["minhash", "bff"], default="minhash",
                       help="minhash (default): global clusters; bff: DCLM's Bloom-filter paragraph + document dedup")
    dedup.add_argument("--threshold", type=float, help="minhash: target Jaccard similarity of n-gram sets (0.8); "
                                                       "bff: share of n-grams seen before (0.8)")
    dedup.add_argument("--ngram", type=int, help="n-gram size in words (default: the stage's, 5 for minhash, 13 for bff)")
    dedup.add_argument("--num-perm", type=int, help="MinHash permutations (default: the stage's, 128)")
    _add_common_run_options(dedup)

    classify = sub.add_parser("classify", help="train quality classifiers, or score documents with one",
                              description="`curate classify train` trains a fastText or embedding classifier on "
                                          "high-quality references (positives) against web text (negatives) and writes "
                                          "the model with its card; `curate classify score` adds a score column.")
    classify_sub = classify.add_subparsers(dest="classify_command", metavar="ACTION")
    train = classify_sub.add_parser("train", help="train a classifier and write MODEL_DIR (weights + card)",
                                    description="Inputs: JSONL/JSON/Parquet with a text field, or plain text files with "
                                                "one document per blank-line-separated paragraph. A held-out split "
                                                "gives the card's ROC AUC and precision at the kept fraction.")
    train.add_argument("--positives", nargs="+", required=True, help="high-quality reference files (globs allowed)")
    train.add_argument("--negatives", nargs="+", required=True, help="negative files, e.g. raw web text")
    train.add_argument("--output", required=True, help="model directory (local, or s3://: trained locally, then uploaded)")
    train.add_argument("--kind", choices=["fasttext", "embedding"], default="fasttext")
    train.add_argument("--max-per-class", type=int, help="default: the quality stage's training default")
    train.add_argument("--heldout-fraction", type=float, help="default: the quality stage's training default")
    train.add_argument("--seed", type=int, help="default: the quality stage's training default")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="recipe options, e.g. epoch=10 or lr=0.05 (fastText); c=0.5 (embedding head)")
    train.add_argument("--endpoint-url", default=None, help="S3 endpoint when --output is in a bucket")
    score = classify_sub.add_parser("score", help="score documents: Parquet with id and score",
                                    description="Adds `score` (and quality_<kind>) to every document of DOCS "
                                                "(JSONL, Parquet or Arrow with id and text).")
    score.add_argument("--model", required=True, help="model directory from `classify train` (local or s3://), or a local HF checkpoint")
    score.add_argument("--input", nargs="+", required=True, help=DOCUMENT_INPUTS)
    score.add_argument("--output", required=True)
    _add_common_run_options(score)
    evaluate = classify_sub.add_parser(
        "eval", help="how well a model agrees with human quality labels (ROC AUC, precision, calibration)",
        description="Scores human-labelled documents (JSONL/JSON/Parquet with text and label, 1 = high quality, "
                    "or graded) and "
                    "prints ROC AUC, precision among the top 10%% and 30%%, accuracy at the model's threshold and a "
                    "calibration table; the figures are stored in the model's card under the labels file's name.")
    evaluate.add_argument("--model", required=True, help="model directory from `classify train` (local or s3://: its card is updated there), or a local HF checkpoint")
    evaluate.add_argument("--labels", nargs="+", required=True,
                          help="labelled documents, files or globs, each measured and recorded apart "
                               "(e.g. '../shared/data/quality_dev/*.jsonl')")
    evaluate.add_argument("--plot", metavar="PNG", help="write the ROC curve and per-label score histograms here")
    evaluate.add_argument("--text-field", default="text")
    evaluate.add_argument("--label-field", default="label")
    evaluate.add_argument("--label-threshold", type=float, default=None,
                          help="graded labels (a 0-5 rating, a share of annotators) count as high quality from here "
                               "up (default: the middle of their range); the Spearman correlation with the grades is "
                               "printed too")
    evaluate.add_argument("--endpoint-url", default=None, help="S3 endpoint for a model in a bucket")

    train = sub.add_parser("train", help="train the bundled MoE (OLMoE-style) on a mix or token shards",
                           description="Reads a mix directory (mix.json) or a tokenize output over memory-mapped "
                                       "shards; resumes from RUN/checkpoint.pt; logs to RUN/metrics.jsonl and .parquet.")
    train.add_argument("--data", required=True, help="mix directory or tokenize output directory")
    train.add_argument("--preset", default="tiny", help="tiny (CPU, minutes), tiny_dense, small (one GPU)")
    train.add_argument("--max-tokens", type=int, default=None)
    train.add_argument("--output", default=None, help="run directory (default: runs/train-<preset>)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="e.g. lr=1e-3, batch_size=16, model.n_experts=8")

    evaluation = sub.add_parser("eval", help="validation loss / bits per byte and RC multiple-choice scoring of a run",
                                description="Writes RUN/eval.json: loss and bits per byte on validation splits and "
                                            "WikiText, accuracy and mean log-probability of the correct answer per task.")
    evaluation.add_argument("--run", required=True)
    evaluation.add_argument("--tasks", nargs="+", default=None, help="llm-foundry task names (default: 7 MC tasks)")
    evaluation.add_argument("--limit", type=int, help="examples per task (default 500)")

    ablate = sub.add_parser("ablate", help="train and evaluate every mix with identical settings and seeds",
                            description="Writes RUN/experiments.parquet (queryable with curate stats) and RUN/plots/ "
                                        "(loss curves, evaluation).")
    ablate.add_argument("mixes", nargs="+", help="mix directories (or tokenize outputs)")
    ablate.add_argument("--preset", help="trainer preset (default tiny)")
    ablate.add_argument("--max-tokens", type=int, help="tokens per training run")
    ablate.add_argument("--seeds", type=int, help="training seeds per mix")
    ablate.add_argument("--output", default="runs/ablation")
    ablate.add_argument("--tasks", nargs="+", default=None)
    ablate.add_argument("--limit", type=int, help="examples per task")

    mix = sub.add_parser("mix", help="resolve a mix spec (YAML) into file spans over token shards",
                         description="Sources are SQL filters over token-shard indexes (quantile thresholds allowed) "
                                     "with weights or token targets and a maximum repetition; DuckDB resolves them "
                                     "into mix.json (file, start, end, repeat spans) and documents.parquet, without "
                                     "re-tokenizing. Prints the proportions achieved.")
    mix.add_argument("spec", help="mix spec YAML")
    mix.add_argument("--output", required=True, help="mix directory")
    mix.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    mix.add_argument("--endpoint-url", default=None)

    publish = sub.add_parser("publish", help="publish a mix as a checksummed bundle with a dataset card",
                             description="Copy the token files, metadata and indexes a mix uses, the stage manifests, "
                                         "mix.json and a README dataset card to DIR or s3://, with SHA256SUMS written last.")
    publish.add_argument("mix", help="mix directory (from curate mix)")
    publish.add_argument("--to", required=True, help="bundle directory or s3:// prefix")
    publish.add_argument("--endpoint-url", default=None)

    verify = sub.add_parser("verify", help="re-check every checksum of a published bundle",
                            description="Exit 0 when every file matches SHA256SUMS and nothing is missing or unlisted; "
                                        "1 otherwise, naming each bad file.")
    verify.add_argument("bundle", help="bundle directory or s3:// prefix")
    verify.add_argument("--endpoint-url", default=None)
    return parser


# -- commands ----------------------------------------------------------------------------------
def _storage_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(getattr(args, "overrides", []) or [])
    if getattr(args, "endpoint_url", None):
        overrides.append(f"storage.endpoint_url={args.endpoint_url}")
    if getattr(args, "address", None):
        overrides.append(f"ray.address={args.address}")
    return overrides


def _given(**values: Any) -> dict[str, Any]:
    """Only the options the user gave: the library's own defaults apply to the rest."""
    return {key: value for key, value in values.items() if value is not None}


def _storage(args: argparse.Namespace):
    from curation.core import io as fio

    return fio.Storage(endpoint_url=getattr(args, "endpoint_url", None))


def _execute(pipeline, run_root: str, inputs: list[str], flat: bool = False) -> list[Any]:
    from curation.core.runner import Runner

    runner = Runner(pipeline, run_root, echo=_echo, flat=flat)
    return runner.run(inputs)


def _echo(message: str) -> None:
    print(message, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from curation.core import io as fio
    from curation.core.pipeline import load_pipeline, pipeline_from_tree
    from curation.ingest.inputs import resolve_inputs, with_documents_stage

    pipeline = load_pipeline(args.pipeline, _storage_overrides(args))
    first = pipeline.stages[0]
    first_is_source = first.build().is_source
    reader = _reader_options(args)
    if first_is_source and reader:  # the source stage reads JSONL / Parquet itself (extract)
        pipeline = load_pipeline(args.pipeline, _storage_overrides(args) + [f"{first.name}.{k}={v}" for k, v in reader.items()])
    run_root = fio.normalize_root(args.output or os.path.join("runs", pipeline.name))
    storage = pipeline.storage.to_storage()
    patterns = args.input or pipeline.inputs
    if not patterns:
        raise CurationError(f"pipeline {pipeline.name!r} names no input; pass --input")
    started = time.perf_counter()
    inputs = resolve_inputs(patterns, run_root, storage, args.input_base)
    stages = with_documents_stage(pipeline.source_tree["stages"], first_is_source, inputs, storage, reader)
    if len(stages) != len(pipeline.stages):
        pipeline = pipeline_from_tree({**pipeline.source_tree, "stages": stages}, [], None, where=args.pipeline)
    _echo(f"curate: running {pipeline.name} on {len(inputs)} input file(s) -> {run_root}")
    _execute(pipeline, run_root, inputs)
    print_summary(run_root, storage, time.perf_counter() - started)
    return 0


def _reader_options(args: argparse.Namespace) -> dict[str, Any]:
    options = _given(text_field=args.text_field, id_field=args.id_field)
    return {**options, "strict": True} if args.strict else options


def _single_stage(args: argparse.Namespace, kind: str, options: dict[str, Any]) -> int:
    """One stage's command: its output at --output; documents it reads (JSONL, foreign Parquet)
    go through the ``documents`` reader first, kept at OUTPUT/_input."""
    from curation.core import io as fio
    from curation.core.pipeline import pipeline_from_tree
    from curation.core.stage import stage_class
    from curation.ingest.inputs import resolve_inputs, with_documents_stage

    run_root = fio.normalize_root(args.output)
    source = stage_class(kind).is_source
    reader = _reader_options(args)
    stages = {kind: {"kind": kind, **options, **(reader if source else {})}}
    probe = pipeline_from_tree({"name": kind, "stages": stages}, _storage_overrides(args), None, where=kind)
    storage = probe.storage.to_storage()
    inputs = resolve_inputs(args.input, run_root, storage, getattr(args, "input_base", None))
    stages = with_documents_stage(stages, source, inputs, storage, reader)
    pipeline = pipeline_from_tree({"name": kind, "stages": stages}, _storage_overrides(args), None, where=kind)
    started = time.perf_counter()
    _execute(pipeline, run_root, inputs, flat=True)
    print_summary(run_root, storage, time.perf_counter() - started, plot=False)
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    return _single_stage(args, "extract", {})


def cmd_filter(args: argparse.Namespace) -> int:
    from curation.filters.heuristics import dclm_baseline_filter_config

    return _single_stage(args, "heuristic_filter", {"steps": dclm_baseline_filter_config().steps})


def cmd_dedup(args: argparse.Namespace) -> int:
    if args.method == "bff":
        if args.num_perm is not None:
            raise ConfigError("--num-perm is MinHash's; --method bff has no permutations")
        return _single_stage(args, "bff_dedup", _given(threshold=args.threshold, ngram=args.ngram, min_ngram=args.ngram))
    options = {**_given(threshold=args.threshold, ngram=args.ngram, num_perm=args.num_perm), "url": False}
    return _single_stage(args, "dedup", options)


def cmd_tokenize(args: argparse.Namespace) -> int:
    return _single_stage(args, "tokenize", {"tokenizer": args.tokenizer})


def print_summary(run_root: str, storage, seconds: float, plot: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    from curation.core import io as fio
    from curation.core.stats import discover, funnel, plot_funnel

    console = Console(width=120)
    stages = discover(run_root, storage)
    table = Table(title=f"run {run_root}  ({seconds:.1f}s)")
    for column in ("stage", "kind", "docs in", "docs out", "MB in", "MB out", "dropped / flagged (top reasons)"):
        table.add_column(column, justify="right" if column.startswith(("docs", "MB")) else "left")
    tokens = 0
    for stage in stages:
        if stage.manifest is None:
            table.add_row(stage.name, "-", "-", "-", "-", "-", "not finished")
            continue
        t = stage.manifest["totals"]
        reasons = {**{f"{k}": v for k, v in t.get("dropped", {}).items()},
                   **{f"~{k}": v for k, v in t.get("flagged", {}).items()}}
        top = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
        tokens += int(t.get("extra", {}).get("tokens", 0))
        table.add_row(stage.name, stage.manifest["kind"], f"{t['docs_in']:,}", f"{t['docs_out']:,}",
                      f"{t['bytes_in'] / 1e6:.1f}", f"{t['bytes_out'] / 1e6:.1f}", top)
    console.print(table)
    console.print("(~reason: flagged as an attribute; removed by `select`)")
    for stage in stages:
        resolved = (stage.manifest or {}).get("resolved") or {}
        if resolved:
            console.print(f"{stage.name} resolved: {_compact(resolved)}", highlight=False)
    if tokens:
        console.print(f"tokens written: {tokens:,}")
    from curation.classifiers.report import format_distribution, plot_distribution, score_distribution

    scores = score_distribution(run_root, storage)
    if scores:
        console.print(format_distribution(scores), highlight=False)
    console.print(f"outputs: {run_root}/<stage>/  (query: curate stats {run_root} \"SELECT ...\")")
    if plot and len(stages) > 1:
        from curation.core.plots import run_plots

        if scores and (kept_dropped := plot_distribution(run_root, storage)):
            print(f"plot: {kept_dropped}", flush=True)
        path = plot_funnel(funnel(stages), fio.join(run_root, "plots", "funnel.png"),
                           f"funnel: {run_root.rsplit('/', 1)[-1]}", storage)
        print(f"funnel plot: {path}", flush=True)
        for other in run_plots(run_root, storage):  # tokens by language/domain, lengths, scores by source
            print(f"plot: {other}", flush=True)


def _compact(value: Any, limit: int = 300) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_compact(v, 80)}" for k, v in value.items())
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cmd_stats(args: argparse.Namespace) -> int:
    from curation.core import io as fio
    from curation.core.stats import query

    storage = _storage(args)
    if fio.exists(fio.join(fio.normalize_root(args.run), "mix.json"), storage):
        return _mix_stats(args, storage)
    if args.sql is None:
        print_summary(args.run, storage, 0.0, plot=args.plots)
        from curation.core.stats import discover, funnel

        for step in funnel(discover(args.run, storage)):
            print(f"  {step.documents:>10,}  {step.label}  {step.note}")
        return 0
    if args.plots:
        from curation.core.plots import run_plots

        for path in run_plots(args.run, storage):
            print(f"plot: {path}")
    table = query(args.run, args.sql, storage)
    _print_table(table, args.format)
    return 0


def _print_table(table, fmt: str) -> None:
    if fmt == "json":
        for row in table.to_pylist():
            print(json.dumps(row, default=_json_value))
        return
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
        return
    from rich.console import Console
    from rich.table import Table

    out = Table()
    for name in table.schema.names:
        out.add_column(name)
    for row in table.to_pylist():
        out.add_row(*("" if v is None else str(v) for v in row.values()))
    Console(width=160).print(out)


def _mix_stats(args: argparse.Namespace, storage) -> int:
    """A mix directory: per-source summary, SQL over `documents` (one row per selected document)."""
    import duckdb

    from curation.core import io as fio

    root = fio.normalize_root(args.run)
    mix = json.loads(fio.read_bytes(fio.join(root, "mix.json"), storage))
    if args.plots:
        from curation.core.plots import mix_plots

        for path in mix_plots(root, storage):
            print(f"plot: {path}")
    if args.sql is None:
        print(f"mix {mix['name']}: {mix['total_tokens']:,} tokens, {len(mix['spans']):,} spans")
        for s in mix["sources"]:
            print(f"  {s['name']:<20} {s['achieved_tokens']:>14,} tokens  {s['proportion']:7.2%}  repetition {s['repetition']:.2f}")
        return 0
    connection = duckdb.connect()
    if not fio.is_local(root):
        connection.register_filesystem(fio.filesystem(root, storage)[0])
    connection.execute(f"CREATE VIEW documents AS SELECT * FROM read_parquet('{fio.join(root, 'documents.parquet')}')")
    try:
        relation = connection.sql(args.sql)
    except duckdb.Error as exc:
        raise CurationError(f"SQL error: {exc}") from None
    _print_table(relation.to_arrow_table(), args.format)
    return 0


def _json_value(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):  # DuckDB's sum() over integers is a HUGEINT, i.e. a decimal
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def cmd_status(args: argparse.Namespace) -> int:
    from curation.core.progress import stage_status
    from curation.core.stats import discover

    storage = _storage(args)
    for stage in discover(args.run, storage):
        print(f"{stage.name:<12} {stage_status(stage, storage)}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:

    from curation.core import io as fio

    if args.classify_command == "train":
        from curation.classifiers.models import train_classifier
        from curation.classifiers.references import expand, read_texts, split_references
        from curation.classifiers.stage import QualityTrainConfig
        from curation.core.config import apply_overrides

        defaults = QualityTrainConfig()  # the same training defaults as the quality stage's
        for name in ("max_per_class", "heldout_fraction", "seed"):
            if getattr(args, name) is None:
                setattr(args, name, getattr(defaults, name))
        positives = [t for path in expand(args.positives) for t in read_texts(path)]
        negatives = [t for path in expand(args.negatives) for t in read_texts(path)]
        split = split_references(positives, negatives, args.heldout_fraction, args.seed, args.max_per_class, min_words=10)
        recipe = apply_overrides({}, args.overrides)
        if args.kind == "fasttext":
            recipe.setdefault("seed", args.seed)
        sources = {"positives": args.positives, "negatives": args.negatives}
        if fio.is_local(args.output):
            card = train_classifier(args.kind, split, args.output, sources, recipe)
        else:  # trained on local disk, then each file uploaded whole
            with tempfile.TemporaryDirectory() as local:
                card = train_classifier(args.kind, split, local, sources, recipe)
                fio.put_directory(local, args.output, _storage(args))
        sizes = ", ".join(f"{k} {v['documents']:,}" for k, v in card["data"].items())
        metrics = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in card["metrics"].items())
        print(f"trained {args.kind} in {card['train_seconds']}s on {sizes}\nheld-out: {metrics}")
        if card.get("stack"):
            stack = card["stack"]
            print(f"stacked on {stack['documents']} human-labelled documents ({', '.join(stack['labels'])}): "
                  f"ROC AUC {stack['cv_roc_auc_mean']:.4f} ± {stack['cv_roc_auc_sd']:.4f} ({stack['cv']})")
        elif args.kind == "embedding" and card["recipe"].get("stack"):
            print(f"warning: no human-labelled documents at {', '.join(card['recipe']['stack_labels'])}, so the "
                  "embedding head is not stacked; alone it ranks people's quality labels far worse than fastText "
                  "(BENCHMARKS, issue 11). Set CURATION_DATA or --set 'stack_labels=[FILE]'.", file=sys.stderr)
        print(f"model: {args.output}")
        return 0
    if args.classify_command == "score":
        model = fio.normalize_root(args.model)
        card_path, storage = fio.join(model, "card.json"), _storage(args)
        kind = json.loads(fio.read_bytes(card_path, storage))["kind"] if fio.exists(card_path, storage) else "hf"
        options = {"fasttext_model" if kind == "fasttext" else "embedding_model": model, "score_alias": "score"}
        return _single_stage(args, "quality", options)
    if args.classify_command == "eval":
        from curation.classifiers.card import read_card
        from curation.classifiers.evaluate import (
            binary_labels,
            format_metrics,
            human_label_metrics,
            label_files,
            labels_digest,
            plot_evaluation,
            read_grades,
            record_evaluation,
        )
        from curation.classifiers.models import load_classifier

        files = label_files(args.labels)
        if not files:
            raise CurationError(f"no labelled file matches {' '.join(args.labels)}")
        storage = _storage(args)
        model = fio.local_copy(args.model, storage)  # a remote model is read from the local cache
        threshold = read_card(model).get("threshold", 0.5) if os.path.isfile(os.path.join(model, "card.json")) else 0.5
        classifier = load_classifier(model)
        remote = not fio.is_local(args.model)
        with tempfile.TemporaryDirectory() as staging:
            card_dir = staging if remote else model
            if remote:  # the card (and its README) updated beside the cache for every labels file
                for name in ("card.json", "human_eval.json"):
                    if os.path.isfile(os.path.join(model, name)):
                        shutil.copyfile(os.path.join(model, name), os.path.join(staging, name))
            for labels_path in files:
                texts, grades = read_grades(labels_path, args.text_field, args.label_field)
                labels, cut = binary_labels(grades, args.label_threshold, labels_path)
                scores = classifier.score(texts)
                metrics = human_label_metrics(scores, labels, threshold, grades=None if cut is None else grades,
                                              label_threshold=cut)
                print(f"{args.model} on {labels_path}\n{format_metrics(metrics)}")
                written = record_evaluation(card_dir, labels_path, labels_digest(texts, labels), metrics)
                if remote:  # written back whole, holding every labels file recorded so far
                    fio.put_directory(staging, args.model, storage)
                print(f"recorded in {fio.join(args.model, written.name) if remote else written}")
                if args.plot:  # one plot a labels file: PLOT-<labels>.png when there are several
                    stem = os.path.splitext(os.path.basename(labels_path))[0]
                    plot = args.plot if len(files) == 1 else f"{os.path.splitext(args.plot)[0]}-{stem}.png"
                    plot_evaluation(scores, labels, plot, f"{os.path.basename(os.path.normpath(args.model))} on "
                                                          f"{os.path.basename(labels_path)}")
                    print(f"plot: {plot}")
        return 0
    raise CurationError("curate classify needs an action: train, score or eval (see curate classify --help)")


def cmd_train(args: argparse.Namespace) -> int:
    from curation.core.config import apply_overrides
    from curation.trainer.train import train

    overrides = apply_overrides({}, args.overrides)
    output = args.output or os.path.join("runs", f"train-{args.preset}")
    result = train(args.data, output, args.preset, args.max_tokens, overrides)
    print(f"trained {result['steps']} steps -> {result['output']} (metrics.jsonl, metrics.parquet, checkpoint.pt)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from curation.trainer.evaluate import evaluate

    results = evaluate(args.run, args.tasks, **_given(limit=args.limit))
    for name, values in results["validation"].items():
        print(f"validation {name:<24} loss {values['loss']:.4f}  bits/byte {values['bits_per_byte']:.4f}")
    for task, values in results["tasks"].items():
        if "accuracy" in values:
            print(f"task {task:<18} acc {values['accuracy']:.3f}  acc/char {values['accuracy_per_char']:.3f}  "
                  f"logprob(correct) {values['mean_logprob_correct']:.3f}  ({values['examples']} examples)")
        else:
            print(f"task {task:<18} {values.get('error', 'no scorable examples')}")
    print(f"-> {args.run}/eval.json")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from curation.trainer.ablate import ablate

    table = ablate(args.mixes, args.output, tasks=args.tasks,
                   **_given(preset=args.preset, max_tokens=args.max_tokens, seeds=args.seeds, limit=args.limit))
    _print_table(table.drop_columns([c for c in ("run", "mix_sources") if c in table.schema.names]), "table")
    print(f"-> {args.output}/experiments.parquet, {args.output}/plots/")
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    from curation.tokenize.mix import load_mix_spec, resolve_mix, write_mix

    storage = _storage(args)
    spec = load_mix_spec(args.spec, args.overrides)
    mix = resolve_mix(spec, storage)
    path = write_mix(mix, args.output, storage)
    print(f"mix {spec.name}: {mix['total_tokens']:,} tokens in {len(mix['spans']):,} spans -> {path}")
    for s in mix["sources"]:
        capped = "  (capped by max_repetition)" if s["capped_by_max_repetition"] else ""
        print(f"  {s['name']:<20} {s['achieved_tokens']:>14,} tokens  {s['proportion']:7.2%} (requested "
              f"{s['requested_proportion']:.2%})  repetition {s['repetition']:.2f}  from {s['documents']:,} docs{capped}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from curation.tokenize.publish import publish

    result = publish(args.mix, args.to, _storage(args))
    print(f"published {result['tokens']:,} tokens, {result['files']} files -> {result['bundle']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from curation.tokenize.publish import verify

    result = verify(args.bundle, _storage(args))
    for name in result.mismatched:
        print(f"MISMATCH  {name}")
    for name in result.missing:
        print(f"MISSING   {name}")
    for name in result.unlisted:
        print(f"UNLISTED  {name}")
    print(f"{'OK' if result.ok else 'FAILED'}: {result.checked} files checked")
    return 0 if result.ok else 1


COMMANDS = {
    "run": cmd_run, "stats": cmd_stats, "status": cmd_status,
    "extract": cmd_extract, "filter": cmd_filter, "dedup": cmd_dedup, "tokenize": cmd_tokenize,
    "mix": cmd_mix, "publish": cmd_publish, "verify": cmd_verify, "classify": cmd_classify,
    "train": cmd_train, "eval": cmd_eval, "ablate": cmd_ablate,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:  # anywhere on the line: Ray's own log lines reach the console too
        argv.remove("--verbose")
        os.environ["CURATION_VERBOSE"] = "1"
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except CurationError as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        cause = _user_error_inside(exc)
        if cause is None:
            raise
        print(f"curate: error: {cause}", file=sys.stderr)
        return 2


def _user_error_inside(exc: BaseException) -> CurationError | None:
    """A CurationError raised inside a Ray worker arrives wrapped; report it as one line."""
    import re

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, CurationError):
            return current
        # Ray Data keeps only the text of an exception raised in a UDF: find ours in it
        found = re.findall(r"^curation\.[\w.]+(?:Error|Record): (.+)$", str(current), re.M)
        if found:
            return CurationError(found[-1])
        current = getattr(current, "cause", None) or current.__cause__
        seen += 1
    return None


if __name__ == "__main__":
    sys.exit(main())
