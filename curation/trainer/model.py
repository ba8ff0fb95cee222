"""A minimal OLMoE-style decoder: one readable file, shapes in the comments (as nanoGPT's model.py).

Pre-norm RMSNorm, RoPE, QK-norm, no biases, untied embeddings. Every layer's feed-forward is a
mixture of SwiGLU experts with a linear router whose softmax and top-k run in fp32: softmax over
all experts, then top-k, weights not renormalised (as OLMoE). Routing is dropless token choice:
every token reaches exactly k experts; token slots are sorted by expert and each expert runs one
matmul over its contiguous slice (on a GPU: one grouped GEMM per projection, ``F.grouped_mm``).
``n_experts=1, top_k=1`` is the dense model: one SwiGLU, no router.

Memory (what a step keeps for the backward pass) is the point of three choices:
- Under autocast the residual stream is bf16, not the fp32 of the embedding table.
- The grouped experts are one custom operator (``grouped_swiglu``, opaque to torch.compile's
  partitioner) that keeps the layer input, the routing and the gate/up activations; the gathered
  slots and the expert outputs are rebuilt in the backward instead of held (``recompute_experts``
  also rebuilds gate/up: two more grouped GEMMs for half the expert memory). Being opaque, its
  elementwise work is not fused by the block's compile, so on a GPU the operator calls its own
  compiled kernels for it (``fused_elementwise``). On a GPU the trainer gives it bf16 copies of
  the expert weights to use (``MoE.hold_weights_in``); without them it casts the fp32 weights
  and keeps the casts for its backward (``keep_expert_casts``).
- The loss never materialises (tokens x vocabulary) fp32 logits: ``fused_linear_cross_entropy``
  computes the head, the loss and its gradients chunk by chunk in the forward pass.

Auxiliary losses (OLMoE's normalisation), per forward pass over L layers and T tokens:
    L_LB = E / (L * T * k) * sum_layers sum_e c_e * p̄_e
        c_e = token slots routed to expert e, p̄_e = mean router probability of e; 1 at uniform routing
    L_Z  = mean over layers and tokens of logsumexp(router logits)^2
    loss = CE + lb_weight * L_LB + z_weight * L_Z     (0.01 and 0.001 by default)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    vocab_size: int = 50304
    d_model: int = 512
    n_layers: int = 8
    n_heads: int = 8
    seq_len: int = 2048
    n_experts: int = 64
    top_k: int = 8
    expert_hidden: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    lb_weight: float = 0.01
    z_weight: float = 0.001
    init_std: float = 0.02
    grouped_mm: bool | None = None  # experts as one grouped GEMM; None: on CUDA only
    recompute_experts: bool = False  # rebuild gate/up activations in the backward (less memory)
    # train the expert weights through bf16 copies (MoE.hold_weights_in) when the compute is bf16
    # (on a GPU): no casts of them in the forward or backward, bf16 weight gradients, fp32 masters
    # stepped by the optimizer, which rewrites the copies
    bf16_expert_weights: bool = True
    # without copies: keep the forward's compute-dtype casts of the expert weights for the
    # backward: one cast of every expert weight a step instead of two (three with
    # recompute_experts), for 2 bytes per expert parameter (3.2 GB at `medium`)
    keep_expert_casts: bool = True
    # how a token's k expert outputs are summed: k gathered adds, or a gather and a reduction over k
    slot_sum: Literal["reduce", "gather_add"] = "gather_add"
    # the expert-weight gradients' grouped GEMMs on K-major copies of their operands instead of the
    # MN-major views they come as (two transposed copies a GEMM; gpu_check's `kernels` job times both)
    wgrad_k_major: bool = False
    loss_chunk_tokens: int = 4096  # tokens per chunk of the fused head + cross-entropy

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # statistics in fp32, output in the input's dtype (bf16 under autocast)
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


def rope_tables(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(seq_len, device=device).float(), inv)  # (S, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, S, hd); rotate pairs (even, odd)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[: x.shape[2]], sin[: x.shape[2]]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model, bias=False)
        self.out = nn.Linear(c.d_model, c.d_model, bias=False)
        self.q_norm = RMSNorm(c.head_dim, c.norm_eps)
        self.k_norm = RMSNorm(c.head_dim, c.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.c.n_heads, self.c.head_dim).unbind(2)  # each (B, S, H, hd)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, S, hd)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, S, hd)
        return self.out(y.transpose(1, 2).reshape(B, S, D))


def _weighted_swiglu(gate_up: torch.Tensor, slot_weight: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)  # (T*k, Hd) each
    return F.silu(gate) * up * slot_weight.to(gate.dtype).unsqueeze(-1)  # (T*k, Hd)


def _sum_token_slots(inverse: torch.Tensor, top_k: int, sorted_slots: torch.Tensor) -> torch.Tensor:
    """(T*k, D) values in expert order -> (T, D) sums over each token's k slots."""
    return sorted_slots[inverse].view(-1, top_k, sorted_slots.shape[-1]).sum(1)  # (T, D)


def _sum_token_slots_gather_add(inverse: torch.Tensor, top_k: int, sorted_slots: torch.Tensor) -> torch.Tensor:
    """The same sums as k gathered adds: once compiled, a pointwise kernel over (T, D) whose
    neighbouring threads read neighbouring columns of one row. Inductor made the reduction a
    persistent reduction with k innermost, neighbouring threads on different rows: 0.33 ms a call
    at `medium` on an H200, five times its bandwidth time, 10.6 ms a step."""
    rows = inverse.view(-1, top_k)  # (T, k) sorted position of each of a token's slots
    total = sorted_slots[rows[:, 0]]  # (T, D)
    for j in range(1, top_k):
        total = total + sorted_slots[rows[:, j]]
    return total


SLOT_SUMS = {"reduce": _sum_token_slots, "gather_add": _sum_token_slots_gather_add}


def _weight_gradient(inputs: torch.Tensor, grads: torch.Tensor, offsets: torch.Tensor, k_major: bool) -> torch.Tensor:
    """(E, I, O) per-expert sums of inputs^T @ grads over each expert's slots: one grouped GEMM
    whose contraction (K) runs over the slots. Its operands as they come, ``inputs.t()`` and
    ``grads``, are MN-major views; ``k_major`` hands it contiguous transposed copies instead."""
    # inputs: (T*k, I); grads: (T*k, O), slots sorted by expert
    if k_major:
        return F.grouped_mm(inputs.t().contiguous(), grads.t().contiguous().t(), offs=offsets)
    return F.grouped_mm(inputs.t(), grads, offs=offsets)


def _swiglu_backward(d_act: torch.Tensor, gate_up: torch.Tensor,
                     slot_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From d_act = dL/d(weighted SwiGLU): the weighted SwiGLU (for w_down's gradient), the
    gradients of the slot weights, and of gate and up side by side (T*k, 2*Hd), as they came."""
    gate, up = gate_up.chunk(2, dim=-1)
    sig = torch.sigmoid(gate)
    silu = gate * sig
    dsilu = sig * (1 + gate * (1 - sig))  # d silu / d gate
    swiglu = silu * up  # (T*k, Hd) before the routing weight
    sw = slot_weight.to(gate.dtype).unsqueeze(-1)
    d_slot_weight = (d_act.float() * swiglu.float()).sum(-1)  # (T*k,)
    d_swiglu = d_act * sw
    return swiglu * sw, d_slot_weight, torch.cat([d_swiglu * up * dsilu, d_swiglu * silu], dim=-1)


# The operators below are opaque to torch.compile, so their elementwise work (the SwiGLU, the
# routing weights, the per-token sums over slots) would run as a dozen eager kernels over
# (T*k, Hd) and (T*k, D) tensors a layer: 30 of `medium`'s 168 ms a step on an H200. On a GPU
# under a compiled trainer (``fused=True``) each helper is one compiled kernel instead.
_FUSED: dict = {}


def _kernel(fn, fused: bool):
    if not fused:
        return fn
    if fn not in _FUSED:
        _FUSED[fn] = torch.compile(fn, dynamic=False)
    return _FUSED[fn]


def _kept_casts(w_gate_up: torch.Tensor, dtype: torch.dtype, keep_casts: bool) -> bool:
    # weights already in the compute dtype have no cast to keep (and an operator's output may not
    # be one of its inputs, which ``w_down.to(dtype)`` then is)
    return keep_casts and w_gate_up.dtype != dtype


# The grouped experts are a pair of custom operators with their own autograd rule, not an
# autograd.Function: torch.compile traces through an autograd.Function and its partitioner then
# picks what to save by itself (it kept the gathered slots, T*k*D per layer: 6.7 GB at `medium`).
# An operator is opaque to it, so exactly what ``_grouped_swiglu_setup`` saves is kept.
# Gate and up are one weight, and one grouped GEMM of width 2*Hd (OLMoE's and Megablocks' w1/w3
# side by side), not two: the gathered tokens are read once, and the backward's input gradient is
# one GEMM over K = 2*Hd instead of two GEMMs and a sum; 6 grouped GEMMs a layer instead of 9.
# (The operators' names change with their signatures: inductor's graph cache keys a compiled block
# by the graph, which calls an operator by name, so a stale cache would expect the old one's.)
@torch.library.custom_op("curation::grouped_swiglu_experts", mutates_args=())
def grouped_swiglu(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor, slot_weight: torch.Tensor,
                   w_gate_up: torch.Tensor, w_down: torch.Tensor, top_k: int,
                   keep_gate_up: bool, keep_casts: bool, slot_sum: str, wgrad_k_major: bool,
                   fused: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """y[t] = sum over t's k slots of w_slot * SwiGLU_e(x[t]), slots sorted by expert e.

    Returns y (T, D) and what the backward needs besides the inputs: the inverse of ``order``,
    gate|up (T*k, 2*Hd) (empty unless ``keep_gate_up``; without it the backward recomputes it), and
    the expert weights in x's dtype, gate|up (E, D, 2*Hd) and down (E, Hd, D) (empty unless
    ``keep_casts`` and the weights are of another dtype; without them the backward casts again).
    The gathered slots (T*k, D) and the per-slot outputs are never kept: the routing weight
    multiplies the SwiGLU activation before the down projection, so its gradient needs only gate|up
    and the incoming gradient. Sums over a token's k slots (``slot_sum``, a name in ``SLOT_SUMS``)
    read each slot by index, not with atomics: deterministic. ``wgrad_k_major`` is for the backward.
    """
    # x: (T, D); order: (T*k,) slots sorted by expert; offsets: (E,) int32 end of each expert's slots
    # slot_weight: (T*k,) routing weight of each sorted slot; w_gate_up: (E, D, 2*Hd); w_down: (E, Hd, D)
    dtype = x.dtype
    # Every op runs in x's dtype, as the backward does: CUDA autocast would run the sum in fp32
    # and hand the next layer an fp32 residual stream.
    with torch.autocast(x.device.type, enabled=False):
        xs = x[order // top_k]  # (T*k, D)
        w_gu, wd = w_gate_up.to(dtype), w_down.to(dtype)  # (E, D, 2*Hd), (E, Hd, D)
        gate_up = F.grouped_mm(xs, w_gu, offs=offsets)  # (T*k, 2*Hd)
        act = _kernel(_weighted_swiglu, fused)(gate_up, slot_weight)  # (T*k, Hd)
        out = F.grouped_mm(act, wd, offs=offsets)  # (T*k, D)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)  # slot -> sorted position
        y = _kernel(SLOT_SUMS[slot_sum], fused)(inverse, top_k, out)  # (T, D)
    if not keep_gate_up:
        gate_up = gate_up.new_empty(0)
    if not _kept_casts(w_gate_up, dtype, keep_casts):
        w_gu, wd = w_gu.new_empty(0), wd.new_empty(0)
    return y, inverse, gate_up, w_gu, wd


@grouped_swiglu.register_fake
def _(x, order, offsets, slot_weight, w_gate_up, w_down, top_k, keep_gate_up, keep_casts, slot_sum, wgrad_k_major,
      fused):
    E, D, Hd2 = w_gate_up.shape
    kept = (order.shape[0], Hd2) if keep_gate_up else (0,)  # (T*k, 2*Hd) or nothing
    casts = _kept_casts(w_gate_up, x.dtype, keep_casts)
    return (x.new_empty(x.shape), torch.empty_like(order), x.new_empty(kept),
            x.new_empty((E, D, Hd2) if casts else (0,)), x.new_empty((E, Hd2 // 2, D) if casts else (0,)))


@torch.library.custom_op("curation::grouped_swiglu_experts_backward", mutates_args=())
def grouped_swiglu_backward(dy: torch.Tensor, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor,
                            offsets: torch.Tensor, slot_weight: torch.Tensor, w_gate_up: torch.Tensor,
                            w_down: torch.Tensor, gate_up: torch.Tensor, w_gu: torch.Tensor, wd: torch.Tensor,
                            top_k: int, slot_sum: str, wgrad_k_major: bool,
                            fused: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``grouped_swiglu``'s y for x, slot_weight, w_gate_up, w_down (``w_gu`` and
    ``wd``: the forward's weight casts, or empty), the weights' in their own dtype."""
    dtype, k = x.dtype, top_k
    with torch.autocast(x.device.type, enabled=False):
        dy = dy.to(dtype)
        slot_token = order // k
        xs = x[slot_token]  # (T*k, D), re-gathered
        if w_gu.numel() == 0:  # not kept: cast again
            w_gu, wd = w_gate_up.to(dtype), w_down.to(dtype)
        if gate_up.numel() == 0:  # not kept: one more grouped GEMM instead of T*k*Hd*2 values per layer
            gate_up = F.grouped_mm(xs, w_gu, offs=offsets)
        d_out = dy[slot_token]  # (T*k, D): every slot of a token gets the token's gradient
        d_act = F.grouped_mm(d_out, wd.transpose(-2, -1), offs=offsets)  # (T*k, Hd)
        act, d_slot_weight, d_gate_up = _kernel(_swiglu_backward, fused)(d_act, gate_up, slot_weight)
        d_w_down = _weight_gradient(act, d_out, offsets, wgrad_k_major)  # (E, Hd, D)
        d_w_gate_up = _weight_gradient(xs, d_gate_up, offsets, wgrad_k_major)  # (E, D, 2*Hd)
        dx = _kernel(SLOT_SUMS[slot_sum], fused)(inverse, k, F.grouped_mm(d_gate_up, w_gu.transpose(-2, -1),
                                                                          offs=offsets))  # (T, D)
    return dx, d_slot_weight.to(slot_weight.dtype), d_w_gate_up.to(w_gate_up.dtype), d_w_down.to(w_down.dtype)


@grouped_swiglu_backward.register_fake
def _(dy, x, order, inverse, offsets, slot_weight, w_gate_up, w_down, gate_up, w_gu, wd, top_k, slot_sum,
      wgrad_k_major, fused):
    return torch.empty_like(x), torch.empty_like(slot_weight), torch.empty_like(w_gate_up), torch.empty_like(w_down)


def _grouped_swiglu_setup(ctx, inputs, output) -> None:
    x, order, offsets, slot_weight, w_gate_up, w_down, top_k, _, _, slot_sum, wgrad_k_major, fused = inputs
    _, inverse, gate_up, w_gu, wd = output
    ctx.save_for_backward(x, order, inverse, offsets, slot_weight, w_gate_up, w_down, gate_up, w_gu, wd)
    ctx.top_k, ctx.slot_sum, ctx.wgrad_k_major, ctx.fused = top_k, slot_sum, wgrad_k_major, fused


def _grouped_swiglu_grad(ctx, dy, *_):
    x, order, inverse, offsets, slot_weight, w_gate_up, w_down, gate_up, w_gu, wd = ctx.saved_tensors
    dx, d_slot_weight, d_w_gate_up, d_w_down = grouped_swiglu_backward(
        dy, x, order, inverse, offsets, slot_weight, w_gate_up, w_down, gate_up, w_gu, wd, ctx.top_k, ctx.slot_sum,
        ctx.wgrad_k_major, ctx.fused)
    return dx, None, None, d_slot_weight, d_w_gate_up, d_w_down, None, None, None, None, None, None


grouped_swiglu.register_autograd(_grouped_swiglu_grad, setup_context=_grouped_swiglu_setup)


class MoE(nn.Module):
    """Dropless top-k mixture of SwiGLU experts (one expert and no router when n_experts == 1)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        E, D, Hd = c.n_experts, c.d_model, c.expert_hidden
        self.router = nn.Linear(D, E, bias=False) if E > 1 else None
        self.w_gate_up = nn.Parameter(torch.empty(E, D, 2 * Hd))  # (E, D, 2*Hd): gate | up
        self.w_down = nn.Parameter(torch.empty(E, Hd, D))  # (E, Hd, D)
        self.fused_elementwise = False  # the trainer sets it on a GPU: compiled kernels inside the experts' operators
        self.weight_copies: tuple[torch.Tensor, torch.Tensor] | None = None  # see hold_weights_in

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # runs trained before gate and up were one parameter keep them apart in their checkpoints
        if prefix + "w_gate" in state_dict and prefix + "w_up" in state_dict:
            gate, up = state_dict.pop(prefix + "w_gate"), state_dict.pop(prefix + "w_up")
            state_dict[prefix + "w_gate_up"] = torch.cat([gate, up], dim=-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def hold_weights_in(self, dtype: torch.dtype) -> dict[nn.Parameter, torch.Tensor]:
        """Copies of the expert weights in ``dtype`` (bf16 on a GPU) that the forward and backward
        use instead of the parameters: leaf tensors, so neither pass casts a weight and the weight
        gradients land on the copies, in ``dtype``. Returns parameter -> copy. The parameters stay
        the fp32 masters that the optimizer steps and checkpoints keep; whoever steps them must
        rewrite the copies (``train.AdamWWithWeightCopies``). Copies are taken of the weights as
        they are: load a checkpoint first."""
        if self.w_gate_up.dtype == dtype:
            raise ValueError(f"the expert weights are {dtype} already")
        copies = {p: p.detach().to(dtype).requires_grad_() for p in (self.w_gate_up, self.w_down)}
        self.weight_copies = (copies[self.w_gate_up], copies[self.w_down])
        return copies

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, S, D = x.shape
        E, k = self.c.n_experts, self.c.top_k
        tokens = x.reshape(-1, D)  # (T, D)
        w_gate_up, w_down = self.weight_copies or (self.w_gate_up, self.w_down)
        if self.router is None:  # dense: every token's one slot goes to the one expert
            gate, up = (tokens @ w_gate_up[0].to(x.dtype)).chunk(2, dim=-1)  # (T, Hd) each
            T = tokens.shape[0]
            stats = {"slots_per_expert": torch.full((1,), T, device=x.device), "mean_prob": torch.ones(1, device=x.device),
                     "z": torch.zeros((), device=x.device), "experts": torch.zeros(T, 1, dtype=torch.long, device=x.device)}
            return ((F.silu(gate) * up) @ w_down[0].to(x.dtype)).view(B, S, D), stats
        # The router's matmul runs in the compute dtype (fp32 accumulation); softmax and top-k in fp32.
        logits = F.linear(tokens, self.router.weight.to(tokens.dtype)).float()  # (T, E)
        probs = logits.softmax(dim=-1)  # (T, E)
        weights, experts = probs.topk(k, dim=-1)  # (T, k) each; not renormalised
        flat_experts = experts.reshape(-1)  # (T*k,) slot -> expert
        order = flat_experts.argsort(stable=True)  # slots sorted by expert
        # A fixed-size histogram (bincount's output size depends on the data, which breaks compile)
        counts = torch.zeros(E, dtype=torch.long, device=x.device).scatter_add_(0, flat_experts, torch.ones_like(flat_experts))
        slot_weight = weights.reshape(-1)[order]  # (T*k,) routing weight of each sorted slot
        y = self.experts(tokens, order, counts, slot_weight, w_gate_up, w_down)  # (T, D)
        stats = {
            "slots_per_expert": counts,  # c_e
            "mean_prob": probs.mean(0),  # p̄_e
            "z": torch.logsumexp(logits, dim=-1).pow(2).mean(),  # mean_t logsumexp^2
            "experts": experts,  # (T, k), for the dropless check
        }
        return y.view(B, S, D), stats

    def experts(self, tokens: torch.Tensor, order: torch.Tensor, counts: torch.Tensor, slot_weight: torch.Tensor,
                w_gate_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
        """Routing-weighted SwiGLU of every token's k slots, summed per token: (T, D) -> (T, D)."""
        grouped = self.c.grouped_mm if self.c.grouped_mm is not None else tokens.is_cuda
        k = self.c.top_k
        if grouped:  # one grouped GEMM per projection
            offsets = counts.cumsum(0).to(torch.int32)  # (E,) end of each expert's slots
            return grouped_swiglu(tokens, order, offsets, slot_weight, w_gate_up, w_down, k,
                                  not self.c.recompute_experts, self.c.keep_expert_casts, self.c.slot_sum,
                                  self.c.wgrad_k_major, self.fused_elementwise)[0]
        slot_tokens = tokens[order // k]  # (T*k, D)
        outputs = torch.empty_like(slot_tokens)
        start = 0
        for e, n in enumerate(counts.tolist()):  # one matmul per expert over its contiguous slots
            if n:
                chunk = slot_tokens[start : start + n]  # (n, D)
                gate, up = (chunk @ w_gate_up[e].to(chunk.dtype)).chunk(2, dim=-1)  # (n, Hd) each
                outputs[start : start + n] = (F.silu(gate) * up) @ w_down[e].to(chunk.dtype)  # (n, D)
            start += n
        combined = torch.empty_like(outputs)
        combined[order] = outputs * slot_weight.unsqueeze(-1).to(outputs.dtype)  # back to slot order (T*k, D)
        return combined.view(-1, k, tokens.shape[-1]).sum(1)  # (T, D)


def chunk_loss(logits32: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of one chunk of fp32 logits (C, V) and its log-sum-exp (C,); targets < 0 are ignored."""
    picked = logits32.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)  # (C,)
    lse = torch.logsumexp(logits32, dim=-1)  # (C,)
    return ((lse - picked) * (targets >= 0)).sum(), lse


def chunk_loss_and_grad(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed fp32 cross-entropy of one chunk and d loss / d logits in the logits' dtype.

    Written as whole-tensor expressions (no in-place ops) so ``torch.compile`` fuses the softmax,
    the one-hot subtraction, the mask and the cast into one pass over (C, V) after the reduction;
    eager it is five passes, a third of the `small` preset's step on a GPU. Targets < 0 are ignored.
    """
    # logits: (C, V) compute dtype; targets: (C,)
    logits32 = logits.float()  # (C, V)
    valid = targets >= 0
    safe = targets.clamp(min=0)
    loss, lse = chunk_loss(logits32, targets)
    vocab = torch.arange(logits.shape[1], device=logits.device)  # (V,)
    softmax = (logits32 - lse.unsqueeze(1)).exp()  # (C, V)
    d_logits = (softmax - (vocab == safe.unsqueeze(1)).float()) * valid.unsqueeze(1)  # (C, V)
    return loss, d_logits.to(logits.dtype)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy(h @ W^T, targets) without keeping (tokens x vocabulary) logits.

    Chunk by chunk, the forward computes the logits in the compute dtype, the loss in fp32, and
    (when a gradient is needed) the gradients of h and W right away: d logits = softmax - onehot
    is known in the forward. The backward only scales them. Targets < 0 are ignored.
    ``chunk_fn`` is ``chunk_loss_and_grad`` or its compiled version.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk: int, chunk_fn=chunk_loss_and_grad):
        # h: (T, D) compute dtype; weight: (V, D); targets: (T,)
        w = weight.to(h.dtype)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        d_h = torch.empty_like(h) if need_grad else None
        d_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk):
            hc, tc = h[start : start + chunk], targets[start : start + chunk]  # (C, D), (C,)
            logits = hc @ w.t()  # (C, V)
            if not need_grad:
                total = total + chunk_loss(logits.float(), tc)[0]
                continue
            loss, d_logits = chunk_fn(logits, tc)  # (), (C, V)
            total = total + loss
            d_h[start : start + chunk] = d_logits @ w  # (C, D)
            d_w += (d_logits.t() @ hc).float()  # (V, D)
        ctx.save_for_backward(d_h, d_w)
        return total

    @staticmethod
    def backward(ctx, d_total):
        d_h, d_w = ctx.saved_tensors
        return (d_h * d_total.to(d_h.dtype)), (d_w * d_total).to(torch.float32), None, None, None


class Block(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = Attention(c)
        self.ffn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.moe = MoE(c)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        y, stats = self.moe(self.ffn_norm(x))
        return x + y, stats


class MoETransformer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)  # untied
        self.chunk_loss = chunk_loss_and_grad  # the trainer swaps in its compiled version on a GPU
        cos, sin = rope_tables(c.seq_len, c.head_dim, c.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.c.init_std
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                scale = std / math.sqrt(2 * self.c.n_layers) if name.endswith(("out.weight", "w_down")) else std
                nn.init.trunc_normal_(p, std=scale, a=-3 * scale, b=3 * scale)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        # idx, targets: (B, S) token ids. With targets: losses, no logits (see fused_linear_cross_entropy).
        x = self.embed(idx)  # (B, S, D)
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))  # residual stream in the compute dtype
        layer_stats = []
        for block in self.blocks:
            x, stats = block(x, self.rope_cos, self.rope_sin)
            layer_stats.append(stats)
        h = self.norm(x)  # (B, S, D)
        out: dict = {"layer_stats": layer_stats}
        if targets is None:
            out["logits"] = self.head(h)  # (B, S, V)
            return out
        flat_targets = targets.reshape(-1)  # (T,); -100 (any negative) is ignored
        total = FusedLinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), self.head.weight, flat_targets,
                                              self.c.loss_chunk_tokens, self.chunk_loss)
        ce = total / (flat_targets >= 0).sum().clamp(min=1)
        lb, z = aux_losses(layer_stats, self.c)
        out.update(ce=ce, lb=lb, z=z, loss=ce + self.c.lb_weight * lb + self.c.z_weight * z)
        return out

    def hold_expert_weights_in(self, dtype: torch.dtype) -> dict[nn.Parameter, torch.Tensor]:
        """Every layer's ``MoE.hold_weights_in``: expert parameter -> its copy in ``dtype``."""
        return {p: copy for block in self.blocks for p, copy in block.moe.hold_weights_in(dtype).items()}

    # -- accounting -----------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        per_expert = 3 * self.c.d_model * self.c.expert_hidden
        inactive = self.c.n_layers * (self.c.n_experts - self.c.top_k) * per_expert
        embedding = self.embed.weight.numel()
        return {"total": total, "active": total - inactive, "active_non_embedding": total - inactive - embedding}

    def flops_per_token(self) -> float:
        """6 * N_active (non-embedding; the LM head counts) + attention: 12 * L * D * S (fwd+bwd)."""
        c = self.c
        return 6 * self.parameter_counts()["active_non_embedding"] + 12 * c.n_layers * c.d_model * c.seq_len


def aux_losses(layer_stats: list[dict[str, torch.Tensor]], c: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    L = len(layer_stats)
    T = layer_stats[0]["slots_per_expert"].sum() / c.top_k
    lb = sum((s["slots_per_expert"].float() * s["mean_prob"]).sum() for s in layer_stats) * c.n_experts / (L * T * c.top_k)
    z = sum(s["z"] for s in layer_stats) / L
    return lb, z
