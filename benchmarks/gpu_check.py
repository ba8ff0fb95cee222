"""The one prepared script for a lent GPU machine (H100/H200): measures what only a GPU can.

Each job runs in its own process (a clean peak-memory counter; an out-of-memory error costs one
row, not the run), in priority order, inside a wall-clock budget:

  embed          the embedding quality scorer (MiniLM-L6, `SentenceEncoder`) against the
                 sentence-transformers `encode` path it replaced, same 20k documents; plus the
                 scorer's tokenizer alone and its model alone, to say where the time goes; then
                 on documents it has not seen (new batch shapes, as in a stage), by default, with
                 memory-efficient attention, with batch widths rounded up to 16, and compiled
  quality_stage  the same scorer through the `quality` stage on a shard of 20k documents, in
                 this process (no Ray)
  quality_ray    the `quality` stage run by the pipeline runner on a local Ray cluster with the
                 GPU (an actor that asks Ray for it, two shards at once), 4 shards of 20k documents; Ray travels
                 unpacked in .raysite, one call earlier (benchmarks/gpu_bundle.py)
  medium_moe     the `medium` preset (1.78B total / 372M active), batch 8 x 2048: tokens/s, MFU,
                 peak memory against the CPU-side estimate, kernel profile of the last steps
  kernels        the expert layer's pieces alone at `medium`'s shapes: gate|up as one grouped
                 GEMM against two, the backward's input gradient likewise, the weight gradient
                 and the forward with K-major operands against the views used now, the slot sum
                 as k gathered adds (the default) against a reduction, and a gate|up weight's
                 AdamW step from its bf16 copy against fp32 weights' casts and fused AdamW
  medium_dense   the dense model with the same active parameters (hidden 4096)
  medium_moe_recompute   `medium` with gate/up recomputed in the backward (less memory)
  medium_moe_fp32_weights  `medium` with fp32 expert weights, cast to bf16 in the forward and
                         the casts kept for the backward (session 10's form), not trained through
                         bf16 copies
  medium_moe_recast      `medium` with fp32 expert weights cast in the forward and again in the
                         backward (session 8's form)
  medium_moe_reduce      `medium` with the slot sums as a gather and a reduction (session 8's
                         form), not k gathered adds
  medium_moe_wgrad_k_major  `medium` with the weight gradients' GEMMs on K-major operand copies
  small_moe, small_dense the `small` preset and its dense twin
  medium_moe_eager       `medium` without torch.compile

Everything is built in place (synthetic token shards, generated documents); results go to
$OUT/gpu.json and the jobs' output to $OUT/gpu.log.

    PYTHONPATH=. python benchmarks/gpu_check.py --out "$OUT" --model-dir .gpu/minilm
    python benchmarks/gpu_check.py --smoke      # a CPU dry run of every job at toy sizes
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

JOBS = ["medium_moe", "kernels", "embed", "quality_stage", "quality_ray", "medium_dense", "medium_moe_recompute",
        "medium_moe_fp32_weights", "medium_moe_recast", "medium_moe_reduce", "medium_moe_wgrad_k_major", "small_moe", "small_dense", "medium_moe_eager"]
WORDS = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her", "she", "there", "been", "one", "all", "we", "their", "has", "would", "when", "if", "so", "no", "will", "more", "also", "who", "can", "its", "out", "into", "time", "only", "new", "some", "could", "these", "two", "may", "first", "then", "do", "any", "like", "my", "now", "over", "such", "our", "man", "me", "even", "most", "made", "after", "well", "where", "just", "through", "water", "world", "system", "market", "research", "school", "public", "report", "data", "energy", "health", "community", "history", "government", "development", "program", "information", "service", "model", "analysis", "design", "students", "process", "policy", "network", "quality", "language", "question", "results", "university", "country", "experience"]


def synthetic_tokens(directory: Path, tokens: int, vocab: int = 50280) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = rng.zipf(1.2, size=tokens).clip(max=vocab - 2).astype(np.uint16)
    data[rng.random(tokens) < 1 / 500] = vocab - 1  # documents of ~500 tokens
    data.tofile(directory / "part-00000-train-000.npy")
    manifest = {"kind": "tokenize", "key": "synthetic", "files": [{"name": "part-00000-train-000.npy", "rows": tokens}],
                "resolved": {"tokenizer": {"dtype": "<u2", "vocab_size": vocab, "eos_id": vocab - 1, "path": "synthetic"}}}
    (directory / "_manifest.json").write_text(json.dumps(manifest))
    return directory


def documents(n: int, seed: int = 0) -> list[str]:
    """n web-like documents of 120-600 words, sentences and paragraphs of common English words."""
    rng = np.random.default_rng(seed)
    out = []
    for length in rng.integers(120, 601, n):
        words = rng.choice(WORDS, size=int(length))
        sentences = [" ".join(words[i : i + 14]).capitalize() + "." for i in range(0, len(words), 14)]
        out.append("\n\n".join(" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)))
    return out


def job_embed(args) -> dict:
    import torch
    from curation.classifiers.encoder import SentenceEncoder, _ragged_in_process

    model_dir = args.model_dir or _default_model()
    texts = documents(200 if args.smoke else 20000)
    encoder = SentenceEncoder(model_dir, 256, tokenizer_processes=2 if args.smoke else None)
    result = {"documents": len(texts), "fast_path": encoder.fast, "batch_tokens": encoder.batch_tokens,
              "tokenizer_processes": encoder.tokenizer_processes}

    def end_to_end() -> tuple[float, list[float], np.ndarray]:
        encoder.embed(texts[:2048])  # warm-up: kernels, allocator, tokenizer processes
        timings = []
        for _ in range(2 if args.smoke else 3):
            _sync(torch)
            start = time.perf_counter()
            vectors = encoder.embed(texts)
            _sync(torch)
            timings.append(time.perf_counter() - start)
        return len(texts) / float(np.median(timings)), timings, vectors

    result["docs_per_s"], result["runs_s"], vectors = end_to_end()
    result["timing"] = encoder.last_timing
    # where the time goes: the tokenizer alone (processes; one thread of Rust threads), the model alone,
    # in the windows and chunks embed() uses
    window = encoder.window_size(len(texts))
    windows = range(0, len(texts), window)
    if encoder.tokenizer_processes:
        pool, _ = encoder._tokenizer_pool()
        size = encoder.chunk_size(window)
        start = time.perf_counter()
        list(pool.map(_ragged_in_process, [texts[s : s + size] for s in range(0, len(texts), size)]))
        result["tokenize_processes_docs_per_s"] = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    batches = [b for s in windows for b in encoder.batcher.batches(texts[s : s + window], s)]
    result["tokenize_one_thread_docs_per_s"] = len(texts) / (time.perf_counter() - start)
    result["padded_tokens"] = int(sum(b[1].size for b in batches))
    result["real_tokens"] = int(sum(int(b[2].sum()) for b in batches))
    batches = [(torch.from_numpy(ids), lengths) for _, ids, lengths in batches]
    with torch.inference_mode():
        _sync(torch)
        start = time.perf_counter()
        for ids, lengths in batches:
            encoder._pool(ids, lengths)
        _sync(torch)
    model_s = time.perf_counter() - start
    result["model_only_docs_per_s"] = len(texts) / model_s
    params = sum(p.numel() for n, p in encoder.model.named_parameters() if "embeddings" not in n)
    result["model_tflops"] = 2 * params * result["real_tokens"] / model_s / 1e12  # matmul FLOPs, attention not counted
    # the path this replaced: sentence-transformers' encode, batch 256, bf16 on GPU
    reference = encoder.st
    reference.encode(texts[:512], batch_size=256, normalize_embeddings=True, show_progress_bar=False)
    _sync(torch)
    start = time.perf_counter()
    baseline = reference.encode(texts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
    _sync(torch)
    result["sentence_transformers_docs_per_s"] = len(texts) / (time.perf_counter() - start)
    result["speedup"] = result["docs_per_s"] / result["sentence_transformers_docs_per_s"]
    fresh_embeddings(args, encoder, model_dir, result)
    encoder.close()
    encoder.tokenizer_processes = 0  # the tokenizer in threads instead of processes, as before
    result["threads_docs_per_s"], result["threads_runs_s"], _ = end_to_end()
    cosine = (vectors * baseline).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(baseline, axis=1))
    result["min_cosine_vs_sentence_transformers"] = float(cosine.min())
    return result


def fresh_embeddings(args, encoder, model_dir: str, result: dict) -> None:
    """End to end on documents the encoder has not seen, as a stage's calls are (the timed runs
    above repeat one set, so their batch shapes are all known by then), by default, with PyTorch's
    memory-efficient attention instead of the one SDPA picks, with batch widths rounded up to 16
    (fewer shapes), and with the model compiled (dynamic shapes); each with where the call's time
    went."""
    import torch
    from curation.classifiers.encoder import SentenceEncoder
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def timed(scorer, seed: int, label: str) -> None:
        texts = documents(200 if args.smoke else 20000, seed=seed)
        try:
            _sync(torch)
            start = time.perf_counter()
            scorer.embed(texts)
            _sync(torch)
            result[f"{label}_docs_per_s"] = len(texts) / (time.perf_counter() - start)
            result[f"{label}_timing"] = scorer.last_timing
        except RuntimeError as exc:  # no such attention kernel here (a CPU smoke run)
            result[f"{label}_error"] = str(exc).splitlines()[0]

    timed(encoder, 1, "fresh")
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        timed(encoder, 2, "fresh_efficient_attention")
    rounded = SentenceEncoder(model_dir, 256, tokenizer_processes=encoder.tokenizer_processes, width_multiple=16)
    rounded.embed(documents(2048, seed=9))  # warm-up: its own tokenizer processes
    timed(rounded, 3, "fresh_width16")
    rounded.close()
    compiled = SentenceEncoder(model_dir, 256, tokenizer_processes=encoder.tokenizer_processes, compile_model=True)
    start = time.perf_counter()
    compiled.embed(documents(2048, seed=10))  # warm-up: the compile, its tokenizer processes
    result["compile_warmup_s"] = round(time.perf_counter() - start, 1)
    timed(compiled, 4, "fresh_compiled")
    compiled.close()


def job_quality_stage(args) -> dict:
    """The embedding scorer through the ``quality`` stage itself (model loading in ``setup``,
    record batches of the size it picks, Parquet in and out) on one shard of 20k documents, in this
    process, without Ray (``quality_ray`` runs it on Ray)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from curation.classifiers.stage import QualityConfig, QualityStage

    from curation.core.stage import ShardTask, StageContext

    model_dir = args.model_dir or _default_model()
    n = 300 if args.smoke else 20000
    with tempfile.TemporaryDirectory() as tmp:
        head = _embedding_head(model_dir, Path(tmp) / "head")
        shard = Path(tmp) / "part-00000.parquet"
        pq.write_table(pa.table({"id": [f"d{i}" for i in range(n)], "text": documents(n, seed=5)}), shard)
        stage = QualityStage(QualityConfig(embedding_model=str(head)))
        ctx = StageContext(run_root=tmp, stage_name="quality", stage_dir=str(Path(tmp) / "out"), key="k")
        ctx.resolved = stage.resolve([str(shard)], ctx)
        start = time.perf_counter()
        stage.ensure_setup(ctx)  # models load once (a Ray actor's start); run_shard then reuses them
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        receipt = stage.run_shard(ShardTask(0, "part-00000", [str(shard)]), ctx)
        seconds = time.perf_counter() - start
        scored = pq.read_table(Path(tmp) / "out" / "part-00000.parquet", columns=["quality_embedding"]).column(0)
        encoder = stage.models["embedding"].encoder
        return {"documents": n, "setup_s": round(setup_s, 2), "shard_s": round(seconds, 2),
                "docs_per_s": n / seconds, "batch_size": stage.batch_size, "scored": scored.length() - scored.null_count,
                "docs_out": receipt.stats.docs_out, "last_timing": encoder.last_timing,
                "tokenizer_processes": encoder.tokenizer_processes}


def _embedding_head(model_dir: str, directory: Path) -> Path:
    """An embedding-head model directory over ``model_dir`` with random head weights (the scores'
    values do not matter for a rate)."""
    import dataclasses

    from curation.classifiers.models import EmbeddingRecipe

    hidden = json.loads((Path(model_dir) / "config.json").read_text())["hidden_size"]
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(directory / "head.npz", weights=rng.normal(size=hidden).astype(np.float32), bias=np.zeros(1, np.float32))
    recipe = dataclasses.asdict(EmbeddingRecipe(model=model_dir, stack=False))
    (directory / "card.json").write_text(json.dumps({"kind": "embedding", "recipe": recipe}))
    return directory


def job_quality_ray(args) -> dict:
    """The issue's end-to-end path: the ``quality`` stage run by the pipeline runner on a local Ray
    cluster with the machine's GPU, the stage's actor asking Ray for it and scoring two shards at
    once, over 4 shards of 20k documents. Ray travels unpacked in ``.raysite`` (``benchmarks/gpu_bundle.py``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import torch

    from curation.core.pipeline import pipeline_from_tree
    from curation.core.runner import Runner

    # registers `quality`: the checkout is not installed on the GPU machine, so the stages' entry
    # points are not there for the runner to find it by
    importlib.import_module("curation.classifiers.stage")
    model_dir = args.model_dir or _default_model()
    n, shards = (300, 2) if args.smoke else (20000, 4)
    with tempfile.TemporaryDirectory() as tmp:
        head = _embedding_head(model_dir, Path(tmp) / "head")
        inputs = []
        for i in range(shards):
            path = Path(tmp) / "in" / f"part-{i:05d}.parquet"
            path.parent.mkdir(exist_ok=True)
            pq.write_table(pa.table({"id": [f"s{i}d{j}" for j in range(n)], "text": documents(n, seed=20 + i)}), path)
            inputs.append(str(path))
        ray.init(num_cpus=os.cpu_count(), num_gpus=torch.cuda.device_count(), include_dashboard=False,
                 logging_level="ERROR")
        tree = {"name": "q", "stages": {"quality": {"kind": "quality", "embedding_model": str(head)}}}
        start = time.perf_counter()
        outcome = Runner(pipeline_from_tree(tree, [], None), str(Path(tmp) / "out"), echo=lambda m: None,
                         flat=True).run(inputs)[0]
        seconds = time.perf_counter() - start
        paths = sorted((Path(tmp) / "out" / "_receipts").glob("*.json"))
        receipts = [(json.loads(p.read_text()), p.stat().st_mtime) for p in paths]  # written as a shard ends
        ray.shutdown()
    shard_s = [r["stats"]["seconds"] for r, _ in receipts]
    # from the first shard's start to the last one's end: the actor's start and model load left out
    # (the stage runs two shards at once on a GPU, so shard times overlap)
    span = max(end for _, end in receipts) - min(end - r["stats"]["seconds"] for r, end in receipts)
    return {"documents": n * shards, "shards": shards, "docs_out": sum(r["stats"]["docs_out"] for r, _ in receipts),
            "wall_s": round(seconds, 2), "docs_per_s": n * shards / seconds, "shard_s": shard_s,
            "shards_span_s": round(span, 2), "shards_docs_per_s": n * shards / span, "stage_seconds": outcome.seconds,
            "gpus": torch.cuda.device_count(), "ray": ray.__version__, "ray_path": os.path.dirname(ray.__file__)}


def job_train(args, preset: str, model: dict, compile: bool = True) -> dict:
    import torch

    from curation.trainer.accounting import estimate_memory
    from curation.trainer.train import PRESETS, build_train_config, train

    base = PRESETS[preset]
    batch = base["batch_size"] if not args.smoke else 2
    overrides = {"log_every": 5, "checkpoint_every": 0, "profile_steps": 3, "batch_size": batch, "model": dict(model),
                 "compile": compile}
    if args.smoke:
        moe = model.get("n_experts", 64) > 1
        overrides["model"].update(d_model=64, n_layers=2, n_heads=4, seq_len=64, expert_hidden=32 if moe else 256,
                                  n_experts=8 if moe else 1, top_k=2 if moe else 1)
        overrides["compile"] = False
    steps = 10 if args.smoke else args.steps
    seq = overrides["model"].get("seq_len", base["model"]["seq_len"])
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_tokens(Path(tmp) / "tok", steps * batch * seq + 4 * seq + 1)
        summary = train(str(data), str(Path(tmp) / "run"), preset, steps * batch * seq, overrides)
        metrics = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        profile = (Path(tmp) / "run" / "profile.txt").read_text() if (Path(tmp) / "run" / "profile.txt").is_file() else ""
    steady = metrics[2:-1] or metrics  # skip compile + warm-up windows and the profiled last window
    config = build_train_config(preset, 50280, overrides)
    estimate = estimate_memory(config.model, config.batch_size)
    result = {
        "preset": preset, "model_overrides": model, "batch_size": batch, "parameters": summary["parameters"],
        "tokens_per_s": float(np.median([m["tokens_per_s"] for m in steady])),
        "mfu": float(np.median([m["mfu"] for m in steady])) if steady[0]["mfu"] is not None else None,
        "peak_memory_gb": metrics[-1]["peak_memory_gb"],
        "estimated_peak_gb": round(estimate["peak"] / 1e9, 2),
        "estimated_memory_gb": {k: round(v / 1e9, 2) for k, v in estimate.items()},
        "final_loss": metrics[-1]["loss"], "windows": [round(m["tokens_per_s"]) for m in metrics],
        "profile_top": profile.splitlines()[:90],
    }
    if torch.cuda.is_available():
        result["reserved_memory_gb"] = torch.cuda.max_memory_reserved() / 1e9
    return result


def job_kernels(args) -> dict:
    """The expert layer's pieces at `medium`'s shapes, alone, to decide between variants: gate and
    up as one grouped GEMM of width 2*Hd (the landed form) against two of Hd, for the forward and
    for the backward's input gradient; the slot sum as k gathered adds (landed) against a reduction."""
    import torch
    import torch.nn.functional as F

    from curation.trainer.model import _sum_token_slots, _sum_token_slots_gather_add, _weight_gradient

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    T, D, E, k, Hd = (16384, 1024, 64, 8, 512) if not args.smoke else (256, 64, 8, 2, 32)
    generator = torch.Generator(device=device).manual_seed(0)
    experts = torch.randint(0, E, (T * k,), device=device, generator=generator)
    order = experts.argsort(stable=True)
    counts = torch.zeros(E, dtype=torch.long, device=device).scatter_add_(0, experts, torch.ones_like(experts))
    offsets = counts.cumsum(0).to(torch.int32)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    xs = torch.randn(T * k, D, device=device, dtype=dtype)
    w_gate, w_up = (torch.randn(E, D, Hd, device=device, dtype=dtype) * 0.02 for _ in range(2))
    w_both = torch.cat([w_gate, w_up], dim=-1)
    d_gate, d_up = (torch.randn(T * k, Hd, device=device, dtype=dtype) for _ in range(2))
    d_both = torch.cat([d_gate, d_up], dim=-1)
    out = torch.randn(T * k, D, device=device, dtype=dtype)
    xs_t, d_both_t = xs.t().contiguous(), d_both.t().contiguous()  # (D, T*k), (2*Hd, T*k): K-major operands
    w_both_k = w_both.transpose(-2, -1).contiguous()  # (E, 2*Hd, D)
    reduction = torch.compile(_sum_token_slots, dynamic=False)
    gather_add = torch.compile(_sum_token_slots_gather_add, dynamic=False)

    def timed(fn, repeats: int = 2 if args.smoke else 20) -> float:
        fn()
        _sync(torch)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(torch)
        return (time.perf_counter() - start) / repeats * 1e3

    result = {
        "shapes": {"T": T, "D": D, "E": E, "k": k, "Hd": Hd}, "device": device,
        "gate_up_two_gemms_ms": timed(lambda: (F.grouped_mm(xs, w_gate, offs=offsets), F.grouped_mm(xs, w_up, offs=offsets))),
        "gate_up_one_gemm_ms": timed(lambda: F.grouped_mm(xs, w_both, offs=offsets)),
        "dx_two_gemms_and_add_ms": timed(lambda: reduction(inverse, k, F.grouped_mm(d_gate, w_gate.transpose(-2, -1), offs=offsets)
                                                          + F.grouped_mm(d_up, w_up.transpose(-2, -1), offs=offsets))),
        "dx_one_gemm_ms": timed(lambda: reduction(inverse, k, F.grouped_mm(d_both, w_both.transpose(-2, -1), offs=offsets))),
        # The weight gradients are 2d x 2d grouped GEMMs (offsets along K). In session 8's profile
        # one cutlass kernel ran 3 calls a layer at 0.40 ms (about 35% of peak, against 56% for the
        # others): likely these, whose operands are both MN-major views. Their K-major forms, and
        # what the transposed copies cost, decide whether the backward should write them so.
        "wgrad_gate_up_ms": timed(lambda: _weight_gradient(xs, d_both, offsets, k_major=False)),
        "wgrad_gate_up_k_major_ms": timed(lambda: F.grouped_mm(xs_t, d_both_t.t(), offs=offsets)),
        "wgrad_transposed_copies_ms": timed(lambda: (xs.t().contiguous(), d_both.t().contiguous())),
        # the forward's gate|up with the weights K-major, as the cast could write them at no cost
        "gate_up_one_gemm_k_major_weights_ms": timed(lambda: F.grouped_mm(xs, w_both_k.transpose(-2, -1), offs=offsets)),
        "slot_sum_reduction_ms": timed(lambda: reduction(inverse, k, out)),
        "slot_sum_gather_add_ms": timed(lambda: gather_add(inverse, k, out)),
    }
    # the bytes a slot sum must move, for its bandwidth: k rows read and one written per token
    result["slot_sum_gb"] = (T * k * D + T * D) * out.element_size() / 1e9
    result.update(optimizer_kernels(torch, (E, D, 2 * Hd), timed))
    agree = (reduction(inverse, k, out).float() - gather_add(inverse, k, out).float()).abs().max()
    result["slot_sum_max_difference"] = float(agree)
    wgrad = _weight_gradient(xs, d_both, offsets, k_major=False).float()  # the model's two forms
    result["wgrad_k_major_max_relative_difference"] = float(
        (wgrad - _weight_gradient(xs, d_both, offsets, k_major=True).float()).abs().max() / wgrad.abs().max())
    fprop = F.grouped_mm(xs, w_both, offs=offsets).float()
    result["gate_up_k_major_max_relative_difference"] = float(
        (fprop - F.grouped_mm(xs, w_both_k.transpose(-2, -1), offs=offsets).float()).abs().max() / fprop.abs().max())
    return result


def optimizer_kernels(torch, shape: tuple[int, ...], timed) -> dict:
    """One layer's gate|up weight (``shape``) through a step: the compiled AdamW from a bf16 copy's
    gradient that rewrites the copy (``bf16_expert_weights``), against what fp32 weights cost (the
    gradient's cast to fp32, the fused AdamW, the next forward's cast to bf16), with the bandwidth
    each reaches at 28 and 40 bytes a parameter."""
    from curation.trainer.train import adamw_step_from_copy

    device = "cuda" if torch.cuda.is_available() else "cpu"
    weight = torch.randn(shape, device=device) * 0.02
    copy, grad = weight.to(torch.bfloat16), torch.randn(shape, device=device).to(torch.bfloat16)
    moments = [torch.zeros_like(weight) for _ in range(4)]
    step, fused_step = torch.zeros((), device=device), torch.zeros((), device=device)
    lr, scale = torch.full((), 1e-4, device=device), torch.ones((), device=device)
    update = torch.compile(adamw_step_from_copy, dynamic=False)

    def through_copy():
        with torch.no_grad():
            update(weight, copy, grad, moments[0], moments[1], step, lr, scale, 0.9, 0.95, 0.1, 1e-8)

    def casts_and_fused_adamw():
        torch._fused_adamw_([weight], [grad.float()], [moments[2]], [moments[3]], [], [fused_step], lr=1e-4, beta1=0.9,
                            beta2=0.95, weight_decay=0.1, eps=1e-8, amsgrad=False, maximize=False, grad_scale=scale)
        copy.copy_(weight)

    out = {"adamw_from_bf16_copy_ms": timed(through_copy), "adamw_fp32_with_casts_ms": timed(casts_and_fused_adamw)}
    parameters = weight.numel()
    out["adamw_from_bf16_copy_gb_per_s"] = 28 * parameters / out["adamw_from_bf16_copy_ms"] / 1e6
    out["adamw_fp32_with_casts_gb_per_s"] = 40 * parameters / out["adamw_fp32_with_casts_ms"] / 1e6
    return out


MEDIUM_DENSE = {"n_experts": 1, "top_k": 1, "expert_hidden": 4096}
SMALL_DENSE = {"n_experts": 1, "top_k": 1, "expert_hidden": 2048}


def run_job(name: str, args) -> dict:
    if name == "embed":
        return job_embed(args)
    if name == "quality_stage":
        return job_quality_stage(args)
    if name == "quality_ray":
        return job_quality_ray(args)
    if name == "kernels":
        return job_kernels(args)
    preset, _, variant = name.partition("_")
    model = {"moe": {}, "moe_eager": {}, "dense": MEDIUM_DENSE if preset == "medium" else SMALL_DENSE,
             "moe_recompute": {"recompute_experts": True}, "moe_fp32_weights": {"bf16_expert_weights": False},
             "moe_recast": {"bf16_expert_weights": False, "keep_expert_casts": False},
             "moe_reduce": {"slot_sum": "reduce"}, "moe_wgrad_k_major": {"wgrad_k_major": True}}[variant]
    return job_train(args, preset, model, compile=variant != "moe_eager")


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _default_model() -> str:
    from curation.classifiers.models import default_embedding_model

    return default_embedding_model()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--budget", type=float, default=420, help="seconds; jobs not started by then are skipped")
    parser.add_argument("--job-timeout", type=float, default=170)
    parser.add_argument("--jobs", nargs="+", default=JOBS, choices=JOBS)
    parser.add_argument("--model-dir", help="a local sentence-transformers directory (default: the packaged MiniLM)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, runs on a CPU")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:  # child process: one job, one JSON line
        print("RESULT " + json.dumps(run_job(args.job, args)), flush=True)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "jobs": {}}
    try:
        import torch

        results["torch"] = torch.__version__
        results["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        pass
    start = time.perf_counter()
    with (out / "gpu.log").open("w") as log:
        for name in args.jobs:
            if time.perf_counter() - start > args.budget:
                results["jobs"][name] = {"skipped": "over the time budget"}
                continue
            command = [sys.executable, __file__, "--job", name, "--steps", str(args.steps)]
            command += ["--model-dir", args.model_dir] if args.model_dir else []
            command += ["--smoke"] if args.smoke else []
            job_start = time.perf_counter()
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.job_timeout)
                output, code = done.stdout + done.stderr, done.returncode
            except subprocess.TimeoutExpired as exc:
                output, code = f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out", -1
                output = output if isinstance(output, str) else str(output)
            log.write(f"=== {name} (exit {code}, {time.perf_counter() - job_start:.0f} s)\n{output}\n")
            log.flush()
            lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
            results["jobs"][name] = json.loads(lines[-1][7:]) if lines else {"error": output.strip().splitlines()[-3:]}
            results["jobs"][name]["seconds"] = round(time.perf_counter() - job_start, 1)
            (out / "gpu.json").write_text(json.dumps(results, indent=1))
            print(name, json.dumps({k: v for k, v in results["jobs"][name].items() if k != "profile_top"}), flush=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=1))
    try:  # where each training job's step time went, by kind of work (also runnable later, without a GPU)
        import gpu_profile_summary

        gpu_profile_summary.main([str(out / "gpu.json")])
    except Exception as exc:  # the JSON is what matters; the summary is a reading aid
        print(f"profile summary failed: {exc!r}")


if __name__ == "__main__":
    main()
