"""Analytic cost of the models: source counts (Table 10), Eq. 14, parameters, FLOPs, source memory.

Plain Python, no torch, so reports can import it. Every count here must equal what the real model
does; tests/test_cost.py checks that against the model and against the paper's numbers.
"""

from __future__ import annotations

from haares.config import ModelConfig
from haares.errors import HaaresError

ROUTING_SCHEMES = ("block_attnres", "haares")

# Table 10 of the paper at 48 layers: (residual, N) -> (average sources, max sources), as printed.
PAPER_TABLE10: dict[tuple[str, int], tuple[float, int]] = {
    ("block_attnres", 4): (3.46, 5),
    ("haares", 4): (5.92, 9),
    ("block_attnres", 6): (4.44, 7),
    ("haares", 6): (7.88, 13),
    ("block_attnres", 8): (5.42, 9),
    ("haares", 8): (9.83, 17),
}


def _block_size(n_layers: int, blocks: int) -> int:
    sublayers = 2 * n_layers
    if n_layers <= 0 or blocks <= 0 or sublayers % blocks or (sublayers // blocks) % 2:
        raise HaaresError(
            f"{blocks} blocks over {n_layers} layers do not give whole even blocks of sublayers; "
            f"choose blocks dividing {n_layers}"
        )
    return sublayers // blocks


def source_counts(residual: str, n_layers: int, blocks: int) -> list[int]:
    """Sources routed into each of the 2L sublayers, in order (Eq. 12, spec section 7).

    block_attnres: n + [i >= 2];  haares (and every HAARES ablation): 2n - 1 + 2[i >= 2],
    for block n = 1..N and position i = 1..S. The final readout is not included.
    """
    if residual not in ROUTING_SCHEMES:
        raise HaaresError(f"source counts exist only for {', '.join(ROUTING_SCHEMES)}; got {residual!r}")
    size = _block_size(n_layers, blocks)
    counts = []
    for n in range(1, blocks + 1):
        for i in range(1, size + 1):
            partial = 1 if i >= 2 else 0
            counts.append(n + partial if residual == "block_attnres" else 2 * n - 1 + 2 * partial)
    return counts


def source_stats(residual: str, n_layers: int, blocks: int) -> tuple[float, int]:
    """(average, maximum) sources per sublayer router (Eq. 13)."""
    counts = source_counts(residual, n_layers, blocks)
    return sum(counts) / len(counts), max(counts)


def table10(n_layers: int = 48) -> list[dict]:
    """Rows of Table 10: blocks N in (4, 6, 8) x {block_attnres, haares}.

    Keys: blocks, residual, avg_sources, max_sources, paper_avg, paper_max (paper values only at 48L,
    else None).
    """
    rows = []
    for blocks in (4, 6, 8):
        for residual in ROUTING_SCHEMES:
            avg, mx = source_stats(residual, n_layers, blocks)
            paper = PAPER_TABLE10.get((residual, blocks)) if n_layers == 48 else None
            rows.append(
                {
                    "blocks": blocks,
                    "residual": residual,
                    "avg_sources": avg,
                    "max_sources": mx,
                    "paper_avg": paper[0] if paper else None,
                    "paper_max": paper[1] if paper else None,
                }
            )
    return rows


def delta_sources(n_layers: int, blocks: int) -> float:
    """Average extra sources of HAARES over Block AttnRes: (N+1)/2 - N/(2L) (Eq. 13)."""
    return source_stats("haares", n_layers, blocks)[0] - source_stats("block_attnres", n_layers, blocks)[0]


def routing_flop_ratio(
    d_model: int, n_layers: int, blocks: int, d_ff: int | None = None, kappa: float = 8.0
) -> float:
    """Eq. 14: extra routing FLOPs of HAARES over Block AttnRes relative to the main projections.

    kappa * delta_sources * d / F_sub, with F_sub = (8 d^2 + 6 d d_ff) / 2 FLOPs per token per
    sublayer (attention and MLP averaged); d_ff defaults to 4d. A fraction, not a percentage.
    """
    d_ff = 4 * d_model if d_ff is None else d_ff
    f_sub = (8 * d_model**2 + 6 * d_model * d_ff) / 2
    return kappa * delta_sources(n_layers, blocks) * d_model / f_sub


def _scheme_params(cfg: ModelConfig) -> int:
    sublayers = 2 * cfg.n_layers
    if cfg.residual == "standard":
        return 0
    if cfg.residual == "rezero":
        return sublayers  # alpha per sublayer
    if cfg.residual == "layerscale":
        return sublayers * cfg.d_model  # gamma per sublayer
    if cfg.residual == "recurrent":  # loop embedding per effective layer, a skip scalar per later pass
        return cfg.repeats * cfg.n_layers * cfg.d_model + (cfg.repeats - 1) * cfg.n_layers
    if cfg.residual == "unet":
        return (cfg.n_layers // 2) * cfg.d_model  # per-channel skip weight per mirrored pair
    if cfg.residual == "golf_attnres":
        return cfg.n_layers * cfg.d_model  # one depth query per layer; keys carry no gain
    routers = (sublayers + 1) * 2 * cfg.d_model  # w and key gain, per sublayer + the readout
    if cfg.residual == "haares" and cfg.detail_bias == "learned":
        return routers + cfg.blocks  # beta in R^N
    return routers


def param_count(cfg: ModelConfig) -> int:
    """Exact trainable parameter count of build_model(cfg) (tied embedding once), with no allocation."""
    d = cfg.d_model
    attn = d + 4 * d * d  # PreNorm gain, Wq Wk Wv Wo
    attn += 2 if cfg.value_residual else 0  # value_mix
    attn += cfg.n_heads * (d + 1) if cfg.attn_gate else 0  # gate_weight (H, d), gate_bias (H,)
    mlp = d + 3 * d * cfg.d_ff  # PreNorm gain, W1 W3 W2
    return cfg.vocab_size * d + cfg.n_layers * (attn + mlp) + d + _scheme_params(cfg)


def non_embedding_params(cfg: ModelConfig) -> int:
    """param_count less the (tied) embedding matrix."""
    return param_count(cfg) - cfg.vocab_size * cfg.d_model


def effective_layers(cfg: ModelConfig) -> int:
    """Layers a token passes through: n_layers, times repeats for depth recurrence."""
    return cfg.n_layers * (cfg.repeats if cfg.residual == "recurrent" else 1)


def model_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (performance.md): 6 N_non_emb + 6 L T d (attention) + 6 V d (tied head).

    With depth recurrence every unique weight is applied `repeats` times, so the weight term and the
    attention term scale with the effective depth (the loop embedding is an addition, not counted).
    """
    passes = effective_layers(cfg) // cfg.n_layers
    return float(
        6 * passes * (non_embedding_params(cfg) - _scheme_params(cfg))
        + 6 * _scheme_params(cfg)
        + 6 * effective_layers(cfg) * seq_len * cfg.d_model
        + 6 * cfg.vocab_size * cfg.d_model
    )


def source_memory_bytes(cfg: ModelConfig, batch_size: int, seq_len: int, bytes_per_elem: int = 4) -> int:
    """Bytes held by materialised routing sources at the end of the forward pass.

    Block AttnRes keeps N+1 tensors (e, b_1..b_N) of B*T*d elements, HAARES 2N+1 (plus d_hat_1..d_hat_N;
    counted for every HAARES ablation, as each routes a tensor through that slot); golf_attnres keeps
    G detached snapshots (e and the G-1 inner block ends); 0 for the others.
    """
    slots = {"block_attnres": cfg.blocks + 1, "haares": 2 * cfg.blocks + 1, "golf_attnres": cfg.golf_blocks}
    slots = slots.get(cfg.residual, 0)
    return slots * batch_size * seq_len * cfg.d_model * bytes_per_elem
