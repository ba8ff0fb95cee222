"""The bundled MoE trainer: the model's routing and losses, the data reader, resume, RC scoring."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from curation.trainer.model import ModelConfig, MoETransformer

SMALL = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=16, n_experts=4, top_k=2, expert_hidden=16)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = MoETransformer(SMALL)
    x = torch.randint(0, 64, (4, 16))
    y = torch.roll(x, -1, dims=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = model(x, y)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        first = first if first is not None else float(out["ce"].detach())
    assert first > 3.5 and float(out["ce"].detach()) < 0.2


def test_load_balancing_loss_is_one_under_uniform_routing():
    model = MoETransformer(SMALL)
    for block in model.blocks:
        torch.nn.init.zeros_(block.moe.router.weight)  # every expert probability 1/E
    out = model(torch.randint(0, 64, (3, 16)), torch.randint(0, 64, (3, 16)))
    assert float(out["lb"]) == pytest.approx(1.0, abs=1e-6)
    assert float(out["z"]) == pytest.approx(math.log(4) ** 2, rel=1e-6)  # logsumexp of E zeros = log E


def test_z_loss_against_hand_computation():
    model = MoETransformer(SMALL)
    x = torch.randint(0, 64, (2, 16))
    out = model(x, x)
    # Recompute every layer's router logits from its input and average logsumexp^2 by hand.
    hidden = model.embed(x)
    expected = []
    for block in model.blocks:
        h = hidden + block.attn(block.attn_norm(hidden), model.rope_cos, model.rope_sin)
        logits = block.ffn_norm(h).reshape(-1, SMALL.d_model).float() @ block.moe.router.weight.float().T
        expected.append(float(torch.logsumexp(logits, -1).pow(2).mean()))
        y, _ = block.moe(block.ffn_norm(h))
        hidden = h + y
    assert float(out["z"]) == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_dropless_every_token_reaches_k_experts():
    model = MoETransformer(ModelConfig(**{**SMALL.__dict__, "n_experts": 8, "top_k": 3}))
    out = model(torch.randint(0, 64, (5, 16)))
    for stats in out["layer_stats"]:
        experts = stats["experts"]
        assert experts.shape == (5 * 16, 3)
        assert all(len(set(row.tolist())) == 3 for row in experts)  # k distinct experts per token
        assert int(stats["slots_per_expert"].sum()) == 5 * 16 * 3  # no slot dropped


def test_dense_configuration_matches_active_parameters():
    moe = MoETransformer(ModelConfig(**{**SMALL.__dict__, "n_experts": 4, "top_k": 2, "expert_hidden": 16}))
    dense = MoETransformer(ModelConfig(**{**SMALL.__dict__, "n_experts": 1, "top_k": 1, "expert_hidden": 32}))
    router_difference = SMALL.n_layers * SMALL.d_model * 4  # the dense model has no router
    assert moe.parameter_counts()["active"] - dense.parameter_counts()["active"] == router_difference


def _fake_tokenize_output(directory: Path, documents: list[list[int]], eos: int = 63) -> None:
    """A tokenize stage output by hand: one token file, its index and manifest."""
    directory.mkdir(parents=True)
    tokens = np.concatenate([np.array(d + [eos], dtype=np.uint16) for d in documents])
    tokens.tofile(directory / "part-00000-train-000.npy")
    ends = np.cumsum([len(d) + 1 for d in documents])
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(documents))], "start": ends - [len(d) + 1 for d in documents],
                             "end": ends}), directory / "part-00000.parquet")
    manifest = {"kind": "tokenize", "key": "k", "files": [{"name": "part-00000-train-000.npy", "rows": int(len(tokens))},
                                                         {"name": "part-00000.parquet", "rows": len(documents)}],
                "resolved": {"tokenizer": {"dtype": "<u2", "vocab_size": 64, "eos_id": eos, "path": "unused"}}}
    (directory / "_manifest.json").write_text(json.dumps(manifest))


def test_reader_windows_follow_the_stream_and_document_boundaries(tmp_path):
    from curation.trainer.data import TokenStream, load_data

    rng = np.random.default_rng(0)
    documents = [rng.integers(0, 60, size=rng.integers(3, 30)).tolist() for _ in range(40)]
    _fake_tokenize_output(tmp_path / "tok", documents)
    info = load_data(tmp_path / "tok")
    stream = TokenStream(info, seq_len=16)
    flat = np.concatenate([np.array(d + [63]) for d in documents])
    assert stream.total == len(flat)
    for i in range(len(stream)):
        x, y = stream.window(i)
        assert x.tolist() == flat[i * 16 : i * 16 + 16].tolist() and y.tolist() == flat[i * 16 + 1 : i * 16 + 17].tolist()
    # Every document ends with EOS right where the index says it ends.
    index = pq.read_table(tmp_path / "tok" / "part-00000.parquet").to_pylist()
    assert all(flat[r["end"] - 1] == 63 for r in index)
    # A mix span list with repeats expands deterministically.
    mix = tmp_path / "mix"
    mix.mkdir()
    spans = [{"file": str(tmp_path / "tok" / "part-00000-train-000.npy"), "start": index[0]["start"], "end": index[4]["end"],
              "repeat": 2, "source": "a"}]
    (mix / "mix.json").write_text(json.dumps({"name": "m", "total_tokens": 2 * index[4]["end"], "spans": spans}))
    mixed = TokenStream(load_data(mix), seq_len=8)
    assert mixed.total == 2 * index[4]["end"]
    assert mixed._tokens(0, mixed.total).tolist() == flat[: index[4]["end"]].tolist() * 2


def test_resume_gives_the_same_loss_curve(tmp_path):
    from curation.trainer.train import train

    rng = np.random.default_rng(1)
    _fake_tokenize_output(tmp_path / "tok", [rng.integers(0, 60, size=50).tolist() for _ in range(200)])
    settings = {"model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": 32, "n_experts": 4, "top_k": 2,
                          "expert_hidden": 16}, "batch_size": 4, "log_every": 1, "warmup_steps": 3, "checkpoint_every": 1000}
    train(tmp_path / "tok", tmp_path / "straight", "tiny", 24 * 4 * 32, settings, echo=lambda m: None)
    train(tmp_path / "tok", tmp_path / "resumed", "tiny", 24 * 4 * 32, settings, stop_after_steps=11, echo=lambda m: None)
    train(tmp_path / "tok", tmp_path / "resumed", "tiny", 24 * 4 * 32, settings, echo=lambda m: None)

    def curve(run: str) -> list[tuple[int, float]]:
        table = pq.read_table(tmp_path / run / "metrics.parquet")
        return list(zip(table.column("step").to_pylist(), table.column("loss").to_pylist(), strict=True))

    assert len(curve("straight")) == 24
    assert curve("resumed") == curve("straight")


def test_rc_scoring_on_a_hand_made_example(tmp_path):
    from curation.trainer.evaluate import rc_task

    task = tmp_path / "task.jsonl"
    task.write_text("\n".join(json.dumps(r) for r in [
        {"query": "The sky is", "choices": ["blue", "a sandwich"], "gold": 0},
        {"query": "Two plus two is", "choices": ["five", "four"], "gold": 1},
        {"context_options": ["The cat sat", "The dog sat"], "continuation": "and purred.", "gold": 0},
    ]))
    table = {("The sky is", " blue"): -1.0, ("The sky is", " a sandwich"): -9.0,
             ("Two plus two is", " five"): -2.0, ("Two plus two is", " four"): -3.0,
             ("The cat sat", " and purred."): -4.0, ("The dog sat", " and purred."): -6.0}
    result = rc_task(task, lambda pairs: [table[p] for p in pairs])
    assert result["examples"] == 3
    assert result["accuracy"] == pytest.approx(2 / 3)  # the second example is answered wrongly
    assert result["mean_logprob_correct"] == pytest.approx((-1.0 - 3.0 - 4.0) / 3)


def test_checkpoints_with_gate_and_up_apart_still_load():
    """Runs trained before gate and up became one parameter (``w_gate``, ``w_up``) load as they were."""
    torch.manual_seed(13)
    model = MoETransformer(SMALL)
    old = {}
    for name, value in model.state_dict().items():
        if name.endswith("w_gate_up"):
            old[name[: -len("_up")]], old[name.replace("w_gate_up", "w_up")] = value.chunk(2, dim=-1)
        else:
            old[name] = value
    loaded = MoETransformer(SMALL)
    loaded.load_state_dict(old)
    x = torch.randint(0, 64, (2, 16))
    assert torch.equal(model(x)["logits"], loaded(x)["logits"])


@pytest.mark.parametrize("recompute", [False, True])
def test_grouped_gemm_path_matches_the_per_expert_loop(recompute):
    torch.manual_seed(3)
    config = ModelConfig(**{**SMALL.__dict__, "n_experts": 8, "top_k": 2, "recompute_experts": recompute})
    loop = MoETransformer(ModelConfig(**{**config.__dict__, "grouped_mm": False}))
    grouped = MoETransformer(ModelConfig(**{**config.__dict__, "grouped_mm": True}))
    grouped.load_state_dict(loop.state_dict())
    x = torch.randint(0, 64, (3, 16))
    assert torch.allclose(loop(x)["logits"], grouped(x)["logits"], atol=1e-5)
    a, b = loop(x, x), grouped(x, x)
    for key in ("loss", "ce", "lb", "z"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    a["loss"].backward()
    b["loss"].backward()
    for (name, p), q in zip(loop.named_parameters(), grouped.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


@pytest.mark.parametrize("recompute", [False, True])
def test_experts_compiled_elementwise_kernels_match_eager(recompute):
    """The trainer on a GPU runs the experts' SwiGLU, routing weights and slot sums as compiled
    kernels inside the opaque operators (``fused_elementwise``); output and every gradient agree
    with the eager operator's."""
    from curation.trainer import model as model_module
    from curation.trainer.model import MoE

    torch.manual_seed(4)
    c = ModelConfig(vocab_size=64, d_model=64, n_layers=1, n_heads=4, seq_len=32, n_experts=8, top_k=2, expert_hidden=32,
                    grouped_mm=True, recompute_experts=recompute)
    eager, fused = MoE(c), MoE(c)
    for parameter in eager.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    fused.load_state_dict(eager.state_dict())
    fused.fused_elementwise = True
    x = torch.randn(4, 32, 64)
    outputs = []
    for moe in (eager, fused):
        inputs = x.clone().requires_grad_()
        y = moe(inputs)[0]
        y.square().sum().backward()
        outputs.append((y, inputs.grad))
    assert len(model_module._FUSED) == 3  # forward SwiGLU, slot sums, backward SwiGLU: all compiled
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-6)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), fused.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def saved_by_compiled_backward(fn, x: torch.Tensor) -> list[tuple[tuple[int, ...], int]]:
    """Shapes and bytes of what ``torch.compile``'s partitioner (the one the GPU run uses) keeps
    from fn's forward pass for its backward, parameters and inputs left out; fn runs forward and
    backward once, compiled, and its input gradient is checked against eager."""
    from functorch.compile import make_boxed_func
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    kept: list[tuple[tuple[int, ...], int]] = []

    def partition(joint, joint_inputs, **kwargs):
        forward, backward = min_cut_rematerialization_partition(joint, joint_inputs, **kwargs)
        for node in backward.graph.nodes:  # the backward's inputs: saved values, then gradients
            value = node.meta.get("val")
            if node.op == "placeholder" and isinstance(value, torch.Tensor) and not node.name.startswith(("primals", "tangents")):
                kept.append((tuple(value.shape), value.numel() * value.element_size()))
        return forward, backward

    def recording_backend(graph, example_inputs):
        return aot_module_simplified(graph, example_inputs, fw_compiler=lambda g, _: make_boxed_func(g),
                                     partition_fn=partition)

    x = x.detach().requires_grad_()
    torch.compile(fn, backend=recording_backend)(x).float().square().sum().backward()
    expected = torch.autograd.grad(fn(x).float().square().sum(), x)[0]
    assert torch.allclose(x.grad.float(), expected.float(), atol=1e-2, rtol=1e-2)
    return kept


@pytest.mark.parametrize("recompute", [False, True])
def test_compiled_experts_keep_only_what_the_operator_saves(recompute):
    """Under torch.compile the partitioner picks what the forward keeps for the backward; the
    grouped experts must stay opaque to it, so that a layer keeps its input, the routing and
    gate/up, and never the gathered (T*k, D) slots (the GPU's excess memory, 6.7 GB at `medium`)."""
    from curation.trainer.model import MoE

    torch.manual_seed(6)
    T, D, E, k, Hd = 4 * 32, 64, 8, 2, 48  # gate|up (T*k, 2*Hd) must not have the gathered slots' shape
    c = ModelConfig(vocab_size=64, d_model=D, n_layers=1, n_heads=4, seq_len=32, n_experts=E, top_k=k, expert_hidden=Hd,
                    grouped_mm=True, recompute_experts=recompute)
    moe = MoE(c).to(torch.bfloat16)  # grouped GEMMs take bf16, as on the GPU
    for parameter in moe.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    kept = saved_by_compiled_backward(lambda t: moe(t)[0], torch.randn(4, 32, D, dtype=torch.bfloat16))

    assert all(sorted(shape) != sorted((T * k, D)) for shape, _ in kept), kept  # no gathered slots, nor transposed
    bf16, fp32, int64, int32 = 2, 4, 8, 4
    expected = (bf16 * T * D  # the layer's input
                + (0 if recompute else 2 * bf16 * T * k * Hd)  # gate and up
                + fp32 * T * E + int64 * T * k  # router probabilities and chosen experts (its backward)
                + 2 * int64 * T * k + fp32 * T * k + int32 * E)  # order, inverse, slot weights, offsets
    assert sum(size for _, size in kept) == expected, kept


@pytest.mark.parametrize("recompute, copies", [(False, False), (True, False), (False, True)])
def test_compiled_block_keeps_what_the_memory_estimate_counts(recompute, copies):
    """The accounting's per-layer activations (the bulk of `medium`'s peak) against what the
    partitioner keeps for one whole compiled MoE block under bf16 autocast, attention and norm
    statistics included: equal to the byte once the block's own input (the previous layer's
    output, which the estimate counts here) is added and the bf16 weight casts (counted apart,
    as ``cast_weights``) are taken out. With the expert weights held as bf16 copies the block
    keeps no cast of them."""
    from curation.trainer.accounting import estimate_memory
    from curation.trainer.model import Block, rope_tables

    torch.manual_seed(9)
    B, S, D, H = 3, 32, 128, 4  # T = 96 tokens: no activation has a weight's shape
    c = ModelConfig(vocab_size=256, d_model=D, n_layers=1, n_heads=H, seq_len=S, n_experts=8, top_k=2, expert_hidden=64,
                    grouped_mm=True, recompute_experts=recompute, bf16_expert_weights=copies)
    block = Block(c)
    for parameter in block.parameters():
        if parameter.dim() >= 2:  # a block alone: the model's reset_parameters does not reach it
            torch.nn.init.normal_(parameter, std=0.02)
    if copies:
        block.moe.hold_weights_in(torch.bfloat16)
    cos, sin = rope_tables(S, c.head_dim, c.rope_theta)

    def forward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return block(x, cos, sin)[0]

    kept = saved_by_compiled_backward(forward, torch.randn(B, S, D, dtype=torch.bfloat16))
    weight_shapes = {shape for p in block.parameters() if p.dim() == 2 for shape in (tuple(p.shape), tuple(p.shape[::-1]))}
    weight_copies = sum(size for shape, size in kept if shape in weight_shapes)
    E, Hd = c.n_experts, c.expert_hidden
    expert_copies = sum(size for shape, size in kept if shape in {(E, D, 2 * Hd), (E, Hd, D)})
    activations = sum(size for _, size in kept) - weight_copies - expert_copies + 2 * B * S * D
    estimate = estimate_memory(c, B)
    assert activations == estimate["activations"], kept
    # the experts' bf16 weights, kept by the operator for its backward: the estimate's share of them
    dense_copies = 2 * (4 * D * D + c.vocab_size * D)
    assert expert_copies == estimate["cast_weights"] - dense_copies == (0 if copies else 2 * 3 * E * D * Hd), kept
    lean = estimate_memory(dataclasses.replace(c, keep_expert_casts=False), B)
    assert lean["cast_weights"] == dense_copies and lean["activations"] == estimate["activations"]


def test_kept_expert_casts_change_no_gradient():
    """The forward's bf16 expert weights, kept for the backward, give the backward the very
    values it would cast again: bit-identical gradients, with the weights in fp32 and the
    computation in bf16, as under the GPU's autocast; the reduction and the gathered-add slot
    sums agree, and so do the weight gradients from K-major operand copies."""
    from curation.trainer.model import MoE

    torch.manual_seed(8)
    c = ModelConfig(vocab_size=64, d_model=64, n_layers=1, n_heads=4, seq_len=32, n_experts=8, top_k=2, expert_hidden=32,
                    grouped_mm=True)
    results = []
    for keep, slot_sum, k_major in ((True, "reduce", False), (False, "reduce", False), (True, "gather_add", False),
                                    (True, "reduce", True)):
        torch.manual_seed(8)
        moe = MoE(dataclasses.replace(c, keep_expert_casts=keep, slot_sum=slot_sum, wgrad_k_major=k_major))
        for parameter in moe.parameters():
            torch.nn.init.normal_(parameter, std=0.02)
        x = torch.randn(4, 32, 64, dtype=torch.bfloat16, requires_grad=True)
        y = moe(x)[0]
        assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
        results.append([y, x.grad] + [p.grad for p in moe.parameters()])
    kept, recast, gather_add, k_major = results
    for a, b in zip(kept, recast, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(kept, gather_add, strict=True):  # bf16 sums of k=2: the same adds
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
    for a, b in zip(kept, k_major, strict=True):  # the weight gradients from transposed copies
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)


def test_fused_cross_entropy_matches_full_logits():
    torch.manual_seed(4)
    model = MoETransformer(ModelConfig(**{**SMALL.__dict__, "loss_chunk_tokens": 7}))  # chunks that do not divide T
    x = torch.randint(0, 64, (3, 16))
    y = torch.randint(0, 64, (3, 16))
    y[0, :5] = -100  # ignored positions
    fused = model(x, y)
    fused["ce"].backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits = model(x)["logits"]
    reference = torch.nn.functional.cross_entropy(logits.view(-1, 64), y.view(-1), ignore_index=-100)
    reference.backward()
    assert torch.allclose(fused["ce"], reference, atol=1e-6)
    for (name, p), g in zip(model.named_parameters(), fused_grads, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6), name


def test_compiled_chunk_loss_matches_eager():
    """What the trainer compiles on a GPU (inductor here generates C++ instead of Triton): one graph,
    the same loss and gradients as the eager expressions, ignored targets included."""
    from curation.trainer.model import chunk_loss_and_grad

    torch.manual_seed(7)
    logits = torch.randn(12, 50)
    targets = torch.randint(0, 50, (12,))
    targets[:3] = -100
    compiled = torch.compile(chunk_loss_and_grad, dynamic=False, fullgraph=True)
    loss, grad = compiled(logits, targets)
    expected_loss, expected_grad = chunk_loss_and_grad(logits, targets)
    leaf = logits.clone().requires_grad_()
    reference = torch.nn.functional.cross_entropy(leaf, targets, ignore_index=-100, reduction="sum")
    reference.backward()
    assert torch.allclose(loss, reference, atol=1e-5) and torch.allclose(expected_loss, reference, atol=1e-5)
    assert torch.allclose(grad, leaf.grad, atol=1e-6) and torch.allclose(expected_grad, leaf.grad, atol=1e-6)
    assert grad[:3].abs().max() == 0  # ignored rows get no gradient
    half_loss, half_grad = compiled(logits.bfloat16(), targets)
    assert half_grad.dtype == torch.bfloat16 and float(half_loss) == pytest.approx(float(reference), rel=1e-2)


@pytest.mark.parametrize("copies", [False, True])
def test_inductor_compiled_model_tracks_eager(copies):
    """The trainer's GPU setup (every block compiled, grouped experts, the compiled loss chunk, bf16
    autocast, the expert weights as bf16 copies or not) built by inductor for the CPU: it compiles,
    a step agrees with eager, the blocks share one graph, and a step with other tokens (other
    routing) compiles nothing new."""
    from torch._dynamo.utils import counters

    from curation.trainer.model import chunk_loss_and_grad

    torch._dynamo.reset()  # the other parametrisation's compiled loss chunk would be reused
    counters.clear()
    torch.manual_seed(8)
    config = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, seq_len=32, n_experts=8, top_k=2,
                         expert_hidden=32, grouped_mm=True)
    eager, compiled = MoETransformer(config), MoETransformer(config)
    compiled.load_state_dict(eager.state_dict())
    held = compiled.hold_expert_weights_in(torch.bfloat16) if copies else {}
    for block in compiled.blocks:
        block.compile()
    compiled.chunk_loss = torch.compile(chunk_loss_and_grad, dynamic=False)
    x = torch.randint(0, 128, (4, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = compiled(x, x), eager(x, x)
    got["loss"].backward()
    expected["loss"].backward()
    assert float(got["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-3)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        got = held[q].grad.float() if q in held else q.grad  # the experts' gradients on their copies
        assert float(torch.linalg.vector_norm(p.grad - got) / torch.linalg.vector_norm(p.grad)) < 0.08, name
    assert counters["stats"]["unique_graphs"] == 2  # one for both blocks, one for the loss chunk
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compiled(torch.randint(0, 128, (4, 32)), torch.randint(0, 128, (4, 32)))["loss"].backward()
    assert counters["stats"]["unique_graphs"] == 2 and not counters["recompiles"]


def test_bf16_autocast_grouped_path_tracks_fp32():
    """What a GPU runs (bf16 residual stream, grouped experts, fused loss), run on the CPU."""
    torch.manual_seed(5)
    config = ModelConfig(**{**SMALL.__dict__, "n_experts": 8, "top_k": 2})
    reference = MoETransformer(ModelConfig(**{**config.__dict__, "grouped_mm": False}))
    mixed = MoETransformer(ModelConfig(**{**config.__dict__, "grouped_mm": True}))
    mixed.load_state_dict(reference.state_dict())
    x = torch.randint(0, 64, (3, 16))
    assert float(mixed(x, x)["ce"]) == pytest.approx(float(reference(x, x)["ce"]), rel=1e-5)
    # Both in bf16 (the per-expert loop through autocast's own casts): same routing, so the
    # gradients differ only by rounding, not by tokens that flipped experts.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = reference(x, x), mixed(x, x)
    assert got["ce"].dtype == torch.float32
    assert float(got["ce"]) == pytest.approx(float(expected["ce"]), rel=2e-2)
    expected["loss"].backward()
    got["loss"].backward()
    def relative_error(a, b):
        return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a))

    pairs = list(zip(reference.named_parameters(), mixed.parameters(), strict=True))
    assert all(q.grad.dtype == torch.float32 for _, q in pairs)
    assert relative_error(torch.cat([p.grad.flatten() for (_, p), _ in pairs]),
                          torch.cat([q.grad.flatten() for _, q in pairs])) < 0.03
    for (name, p), q in pairs:  # the expert and router matrices (the custom backward) one by one
        if name.endswith(("w_gate_up", "w_down", "router.weight")):
            assert relative_error(p.grad, q.grad) < 0.05, name


def test_a_training_step_holds_no_gradients_through_the_forward_pass():
    """Measured with PyTorch's MemTracker on the CPU: the step's peak (the end of the forward pass,
    where every layer's activations are alive) holds none of the previous step's gradients, which
    ``training_step`` drops right after the optimizer step. Before, they sat through the forward
    pass: 4 bytes per parameter more at the peak (7.1 GB at `medium`)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    from curation.trainer.train import TrainConfig, build_optimizer, training_step

    torch.manual_seed(10)
    config = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, seq_len=64, n_experts=8, top_k=2,
                         expert_hidden=32)
    model = MoETransformer(config)
    optimizer = build_optimizer(model, TrainConfig(model=config), "cpu")
    x = torch.randint(0, 512, (4, 64))
    result, norm = training_step(model, optimizer, x, x, 1.0)
    assert float(norm) > 0 and all(p.grad is None for p in model.parameters())
    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        training_step(model, optimizer, x, x, 1.0)
    peak = {str(kind).split(".")[-1]: size for kind, size in tracker.get_tracker_snapshot("peak")[torch.device("cpu")].items()}
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert peak["PARAM"] == parameter_bytes
    assert peak["OPT"] == pytest.approx(2 * parameter_bytes, rel=1e-3)  # two moments (and a step count per tensor)
    assert peak["ACT"] > parameter_bytes and peak["GRAD"] < 0.1 * parameter_bytes


@pytest.mark.parametrize("grad_clip", [0.05, 1e6])
def test_clipping_folded_into_the_fused_optimizer_matches_clip_grad_norm(grad_clip):
    """``training_step`` clips through the optimizer's ``grad_scale`` instead of
    ``clip_grad_norm_``'s multiply; with a fused AdamW (CUDA's) the parameters come out as with
    PyTorch's own clipping and unfused AdamW, clipping active (0.05) and not (1e6)."""
    from curation.trainer.train import AdamWWithWeightCopies, training_step

    config = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, seq_len=32, n_experts=4, top_k=2,
                         expert_hidden=16)
    torch.manual_seed(3)
    folded = MoETransformer(config)
    plain = MoETransformer(config)
    plain.load_state_dict(folded.state_dict())
    fused = AdamWWithWeightCopies([{"params": list(folded.parameters())}], {}, compiled=False, lr=1e-2, fused=True)
    unfused = torch.optim.AdamW(plain.parameters(), lr=1e-2, foreach=False)
    for step in range(3):
        x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(step))
        _, norm_folded = training_step(folded, fused, x, x, grad_clip)
        plain(x, x)["loss"].backward()
        norm_plain = torch.nn.utils.clip_grad_norm_(plain.parameters(), grad_clip)
        unfused.step()
        unfused.zero_grad()
        assert float(norm_folded) == pytest.approx(float(norm_plain), rel=1e-4)
        assert not hasattr(fused, "grad_scale")  # one step's: a step without clipping divides by nothing
    # Adam moves each parameter by up to lr (1e-2) a step; the two paths differ by rounding (a
    # division against a multiply), which Adam's eps amplifies only in embedding rows of tiny gradients
    for (name, p), q in zip(folded.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-4, msg=name)


@pytest.mark.parametrize("compiled", [False, True])
def test_adamw_step_from_a_bf16_copy_matches_torch_adamw(compiled):
    """The update of a weight trained through a bf16 copy, eager and compiled by inductor (as on a
    GPU): the fp32 weight follows PyTorch's AdamW fed the same gradients in fp32, with the
    gradient scale it is given and a learning rate that changes every step (one compiled graph
    serves them all); the copy is the weight rounded to bf16 after every step."""
    from torch._dynamo.utils import counters

    from curation.trainer.train import AdamWWithWeightCopies

    counters.clear()
    torch.manual_seed(11)
    weight = torch.nn.Parameter(torch.randn(8, 16))
    reference = torch.nn.Parameter(weight.detach().clone())
    copy = weight.detach().to(torch.bfloat16).requires_grad_()
    options = {"lr": 1e-2, "betas": (0.9, 0.95), "weight_decay": 0.1}
    ours = AdamWWithWeightCopies([{"params": [weight]}], {weight: copy}, compiled=compiled, **options)
    theirs = torch.optim.AdamW([reference], foreach=False, **options)
    for step in range(4):
        for optimizer in (ours, theirs):
            optimizer.param_groups[0]["lr"] = 1e-2 / (step + 1)
        copy.grad = torch.randn(8, 16).to(torch.bfloat16)
        scale = torch.tensor(1.0 + step)
        ours.grad_scale = scale
        reference.grad = copy.grad.float() / scale
        ours.step()
        theirs.step()
        assert weight.grad is None
        torch.testing.assert_close(weight.detach(), reference.detach(), rtol=1e-6, atol=1e-7)
        assert torch.equal(copy.detach(), weight.detach().to(torch.bfloat16))
        ours.zero_grad()
        assert copy.grad is None
    assert float(ours.state[weight]["step"]) == 4
    if compiled:
        assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]


def test_training_through_bf16_expert_copies_matches_fp32_expert_weights(tmp_path):
    """Under bf16 autocast (the GPU's compute, on the CPU) a model whose expert weights train
    through bf16 copies takes the steps of one that casts its fp32 expert weights: the same
    forward (the copy is the cast), the same gradients (bf16 either way), the same clipping norm
    and, after three steps, the same fp32 weights; a checkpoint of the weights and the optimizer
    resumes it exactly."""
    from curation.trainer.train import AdamWWithWeightCopies, training_step

    config = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, seq_len=32, n_experts=4, top_k=2,
                         expert_hidden=16, grouped_mm=True)
    torch.manual_seed(12)
    casting, copied = MoETransformer(config), MoETransformer(config)
    copied.load_state_dict(casting.state_dict())

    def optimizer(model, copies):
        return AdamWWithWeightCopies([{"params": list(model.parameters())}], copies, compiled=False, lr=1e-2,
                                     foreach=False)

    copies = copied.hold_expert_weights_in(torch.bfloat16)
    assert len(copies) == 2 * config.n_layers
    plain, through_copies = optimizer(casting, {}), optimizer(copied, copies)

    def step(model, opt, seed):
        x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(seed))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return training_step(model, opt, x, x, grad_clip=0.5)

    for seed in range(3):
        (a, norm_a), (b, norm_b) = step(casting, plain, seed), step(copied, through_copies, seed)
        if seed == 0:  # the same weights in: the same bf16 forward and backward, bit for bit
            assert torch.equal(a["loss"], b["loss"]) and torch.equal(norm_a, norm_b)
            for (name, p), q in zip(casting.named_parameters(), copied.parameters(), strict=True):
                torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=2e-7, msg=name)  # the AdamWs' rounding
        # later, those last bits can round a weight's bf16 cast the other way
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
        assert float(norm_a) == pytest.approx(float(norm_b), rel=1e-3)
        assert all(t.grad is None for t in [*copied.parameters(), *copies.values()])
    for weight, copy in copies.items():
        assert copy.dtype == torch.bfloat16 and torch.equal(copy.detach(), weight.detach().to(torch.bfloat16))
    torch.save({"model": copied.state_dict(), "optimizer": through_copies.state_dict()}, tmp_path / "checkpoint.pt")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    resumed = MoETransformer(config)
    resumed.load_state_dict(state["model"])
    resumed_optimizer = optimizer(resumed, resumed.hold_expert_weights_in(torch.bfloat16))
    resumed_optimizer.load_state_dict(state["optimizer"])
    step(copied, through_copies, 3)
    step(resumed, resumed_optimizer, 3)
    for p, q in zip(copied.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_medium_preset_accounting_on_the_meta_device():
    """The figures the GPU check measures against, guarded without a GPU."""
    from curation.trainer.accounting import build_on_meta, estimate_memory
    from curation.trainer.train import build_train_config

    c = build_train_config("medium", 50280)
    model = build_on_meta(c.model)
    counts = model.parameter_counts()
    assert next(model.parameters()).device.type == "meta"
    assert counts["total"] == 1_781_779_456  # 1.78B
    assert counts["active"] == 372_493_312  # 372M: 8 of 64 experts
    experts = 16 * 64 * 3 * 1024 * 512
    assert counts["total"] - counts["active"] == experts * 56 // 64
    # 6 x active non-embedding parameters + 12 L D S for attention
    assert model.flops_per_token() == 6 * counts["active_non_embedding"] + 12 * 16 * 1024 * 2048
    memory = estimate_memory(c.model, c.batch_size)
    # fp32 weights, the experts' bf16 copies (2 bytes), gradients (bf16 on the copies), two moments
    assert memory["weights"] + memory["gradients"] + memory["optimizer"] == 16 * counts["total"]
    assert memory["gradients"] == 4 * counts["total"] - 2 * experts
    assert memory["optimizer_step"] == 16 * counts["total"]  # no gradients before the backward, no activations after it
    assert memory["forward_end"] - memory["activations"] - memory["loss"] == (12 * counts["total"] + 2 * experts
                                                                              + memory["cast_weights"])
    assert memory["peak"] == max(memory["forward_end"], memory["backward_start"], memory["optimizer_step"])
    # Measured on an H200 (session 8, torch.cuda.max_memory_allocated, fp32 expert weights cast
    # in the forward and again in the backward): 34.24 GB, and 30.72 GB with recompute_experts;
    # the goal is 40 GB at batch 8
    fp32_weights = dataclasses.replace(c.model, bf16_expert_weights=False)
    recast = estimate_memory(dataclasses.replace(fp32_weights, keep_expert_casts=False), c.batch_size)
    assert recast["peak"] == pytest.approx(34.24e9, rel=0.02)
    lean = estimate_memory(dataclasses.replace(fp32_weights, recompute_experts=True, keep_expert_casts=False), c.batch_size)
    assert lean["peak"] == pytest.approx(30.72e9, rel=0.03) and lean["activations"] < memory["activations"]
    # keeping the casts holds 2 bytes per expert parameter through the forward pass; so do the
    # bf16 copies, through the whole step: both within the goal
    kept = estimate_memory(fp32_weights, c.batch_size)
    assert kept["forward_end"] - recast["forward_end"] == 2 * experts == memory["forward_end"] - recast["forward_end"]
    assert 37e9 < memory["peak"] <= kept["peak"] < 38e9
    small = build_train_config("small", 50280)
    small_recast = dataclasses.replace(small.model, bf16_expert_weights=False, keep_expert_casts=False)
    assert estimate_memory(small_recast, small.batch_size)["peak"] == pytest.approx(10.36e9, rel=0.02)  # H200: 10.36 GB
