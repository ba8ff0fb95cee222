"""A minimal OLMoE-style decoder: one readable file, shapes in the comments (as nanoGPT's model.py).

Pre-norm RMSNorm, RoPE, QK-norm, no biases, untied embeddings. Every layer's feed-forward is a
mixture of SwiGLU experts with a linear router computed in fp32: softmax over all experts, then
top-k, weights not renormalised (as OLMoE). Routing is dropless token choice: every token reaches
exactly k experts; token slots are sorted by expert and each expert runs one matmul over its
contiguous slice (on a GPU: one grouped GEMM per projection, ``F.grouped_mm``, in bf16).
``n_experts=1, top_k=1`` is the dense model.

Auxiliary losses (OLMoE's normalisation), per forward pass over L layers and T tokens:
    L_LB = E / (L * T * k) * sum_layers sum_e c_e * p̄_e
        c_e = token slots routed to expert e, p̄_e = mean router probability of e; 1 at uniform routing
    L_Z  = mean over layers and tokens of logsumexp(router logits)^2
    loss = CE + lb_weight * L_LB + z_weight * L_Z     (0.01 and 0.001 by default)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


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


class MoE(nn.Module):
    """Dropless top-k mixture of SwiGLU experts."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        E, D, Hd = c.n_experts, c.d_model, c.expert_hidden
        self.router = nn.Linear(D, E, bias=False)
        self.w_gate = nn.Parameter(torch.empty(E, D, Hd))  # (E, D, Hd)
        self.w_up = nn.Parameter(torch.empty(E, D, Hd))  # (E, D, Hd)
        self.w_down = nn.Parameter(torch.empty(E, Hd, D))  # (E, Hd, D)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, S, D = x.shape
        E, k = self.c.n_experts, self.c.top_k
        tokens = x.reshape(-1, D)  # (T, D)
        logits = F.linear(tokens.float(), self.router.weight.float())  # (T, E) in fp32
        probs = logits.softmax(dim=-1)  # (T, E)
        weights, experts = probs.topk(k, dim=-1)  # (T, k) each; not renormalised
        flat_experts = experts.reshape(-1)  # (T*k,) slot -> expert
        order = flat_experts.argsort(stable=True)  # slots sorted by expert
        counts = torch.bincount(flat_experts, minlength=E)  # (E,) slots per expert
        slot_tokens = tokens[order // k]  # (T*k, D) token of each sorted slot
        outputs = self.experts(slot_tokens, counts)  # (T*k, D)
        combined = torch.empty_like(outputs)
        combined[order] = outputs  # back to slot order (T*k, D)
        y = (combined.view(-1, k, D) * weights.unsqueeze(-1).to(combined.dtype)).sum(1)  # (T, D)
        stats = {
            "slots_per_expert": counts,  # c_e
            "mean_prob": probs.mean(0),  # p̄_e
            "z": torch.logsumexp(logits, dim=-1).pow(2).mean(),  # mean_t logsumexp^2
            "experts": experts,  # (T, k), for the dropless check
        }
        return y.view(B, S, D), stats


    def experts(self, slot_tokens: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """SwiGLU of every slot by its expert; slots are contiguous per expert."""
        grouped = self.c.grouped_mm if self.c.grouped_mm is not None else slot_tokens.is_cuda
        if grouped:  # one grouped GEMM per projection (bf16 on GPU)
            dtype = torch.bfloat16 if slot_tokens.is_cuda else slot_tokens.dtype
            offsets = counts.cumsum(0).to(torch.int32)  # (E,) end of each expert's slots
            x = slot_tokens.to(dtype)
            gate = F.grouped_mm(x, self.w_gate.to(dtype), offs=offsets)  # (T*k, Hd)
            up = F.grouped_mm(x, self.w_up.to(dtype), offs=offsets)  # (T*k, Hd)
            return F.grouped_mm(F.silu(gate) * up, self.w_down.to(dtype), offs=offsets).to(slot_tokens.dtype)
        outputs = torch.empty_like(slot_tokens)
        start = 0
        for e, n in enumerate(counts.tolist()):  # one matmul per expert over its contiguous slots
            if n:
                chunk = slot_tokens[start : start + n]  # (n, D)
                hidden = F.silu(chunk @ self.w_gate[e]) * (chunk @ self.w_up[e])  # (n, Hd)
                outputs[start : start + n] = hidden @ self.w_down[e]  # (n, D)
            start += n
        return outputs


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
        # idx, targets: (B, S) token ids
        x = self.embed(idx)  # (B, S, D)
        layer_stats = []
        for block in self.blocks:
            x, stats = block(x, self.rope_cos, self.rope_sin)
            layer_stats.append(stats)
        logits = self.head(self.norm(x))  # (B, S, V)
        out = {"logits": logits, "layer_stats": layer_stats}
        if targets is not None:
            ce = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
            lb, z = aux_losses(layer_stats, self.c)
            out.update(ce=ce, lb=lb, z=z, loss=ce + self.c.lb_weight * lb + self.c.z_weight * z)
        return out

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
