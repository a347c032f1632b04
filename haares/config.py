"""Run configuration: plain, JSON-native dataclasses and the run key.

Owns ModelConfig, DataConfig, TrainConfig and RunConfig, their validation, dotted-path overrides
and `run_key()`. Imports neither torch nor SQLAlchemy (the queue and reports use it).

Every value the paper's text lost is a field here, with the spec's default and the reason in its
attribute docstring; `ASSUMPTIONS` lists them in one place (model-spec.md section 9).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

ResidualName = Literal[
    "standard", "rezero", "layerscale", "block_attnres", "haares", "golf_attnres", "recurrent", "unet"
]
DetailName = Literal["half_split", "random_sign", "dup_cumulative"]
TokenizerName = Literal["char", "bpe4096"]
PrecisionName = Literal["fp32", "bf16"]
RouterImplName = Literal["auto", "reference", "fused", "triton", "triton_virtual"]
OptimizerName = Literal["adamw", "muon"]

# Model families of the paper (d_model, d_ff); 8 heads throughout.
FAMILIES: dict[str, tuple[int, int]] = {"small": (128, 1024), "medium": (512, 2048), "large": (768, 3072)}

# LayerScale init by depth (CaiT rule; model-spec.md section 6).
LAYERSCALE_INIT_BY_LAYERS: dict[int, float] = {12: 0.1, 24: 1e-5, 48: 1e-6}


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and what is allowed."""


@dataclass(frozen=True)
class ModelConfig:
    """The PreNorm decoder and its residual scheme (model-spec.md sections 1 to 6)."""

    vocab_size: int = 256
    """Token ids; 256 for the char tokenizer, 4096 for BPE."""
    d_model: int = 512
    """Hidden width d."""
    n_layers: int = 48
    """Transformer layers L; there are 2L sublayers (attn, mlp alternating)."""
    n_heads: int = 8
    """Attention heads."""
    d_ff: int = 2048
    """SwiGLU hidden width (three d x d_ff matrices, no 2/3 shrink)."""
    rope_max_len: int = 2048
    """Length of the precomputed RoPE table."""
    rope_base: float = 10000.0
    """[ASSUMPTION] RoPE theta; stripped in the paper, 10000 is the common default."""
    norm_eps: float = 1e-6
    """[ASSUMPTION] RMSNorm eps (backbone and router key norms); stripped in the paper."""
    init_std: float = 0.02
    """[ASSUMPTION] std of the normal init of embeddings and Linear weights."""
    residual: str = "haares"
    """Residual scheme: standard, rezero, layerscale, block_attnres, haares (the paper's), or
    golf_attnres, recurrent, unet (the parameter-golf records', docs/golf.md)."""

    # --- LayerScale ---
    layerscale_init: float | None = None
    """Initial gamma; None applies the depth rule 0.1 / 1e-5 / 1e-6 at 12 / 24 / 48 layers."""

    # --- Block AttnRes and HAARES ---
    blocks: int = 4
    """Block count N; each block has S = 2L/N sublayers, S must be a whole even number."""

    # --- HAARES ---
    detail: str = "half_split"
    """Detail source: half_split (paper), random_sign (ablation), dup_cumulative (Dup. b ablation)."""
    detail_bias: str | float = "learned"
    """'learned' (per-block scalar) or a fixed number (0, -2, -4 in the ablations)."""
    detail_bias_init: float = -2.0
    """[ASSUMPTION A1] init of the learned per-block detail bias."""
    rms_match: bool = True
    """RMS-match detail sources to their cumulative counterparts (Eq. 7); False is the ablation."""
    rms_eps: float = 1e-6
    """[ASSUMPTION A2] eps in the RMS-matching denominator."""
    rms_max_scale: float = 10.0
    """[ASSUMPTION A2] cap s_max on the RMS-matching factor."""
    sign_seed: int = 0
    """Seed of the fixed Rademacher signs of the random_sign ablation [ASSUMPTION A6]."""

    # --- backbone options from parameter-golf PR #413 (any scheme; docs/golf.md) ---
    value_residual: bool = False
    """Mix the first attention sublayer's raw values into every attention sublayer's values:
    v_l <- lambda_l,0 v_l + lambda_l,1 v_1 with learned scalars, init (1, 0)."""
    attn_gate: bool = False
    """Per-head sigmoid gate on the attention output, sigmoid(W_g x + b_g), W_g init 0."""
    attn_gate_bias_init: float = 4.0
    """Initial gate bias b_g (PR #413: 4, so every gate starts at sigmoid(4) = 0.982)."""

    # --- depth recurrence (residual="recurrent") ---
    repeats: int = 4
    """Passes r over the n_layers unique layers (effective depth n_layers * r); record 003: 3 x 4."""

    # --- parameter-golf Block AttnRes (residual="golf_attnres", PR #1696) ---
    golf_blocks: int = 2
    """Blocks of layers whose boundaries are snapshotted (detached) as routing sources (PR #1696: 2)."""
    golf_temperature: float = 1.1
    """Routing temperature T: logits = w . RMSNorm(s) / (sqrt(d) T) (PR #1696: 1.1)."""
    golf_blend: float = 0.25
    """Weight m of the routed mix in a layer's input: lerp(x, route, m) (PR #1696: 0.25)."""

    def __post_init__(self) -> None:
        _check_choice("model.residual", self.residual, ResidualName)
        _check_choice("model.detail", self.detail, DetailName)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "blocks", "rope_max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"model.d_model={self.d_model} must split into {self.n_heads} heads of even size (RoPE)"
            )
        if isinstance(self.detail_bias, str) and self.detail_bias != "learned":
            raise ConfigError(f"model.detail_bias must be 'learned' or a number, got {self.detail_bias!r}")
        if self.repeats <= 0 or self.golf_blocks <= 0:
            raise ConfigError(f"model.repeats and model.golf_blocks must be positive, got {self.repeats}, {self.golf_blocks}")
        if self.residual == "golf_attnres" and self.n_layers % self.golf_blocks:
            raise ConfigError(f"model.golf_blocks={self.golf_blocks} must divide n_layers={self.n_layers}")
        if self.golf_temperature <= 0 or not 0.0 <= self.golf_blend <= 1.0:
            raise ConfigError(
                f"model.golf_temperature must be > 0 and model.golf_blend in [0, 1]; "
                f"got {self.golf_temperature}, {self.golf_blend}"
            )
        if self.residual in ("block_attnres", "haares"):
            sublayers = 2 * self.n_layers
            if sublayers % self.blocks or (sublayers // self.blocks) % 2:
                raise ConfigError(
                    f"model.blocks={self.blocks} with {self.n_layers} layers gives blocks of "
                    f"{sublayers / self.blocks:g} sublayers; each block needs a whole even number "
                    f"(2*n_layers must be divisible by 2*blocks)"
                )

    @property
    def sublayers_per_block(self) -> int:
        """S = 2L/N."""
        return 2 * self.n_layers // self.blocks

    @property
    def resolved_layerscale_init(self) -> float:
        """LayerScale gamma init, from the field or the depth rule (nearest listed depth)."""
        if self.layerscale_init is not None:
            return self.layerscale_init
        nearest = min(LAYERSCALE_INIT_BY_LAYERS, key=lambda n: (abs(n - self.n_layers), n))
        return LAYERSCALE_INIT_BY_LAYERS[nearest]


@dataclass(frozen=True)
class DataConfig:
    """Which text, how it is tokenized, and how batches are drawn (data.md)."""

    dataset: str = "openwebtext"
    """A registry name (openwebtext, wikitext103, tinystories, yelp, codesearchnet_python,
    offline_english, offline_code)."""
    path: str | None = None
    """Local file or folder shaped like the hub dataset; None loads the hub dataset by name."""
    tokenizer: str = "char"
    """char (256 ids) or bpe4096 (byte-level BPE)."""
    seq_len: int = 512
    """Context length T; each sequence carries one extra target token."""
    data_seed: int = 42
    """Seed of the batch order; fixed across model seeds and schemes so pairs see the same batches."""
    eval_tokens: int = 1_048_576
    """Cap on validation tokens evaluated (first tokens of the split, in order); 0 = whole split."""

    def __post_init__(self) -> None:
        _check_choice("data.tokenizer", self.tokenizer, TokenizerName)
        if self.seq_len <= 0:
            raise ConfigError(f"data.seq_len must be positive, got {self.seq_len}")
        if self.eval_tokens < 0:
            raise ConfigError(f"data.eval_tokens must be >= 0, got {self.eval_tokens}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and measurement (product.md, Training protocol)."""

    steps: int = 30_000
    """Optimizer steps."""
    batch_size: int = 16
    """Sequences per step."""
    lr: float = 3e-4
    """[ASSUMPTION] constant learning rate (no warmup); stripped in the paper, 3e-4 to 6e-4 likely."""
    beta1: float = 0.9
    """[ASSUMPTION] AdamW beta1."""
    beta2: float = 0.95
    """[ASSUMPTION] AdamW beta2."""
    adam_eps: float = 1e-8
    """AdamW eps (PyTorch default)."""
    weight_decay: float = 0.01
    """Applied to Linear weights and the tied embedding only."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    eval_every: int = 2_000
    """Evaluate (and checkpoint) every N steps, and at the last step."""
    eval_batch_size: int = 16
    """Sequences per evaluation batch."""
    precision: str = "fp32"
    """fp32 as in the paper (TF32 off) or bf16 autocast (the fast path)."""

    optimizer: str = "adamw"
    """adamw (the paper's) or muon: Muon on the 2-D backbone Linear weights, AdamW on the rest."""
    muon_lr: float = 0.02
    """[ASSUMPTION] Muon learning rate (Muon's reference default; the records use 0.012 to 0.04)."""
    muon_momentum: float = 0.95
    """Muon Nesterov momentum (the records' and modded-nanogpt's 0.95)."""
    muon_ns_steps: int = 5
    """Quintic Newton-Schulz iterations per Muon update."""

    # --- the fast path (haares/fastpath.py): same function, other implementation ---
    router: str = "auto"
    """Router implementation: reference, fused (Inductor's bodies), triton (hand-written kernels, CUDA),
    triton_virtual (the kernels, HAARES's details never materialised), or auto (triton_virtual on CUDA
    with triton >= 3.3, else fused; reference on the CPU)."""
    compile: bool | None = None
    """torch.compile each sublayer and the routing glue; None = auto (on for CUDA, off on the CPU)."""
    cuda_graph: bool | None = None
    """Capture the whole training step (forward, backward, clip, optimizer) in one CUDA graph after a
    few eager warm-up steps; None = auto (on for CUDA with AdamW). CUDA only."""

    def __post_init__(self) -> None:
        _check_choice("train.precision", self.precision, PrecisionName)
        _check_choice("train.router", self.router, RouterImplName)
        _check_choice("train.optimizer", self.optimizer, OptimizerName)
        if self.muon_lr <= 0 or not 0.0 <= self.muon_momentum < 1.0 or self.muon_ns_steps <= 0:
            raise ConfigError(
                f"train.muon_lr must be > 0, muon_momentum in [0, 1), muon_ns_steps > 0; "
                f"got {self.muon_lr}, {self.muon_momentum}, {self.muon_ns_steps}"
            )
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class RunConfig:
    """One training run: model, data, optimisation and the model seed."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 42
    """Model seed: initial weights (data order has its own seed, data.data_seed)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Inverse of to_dict; unknown keys raise ConfigError."""
        return _from_dict(cls, raw, prefix="")

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what run_key hashes and the database stores.

        Fields added after runs were first keyed (KEYED_ONLY_OFF_DEFAULT) are left out while they
        hold their default, so adding an option never changes the key of an existing run.
        """
        raw = self.to_dict()
        for path in KEYED_ONLY_OFF_DEFAULT:
            section, name = path.split(".")
            default = next(f.default for f in fields(type(getattr(self, section))) if f.name == name)
            if raw[section][name] == default:
                del raw[section][name]
        return json.dumps(raw, sort_keys=True, separators=(",", ":"))

    def run_key(self) -> str:
        """Hash of the resolved config alone (not of any grid): one run, trained once."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def override(self, overrides: dict[str, Any]) -> RunConfig:
        """Apply dotted-path overrides such as {"model.residual": "haares", "seed": 123}."""
        return apply_overrides(self, overrides)


# Options added after the first runs were keyed: in the key (and stored JSON) only when not default.
KEYED_ONLY_OFF_DEFAULT: tuple[str, ...] = (
    "model.value_residual", "model.attn_gate", "model.attn_gate_bias_init", "model.repeats",
    "model.golf_blocks", "model.golf_temperature", "model.golf_blend",
    "train.optimizer", "train.muon_lr", "train.muon_momentum", "train.muon_ns_steps",
    "train.router", "train.compile", "train.cuda_graph",
)


def apply_overrides(cfg: Any, overrides: dict[str, Any], *, _prefix: str = "") -> Any:
    """Return a copy of a (nested, frozen) dataclass with dotted-path overrides applied.

    Unknown paths and values of the wrong type raise ConfigError, naming the path.
    """
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    names = {f.name for f in fields(cfg)}
    for path, value in overrides.items():
        head, _, rest = path.partition(".")
        if head not in names:
            raise ConfigError(f"unknown config key {_prefix + path!r}; known: {sorted(names)}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    hints = get_type_hints(type(cfg))
    for name, value in direct.items():
        direct[name] = _coerce(_prefix + name, value, hints[name])
    for name, sub in nested.items():
        current = getattr(cfg, name)
        if not is_dataclass(current):
            raise ConfigError(f"config key {_prefix + name!r} has no sub-keys")
        direct[name] = apply_overrides(current, sub, _prefix=f"{_prefix}{name}.")
    return dataclasses.replace(cfg, **direct)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse 'model.blocks=6' or 'train.lr=1e-3' (value as JSON, else as a plain string)."""
    path, sep, raw = text.partition("=")
    if not sep or not path:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.steps=200")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path.strip(), value


ASSUMPTIONS: dict[str, str] = {
    "model.rope_base": "RoPE theta 10000: stripped in the paper; the common default",
    "model.norm_eps": "RMSNorm eps 1e-6: stripped; also the router key-norm eps",
    "model.init_std": "normal(0, 0.02) init of embedding and Linear weights: stripped; GPT-2 default",
    "model.detail_bias_init": "-2 (A1): brackets the fixed-bias ablation {0,-2,-4}; keeps init near Block AttnRes",
    "model.rms_eps": "1e-6 (A2): the text contrasts it with AdamW's 1e-8",
    "model.rms_max_scale": "10 (A2): binds only when the halves nearly cancel",
    "model.sign_seed": "fixed Rademacher signs drawn once from this seed (A6)",
    "train.lr": "3e-4 constant, no warmup: stripped; the likely range is 3e-4 to 6e-4",
    "train.beta1/beta2": "AdamW (0.9, 0.95): stripped; the common LM choice",
    "router key norm": "affine RMSNorm per router, gain init 1 (A3)",
    "final readout": "learned zero-init router over {e, b_1..b_N} (A4)",
    "detail bias sharing": "one beta in R^N shared by all routers (A5)",
    "Dup. b bias": "the duplicate takes the detail slot with its learnable bias (A7)",
    "ReZero": "keeps the PreNorm inside the sublayer (A8)",
    "routing temperature": "none: no 1/sqrt(d), no T (A9)",
    "detaching": "sources never detached; only the RMS-match factor is (A10)",
    "eval set": "first 1,048,576 validation tokens (128 x 16 x 512), part of the run key",
    "model.value_residual": "value mix init (1, 0), two scalars in every layer (docs/golf.md)",
    "model.attn_gate": "gate weight init 0 (the card gives only the bias, 4)",
    "model.repeats": "Cross-Repeat Skip: one scalar per (pass >= 1, layer) on the previous pass's output; it and the loop embedding init 0",
    "unet skip weights": "per channel, init 1, as in the parameter-golf baseline script",
    "golf_attnres": "one route per layer; blend forms the attention input (stream keeps its identity path); keys without gain",
    "train.muon_lr": "0.02: Muon's reference default; no momentum warm-up",
}


# --- helpers -----------------------------------------------------------------------------------


def _check_choice(path: str, value: Any, literal: Any) -> None:
    allowed = get_args(literal)
    if value not in allowed:
        raise ConfigError(f"{path} must be one of {', '.join(allowed)}; got {value!r}")


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Check a JSON-native value against a field's type hint; ints pass as floats."""
    if is_dataclass(hint) and isinstance(value, dict):
        return _from_dict(hint, value, prefix=path + ".")
    options = get_args(hint) if get_origin(hint) is Union or type(hint).__name__ == "UnionType" else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    wanted = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"config key {path!r} expects {wanted}, got {value!r}")


def _from_dict(cls: Any, raw: dict[str, Any], *, prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(prefix + k for k in unknown)}")
    kwargs = {name: _coerce(prefix + name, value, hints[name]) for name, value in raw.items()}
    return cls(**kwargs)
