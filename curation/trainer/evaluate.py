"""Evaluation of a trained run: validation loss and bits per byte, and likelihood (RC) scoring of
multiple-choice tasks from llm-foundry JSONL files.

RC scoring: each choice is scored by the summed log-probability of its tokens given the query
(``query`` + " " + choice); the prediction is the best choice (``accuracy``) or the best per
character (``accuracy_per_char``); ``mean_logprob_correct`` averages the correct choice's
log-probability, a smoother signal than accuracy at small scale. WinoGrande-style records
(``context_options`` + ``continuation``) score the continuation after each option.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_TASKS = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "commonsense_qa", "siqa"]


def load_model(run: str | Path, device: str | None = None):
    from curation.trainer.model import ModelConfig, MoETransformer

    run = Path(run)
    config = json.loads((run / "config.json").read_text())
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = MoETransformer(ModelConfig(**config["train"]["model"])).to(device)
    state = torch.load(run / "checkpoint.pt", map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config


def make_logprob_fn(model, tokenizer, device: str, vocab_limit: int | None = None) -> Callable[[list[tuple[str, str]]], list[float]]:
    """log P(continuation | context) for each pair, in batches, left-truncating long contexts."""
    seq_len = model.c.seq_len
    limit = vocab_limit or model.c.vocab_size

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), 16):
            chunk = pairs[start : start + 16]
            rows, spans = [], []
            for context, continuation in chunk:
                ctx = tokenizer.encode(context, add_special_tokens=False).ids
                cont = tokenizer.encode(continuation, add_special_tokens=False).ids[: seq_len]
                ids = (ctx + cont)[-(seq_len + 1) :]
                rows.append(ids)
                spans.append(len(cont))
            width = max(len(r) for r in rows)
            x = torch.zeros(len(rows), width - 1, dtype=torch.long)
            y = torch.full((len(rows), width - 1), -100, dtype=torch.long)
            for i, ids in enumerate(rows):
                t = torch.tensor(ids).clamp_(max=limit - 1)
                x[i, : len(ids) - 1] = t[:-1]
                y[i, len(ids) - 1 - spans[i] : len(ids) - 1] = t[len(ids) - spans[i] :]
            with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(x.to(device))["logits"].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            target = y.to(device)
            gathered = logprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (target != -100)
            out += gathered.sum(-1).tolist()
        return out

    return score


def rc_task(path: str | Path, logprob: Callable[[list[tuple[str, str]]], list[float]], limit: int | None = None) -> dict[str, Any]:
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()][:limit]
    pairs, groups = [], []
    for record in records:
        if "context_options" in record:
            options = [(c, " " + record["continuation"]) for c in record["context_options"]]
        elif "choices" in record and "query" in record:
            options = [(record["query"], " " + choice) for choice in record["choices"]]
        else:
            continue
        groups.append((len(pairs), len(options), int(record["gold"]), [len(o[1]) for o in options]))
        pairs += options
    if not groups:
        return {"examples": 0}
    scores = logprob(pairs)
    correct = correct_per_char = 0
    gold_logprobs = []
    for start, count, gold, lengths in groups:
        values = np.array(scores[start : start + count])
        correct += int(np.argmax(values) == gold)
        correct_per_char += int(np.argmax(values / np.array(lengths)) == gold)
        gold_logprobs.append(values[gold])
    n = len(groups)
    return {"examples": n, "accuracy": correct / n, "accuracy_per_char": correct_per_char / n,
            "mean_logprob_correct": float(np.mean(gold_logprobs))}


def loss_and_bpb(model, windows: list[np.ndarray], tokenizer, device: str) -> dict[str, float]:
    """Mean CE (nats/token) and bits per byte over (S+1)-token windows (bytes of the real text;
    with a vocab_limit the collapsed ids are scored as one class)."""
    nats, tokens, text_bytes = 0.0, 0, 0
    for start in range(0, len(windows), 8):
        raw = torch.from_numpy(np.stack(windows[start : start + 8]).astype(np.int64))
        batch = raw.clamp(max=model.c.vocab_size - 1)
        x, y = batch[:, :-1].to(device), batch[:, 1:].to(device)
        with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(x)["logits"].float()
        nats += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
        tokens += y.numel()
        text_bytes += sum(len(tokenizer.decode(row.tolist()).encode("utf-8")) for row in raw[:, 1:])
    return {"loss": nats / max(tokens, 1), "bits_per_byte": nats / math.log(2) / max(text_bytes, 1), "tokens": tokens}


def evaluate(run: str | Path, tasks: list[str] | None = None, data_dir: str | Path | None = None,
             limit: int | None = 500, max_windows: int = 64) -> dict[str, Any]:
    from curation.core.config import resolve_data_path
    from curation.tokenize.shards import load_text_tokenizer
    from curation.trainer.data import TokenStream, load_data

    model, config = load_model(run)
    device = next(model.parameters()).device.type
    # As the tokenize stage reads document text: a special token's text in an eval item is text.
    tokenizer = load_text_tokenizer(config["tokenizer"])
    results: dict[str, Any] = {"run": str(run), "validation": {}, "tasks": {}}
    seq_len = model.c.seq_len
    data = Path(config["data"])
    token_dirs = [data] if not (data / "mix.json").is_file() else sorted(
        {Path(s["file"]).parent for s in json.loads((data / "mix.json").read_text())["spans"]})
    for directory in token_dirs:
        try:
            stream = TokenStream(load_data(directory, split="validation"), seq_len)
        except Exception:  # no validation split in this output
            continue
        windows = [stream.raw_window(i) for i in range(min(len(stream), max_windows))]
        if windows:
            results["validation"][directory.name if directory.name != "tokenize" else directory.parent.name] = \
                loss_and_bpb(model, windows, tokenizer, device)
    reference = Path(resolve_data_path("${CURATION_DATA:-../shared/data}/hq_reference/wikitext-2_valid.txt"))
    if reference.is_file():
        ids = np.array(tokenizer.encode(reference.read_text()[:400_000], add_special_tokens=False).ids, dtype=np.int64)
        windows = [ids[i : i + seq_len + 1] for i in range(0, len(ids) - seq_len - 1, seq_len)][:max_windows]
        results["validation"]["wikitext_reference"] = loss_and_bpb(model, windows, tokenizer, device)
    eval_dir = Path(resolve_data_path("${CURATION_DATA:-../shared/data}/eval"))
    logprob = make_logprob_fn(model, tokenizer, device)
    for task in tasks or DEFAULT_TASKS:
        path = eval_dir / "llm-foundry" / f"{task}.jsonl"
        if task == "hellaswag":
            path = eval_dir / "hellaswag_val1000.jsonl"
        if not path.is_file():
            results["tasks"][task] = {"error": f"not found: {path}"}
            continue
        results["tasks"][task] = rc_task(path, logprob, limit)
    Path(run, "eval.json").write_text(json.dumps(results, indent=1))
    return results
