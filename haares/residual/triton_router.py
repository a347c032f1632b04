"""The fused router's two bodies as hand-written Triton kernels: each source row read once per pass.

Why: compiled by Inductor, the fused router's forward reads every source at about half the GPU's
bandwidth, and its backward runs as four kernels (the da reduction, the dV pass, dbias, du's column
sum), so each source is read twice. Here one program owns a block of rows (one row and one warp at
D = 512, `_layout`): the forward makes one pass over the sources with an online softmax (running
max and sum, as in flash attention); the backward makes two passes over the same rows in the same
program (the softmax's centring term, then dV), the second from cache, or from 9 sources on one pass
(the centring term as G . h, from the forward's output; `CENTRE_FROM_OUTPUT_AT`), and writes du and
dbias as per-program partials. In the backward, which slots are loaded, rebuilt or stored is decided by
predicated loads and stores, not branches, so the compiler can overlap one source's loads with the
previous one's reduction (the forward measured better with its branches: `_source`).
Measured on H100s (docs/performance.md): 12-26% less kernel time than Inductor's bodies a router call
(with branches), then 10-36% less in the backward kernel without them; HAARES / Block AttnRes step
time 1.215 on Inductor's bodies, 1.108 now.

Same algebra and same arguments as `fused_router._forward` / `_backward` (see there); only the
saved tensors differ: logits (M, R) and the softmax's max and sum (2, R) instead of the weights a,
which the backward recomputes per row. A detail source whose recipe rebuilds it from the source
before it (`Detail` with base = slot - 1, HAARES's half-split details) is rebuilt in both directions
from that source, its b^(h) and its scale, so it is neither saved nor read.

Sources are a Python tuple of tensors (Triton specialises the kernel per source count M); which
slots are rebuilt, which have b^(h) or a scale, and which have a running gradient sum are runtime
bit masks, so one compiled kernel per M serves every router of that width.
Runs on CUDA; on the CPU only under TRITON_INTERPRET=1 (the tests), not in training.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from haares.residual.recipes import unpack_recipes

MAX_SOURCES = 32
"""Sources per router the kernels take (bit masks are 32-bit); wider routers use the compiled bodies."""
MAX_WIDTH = 4096
"""Largest hidden size D: a program holds a block of rows of every source in registers."""
BACKWARD_LOOP = 1
"""Row blocks a backward program takes one after another (du's partials are this many times fewer).
1 (no loop) is the code that was measured; benchmarks/router_kernels.py's ROWSxWARPSxLOOP layouts time others."""
CENTRE_FROM_OUTPUT_AT = 9
"""Sources from which the backward takes its softmax centring term as G . h (h the forward's output, saved)
instead of a first pass over the sources. Measured on one H100 at D = 512, 8192 rows, backward kernel us
(docs/performance.md, "The centring term from the output"): M = 3 61 either way, M = 5 87 -> 95 (slower),
M = 9 156 -> 155, M = 17 389 -> 281."""


@triton.jit
def _bit(bits, m: tl.constexpr):
    """Whether slot m's bit is set in a runtime mask, a scalar i1 for tl.where (`_only`)."""
    return ((bits >> m) & 1) != 0


@triton.jit
def _clear(bits, m: tl.constexpr):
    """Whether slot m's bit is clear, a scalar i1."""
    return ((bits >> m) & 1) == 0


@triton.jit
def _only(cond, mask):
    """`mask` where the scalar `cond` holds, else all false: a predicated load or store then touches no
    memory. (tl.where, not `mask & cond`: in the interpreter that mixes a scalar from a Python int in
    as an integer, which tl.load refuses as a mask.)"""
    return tl.where(cond, mask, False)


@triton.jit
def _source(m: tl.constexpr, srcs, halves, scales, prev, offs, row, mask, rmask, detail_bits, half_bits, scale_bits,
            BRANCHES: tl.constexpr, fill_bits=0, rms_eps=0.0, max_scale=0.0, D: tl.constexpr = 1):
    """Source m of a row block, fp32 (ROWS, BLOCK_D): loaded, or rebuilt from the source before it.
    A slot in fill_bits (forward only) computes its scale, Eq. 7's sg(min(rms(base) / (rms(detail) +
    rms_eps), max_scale)) per row, from the rebuilt detail and its base (`prev`), and stores it.
    BRANCHES=False (the backward): each load is predicated on its slot's bits (a load whose mask is
    all false touches no memory), so the compiler may issue the next source's loads before this one is
    reduced: 10-36% less backward kernel time. BRANCHES=True (the forward): one branch per slot, which
    measured the same up to 9 sources and 20% faster at 17 (docs/performance.md, "Branch-free kernels")."""
    if BRANCHES:
        if (detail_bits >> m) & 1:
            v = prev
            if (half_bits >> m) & 1:
                v = 2 * tl.load(halves[m] + offs, mask=mask, other=0.0).to(tl.float32) - prev
            if (fill_bits >> m) & 1:
                scale = tl.sqrt(tl.sum(prev * prev, axis=1) / D) / (tl.sqrt(tl.sum(v * v, axis=1) / D) + rms_eps)
                scale = tl.minimum(scale, max_scale)
                tl.store(scales[m] + row, scale, mask=rmask)
                v = v * scale[:, None]
            elif (scale_bits >> m) & 1:
                v = v * tl.load(scales[m] + row, mask=rmask, other=0.0).to(tl.float32)[:, None]
        else:
            v = tl.load(srcs[m] + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        half = _bit(half_bits, m)
        loaded = tl.load(srcs[m] + offs, mask=_only(_clear(detail_bits, m), mask), other=0.0).to(tl.float32)
        b_half = tl.load(halves[m] + offs, mask=_only(half, mask), other=0.0).to(tl.float32)
        scale = tl.load(scales[m] + row, mask=_only(_bit(scale_bits, m), rmask), other=1.0).to(tl.float32)
        rebuilt = tl.where(half, 2 * b_half - prev, prev) * scale[:, None]  # x * 1.0 is x: no scale, same bits
        v = tl.where(_bit(detail_bits, m), rebuilt, loaded)
    return v


@triton.jit(do_not_specialize=["rows", "detail_bits", "half_bits", "scale_bits", "fill_bits"])
def _route_forward(
    srcs, halves, scales, u_ptr, bias_ptr, h_ptr, logit_ptr, norm_ptr, r_ptr, s_ptr,
    rows, eps, detail_bits, half_bits, scale_bits, fill_bits, rms_eps, max_scale,
    M: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
):
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    col = tl.arange(0, BLOCK_D)
    rmask = row < rows
    mask = rmask[:, None] & (col < D)[None, :]
    offs = row.to(tl.int64)[:, None] * D + col[None, :]
    u = tl.load(u_ptr + col, mask=col < D, other=0.0).to(tl.float32)[None, :]
    top = tl.full((ROWS,), float("-inf"), tl.float32)
    total = tl.zeros((ROWS,), tl.float32)
    acc = tl.zeros((ROWS, BLOCK_D), tl.float32)
    prev = tl.zeros((ROWS, BLOCK_D), tl.float32)
    for m in tl.static_range(M):
        v = _source(m, srcs, halves, scales, prev, offs, row, mask, rmask, detail_bits, half_bits, scale_bits, True,
                    fill_bits, rms_eps, max_scale, D)
        r = tl.rsqrt(tl.sum(v * v, axis=1) / D + eps)
        s = tl.sum(v * u, axis=1)
        logit = r * s + tl.load(bias_ptr + m).to(tl.float32)
        new_top = tl.maximum(top, logit)
        rescale = tl.exp(top - new_top)
        p = tl.exp(logit - new_top)
        total = total * rescale + p
        acc = acc * rescale[:, None] + p[:, None] * v
        top = new_top
        tl.store(logit_ptr + m * rows + row, logit, mask=rmask)
        tl.store(r_ptr + m * rows + row, r, mask=rmask)
        tl.store(s_ptr + m * rows + row, s, mask=rmask)
        prev = v
    tl.store(h_ptr + offs, acc / total[:, None], mask=mask)
    # The softmax's max and sum, not their log-sum-exp: top + log(total) would round away what
    # exp(logit - top) / total keeps (the reference's own rounding).
    tl.store(norm_ptr + row, top, mask=rmask)
    tl.store(norm_ptr + rows + row, total, mask=rmask)


@triton.jit
def _backward_rows(
    row, srcs, halves, scales, sums, grads, half_sums, half_grads, g_ptr, h_ptr, u_ptr, logit_ptr, norm_ptr, r_ptr,
    s_ptr, dl_ptr, rows, detail_bits, half_bits, scale_bits, sum_bits, virtual_bits, half_sum_bits,
    M: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, CENTRE_FROM_OUTPUT: tl.constexpr,
):
    """The backward of one block of rows: writes their dV and dl; returns their w summed over rows (BLOCK_D,).
    A virtual slot (a detail never materialised) writes no dV: d_hat = (base or 2 b^(h) - base) * scale,
    so its gradient g goes to its base (the slot before it, whose store waits for it) as +-scale * g and
    to b^(h)'s running sum as 2 * scale * g."""
    col = tl.arange(0, BLOCK_D)
    rmask = row < rows
    mask = rmask[:, None] & (col < D)[None, :]
    offs = row.to(tl.int64)[:, None] * D + col[None, :]
    u = tl.load(u_ptr + col, mask=col < D, other=0.0).to(tl.float32)[None, :]
    G = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    top = tl.load(norm_ptr + row, mask=rmask, other=0.0)
    total = tl.load(norm_ptr + rows + row, mask=rmask, other=1.0)
    # The softmax's centring term, mean_da = sum_m a_m (G . v_m).
    if CENTRE_FROM_OUTPUT:  # = G . h, h = sum_m a_m v_m the forward's output: one row read, no pass over the sources
        mean_da = tl.sum(G * tl.load(h_ptr + offs, mask=mask, other=0.0), axis=1)
    else:  # a first pass over the sources (from L2 in the second)
        mean_da = tl.zeros((ROWS,), tl.float32)
        prev = tl.zeros((ROWS, BLOCK_D), tl.float32)
        for m in tl.static_range(M):
            v = _source(m, srcs, halves, scales, prev, offs, row, mask, rmask, detail_bits, half_bits, scale_bits,
                        False)
            a = tl.exp(tl.load(logit_ptr + m * rows + row, mask=rmask, other=0.0) - top) / total
            mean_da += a * tl.sum(v * G, axis=1)
            prev = v
    # Then: dV_m = a_m G + dl_m (r_m u - s_m r_m^3 v_m / D), plus the source's running sum;
    # w = sum_m dl_m r_m v_m, summed over this block's rows for du.
    w = tl.zeros((ROWS, BLOCK_D), tl.float32)
    prev = tl.zeros((ROWS, BLOCK_D), tl.float32)
    held = tl.zeros((ROWS, BLOCK_D), tl.float32)  # a base's gradient, until its virtual detail adds in
    for m in tl.static_range(M):
        v = _source(m, srcs, halves, scales, prev, offs, row, mask, rmask, detail_bits, half_bits, scale_bits, False)
        a = tl.exp(tl.load(logit_ptr + m * rows + row, mask=rmask, other=0.0) - top) / total
        r = tl.load(r_ptr + m * rows + row, mask=rmask, other=0.0)
        s = tl.load(s_ptr + m * rows + row, mask=rmask, other=0.0)
        dl = a * (tl.sum(v * G, axis=1) - mean_da)
        c = dl * r
        grad = a[:, None] * G + c[:, None] * u - (c * s * r * r / D)[:, None] * v
        grad += tl.load(sums[m] + offs, mask=_only(_bit(sum_bits, m), mask), other=0.0).to(tl.float32)
        # Stores predicated as the loads are (no branches): a virtual slot's scaled gradient joins its
        # base's (held since the slot before) and goes to b^(h)'s running sum; other slots store their own.
        virtual = _bit(virtual_bits, m)
        half = _bit(half_bits, m)
        scaled = grad * tl.load(scales[m] + row, mask=_only(_bit(scale_bits, m), rmask), other=1.0).to(tl.float32)[:, None]
        joined = tl.where(half, held - scaled, held + scaled)
        to_half = 2 * scaled + tl.load(half_sums[m] + offs, mask=_only(virtual & half & _bit(half_sum_bits, m), mask),
                                       other=0.0).to(tl.float32)
        tl.store(half_grads[m] + offs, to_half, mask=_only(virtual & half, mask))
        tl.store(grads[m - 1] + offs, joined, mask=_only(virtual, mask))  # slot 0 (the embedding) is never virtual
        base_of_next = _bit(virtual_bits, m + 1)
        tl.store(grads[m] + offs, grad, mask=_only(_clear(virtual_bits, m) & _clear(virtual_bits, m + 1), mask))
        held = tl.where(virtual, joined, tl.where(base_of_next, grad, held))  # base_of_next: store after it adds in
        tl.store(dl_ptr + m * rows + row, dl, mask=rmask)
        w += c[:, None] * v
        prev = v
    return tl.sum(w, axis=0)


@triton.jit(do_not_specialize=["rows", "detail_bits", "half_bits", "scale_bits", "sum_bits", "virtual_bits",
                               "half_sum_bits"])
def _route_backward(
    srcs, halves, scales, sums, grads, half_sums, half_grads, g_ptr, h_ptr, u_ptr, logit_ptr, norm_ptr, r_ptr, s_ptr,
    dl_ptr, du_ptr, rows, detail_bits, half_bits, scale_bits, sum_bits, virtual_bits, half_sum_bits,
    M: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, LOOP: tl.constexpr,
    CENTRE_FROM_OUTPUT: tl.constexpr,
):
    # LOOP row blocks a program, one after another: du's partials are LOOP times fewer.
    pid = tl.program_id(0)
    col = tl.arange(0, BLOCK_D)
    if LOOP == 1:  # no loop at all: the code that was measured (docs/performance.md)
        du = _backward_rows(
            pid * ROWS + tl.arange(0, ROWS), srcs, halves, scales, sums, grads, half_sums, half_grads, g_ptr, h_ptr,
            u_ptr, logit_ptr, norm_ptr, r_ptr, s_ptr, dl_ptr, rows, detail_bits, half_bits, scale_bits, sum_bits,
            virtual_bits, half_sum_bits, M, D, BLOCK_D, ROWS, CENTRE_FROM_OUTPUT,
        )
    else:
        du = tl.zeros((BLOCK_D,), tl.float32)
        for i in tl.range(LOOP):
            du += _backward_rows(
                (pid * LOOP + i) * ROWS + tl.arange(0, ROWS), srcs, halves, scales, sums, grads, half_sums,
                half_grads, g_ptr, h_ptr, u_ptr, logit_ptr, norm_ptr, r_ptr, s_ptr, dl_ptr, rows, detail_bits, half_bits,
                scale_bits, sum_bits, virtual_bits, half_sum_bits, M, D, BLOCK_D, ROWS, CENTRE_FROM_OUTPUT,
            )
    tl.store(du_ptr + pid * D + col, du, mask=col < D)


def _layout(D: int) -> tuple[int, int, int]:
    """(BLOCK_D, ROWS, num_warps) for hidden size D: about 512 values of a tile per warp, one warp a
    program up to D = 512. Small programs, many per SM, keep the most loads in flight: on an H100 at
    D = 512 one row and one warp a program beat every larger tile for M = 5 to 17 sources
    (benchmarks/router_kernels.py; 8 rows and 8 warps ran 1.3-2x slower)."""
    block_d = triton.next_power_of_2(D)
    rows = max(1, 512 // block_d)
    return block_d, rows, max(1, block_d * rows // 512)


def _or(tensors, stand_in: torch.Tensor) -> tuple:
    """The tensors as a kernel argument, `stand_in` where one is None (the kernel never touches it: a
    bit mask says so)."""
    return tuple(t if t is not None else stand_in for t in tensors)


def _bits(flags) -> int:
    return sum(1 << m for m, on in enumerate(flags) if on)


class Recipes:
    """`Detail` recipes as the kernels take them: per slot b^(h) and scale (or a stand-in), bit masks
    (detail, half, scale), and the slots whose scales the forward fills with their Eq. 7 parameters."""

    def __init__(self, n_sources: int, recipes: tuple, extras, stand_in: torch.Tensor) -> None:
        self.halves, self.scales = [stand_in] * n_sources, [stand_in] * n_sources
        detail, fills = [False] * n_sources, [None] * n_sources
        for slot, _base, half, scale, fill in unpack_recipes(recipes, extras):
            detail[slot], fills[slot] = True, fill
            self.halves[slot] = half if half is not None else stand_in
            self.scales[slot] = scale if scale is not None else stand_in
        self.bits = (_bits(detail), _bits(h is not stand_in for h in self.halves),
                     _bits(s is not stand_in for s in self.scales))
        params = {fill for fill in fills if fill is not None}
        if len(params) > 1:
            raise ValueError(f"one router call fills scales with one (eps, max_scale), not {sorted(params)}")
        # (fill bits, eps, max_scale); 0.0s where nothing is filled
        self.fill = (_bits(f is not None for f in fills), *(params.pop() if params else (0.0, 0.0)))


def supports(values, recipes: tuple, extras=()) -> bool:
    """Whether the kernels take this router call: contiguous fp32/bf16/fp16 sources of one shape (and
    contiguous recipe extras), at most MAX_SOURCES of them, D <= MAX_WIDTH, each recipe rebuilding its
    slot from the slot before it."""
    if not all(x.is_contiguous() for x in extras):
        return False
    shown = [v for v in values if v is not None]
    if not shown or len(values) > MAX_SOURCES or shown[0].shape[-1] > MAX_WIDTH:
        return False
    rebuilt = {slot for slot, *_ in recipes}
    if any(base != slot - 1 or base in rebuilt for slot, base, *_ in recipes):
        return False
    if any(v is None and m not in rebuilt for m, v in enumerate(values)):
        return False
    return all(v.dtype in (torch.float32, torch.bfloat16, torch.float16) and v.is_contiguous()
               and v.shape == shown[0].shape for v in shown)


def forward(values: list[torch.Tensor], u: torch.Tensor, biases: torch.Tensor, eps: float, recipes: tuple, extras):
    """values M x (B, T, D), u (D,) fp32, biases (M,), recipes and their extras (the slots they rebuild
    are rebuilt, not read) -> h (B, T, D) fp32 and the saved (logits (M, R), the softmax's max and sum
    (2, R), r (M, R), s (M, R), h itself); R = B * T rows. h is saved for the backward's centring term
    (G . h); it is the router's output, so where the sublayer's backward keeps h too, saving it costs
    no memory."""
    shape = values[0].shape  # the embedding: never virtual
    D, M = shape[-1], len(values)
    rows = values[0].numel() // D
    block_d, rows_per, warps = _layout(D)
    h = torch.empty(shape, device=u.device, dtype=torch.float32)
    logits, r, s = (torch.empty(M, rows, device=u.device, dtype=torch.float32) for _ in range(3))
    norm = torch.empty(2, rows, device=u.device, dtype=torch.float32)  # softmax max and sum per row
    book = Recipes(M, recipes, extras, stand_in=h)
    _route_forward[(triton.cdiv(rows, rows_per),)](
        _or(values, h), tuple(book.halves), tuple(book.scales), u, biases, h, logits, norm, r, s, rows, eps, *book.bits,
        *book.fill, M=M, D=D, BLOCK_D=block_d, ROWS=rows_per, num_warps=warps,
    )
    return h, (logits, norm, r, s, h)


def backward(values: list, dtypes: list, u: torch.Tensor, G: torch.Tensor, saved: tuple, recipes: tuple, extras,
             sums: list, virtual: list, half_sums: list):
    """values: M x (B, T, D) or None where a recipe rebuilds the slot; dtypes: the M sources' dtypes;
    G (B, T, D); saved from `forward`; sums: running gradient sums or None; virtual: per slot, a detail
    never materialised (its gradient goes to its base and b^(h)); half_sums: those b^(h)s' running
    sums or None. Returns dV (M x (B, T, D), each in its source's dtype, its running sum added; None for
    virtual slots), du (D,) fp32, dbias (M,) fp32, and per virtual slot with a b^(h) that b^(h)'s new
    running sum (else None)."""
    logits, norm, r, s, h = saved
    M, rows = logits.shape
    D = G.shape[-1]
    block_d, rows_per, warps = _layout(D)
    blocks = triton.cdiv(rows, rows_per * BACKWARD_LOOP)
    book = Recipes(M, recipes, extras, stand_in=G)
    shown = _or(values, G)  # a rebuilt slot's pointer is never read
    grads = [G if virtual[m] else torch.empty(G.shape, device=G.device, dtype=dt) for m, dt in enumerate(dtypes)]
    half_grads = [torch.empty(G.shape, device=G.device, dtype=book.halves[m].dtype)
                  if virtual[m] and book.halves[m] is not G else None for m in range(M)]
    dl = torch.empty(M, rows, device=G.device, dtype=torch.float32)
    du_parts = torch.empty(blocks, D, device=G.device, dtype=torch.float32)
    _route_backward[(blocks,)](
        shown, tuple(book.halves), tuple(book.scales), _or(sums, G), tuple(grads), _or(half_sums, G),
        _or(half_grads, G), G.contiguous(), h, u, logits, norm, r, s, dl, du_parts,
        rows, *book.bits, _bits(x is not None for x in sums), _bits(virtual), _bits(x is not None for x in half_sums),
        M=M, D=D, BLOCK_D=block_d, ROWS=rows_per, LOOP=BACKWARD_LOOP, CENTRE_FROM_OUTPUT=M >= CENTRE_FROM_OUTPUT_AT,
        num_warps=warps,
    )
    return [None if virtual[m] else g for m, g in enumerate(grads)], du_parts.sum(0), dl.sum(1), half_grads

