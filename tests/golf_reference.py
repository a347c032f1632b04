"""Direct, unoptimised transcriptions of docs/golf.md's three schemes, for the parity tests in
test_residuals.py (not a test module itself). f(k, h) is sublayer k applied to h."""

from __future__ import annotations

import math

import torch

GOLF_SCHEMES = ("recurrent", "unet", "golf_attnres")


def golf_reference_stream(model, e: torch.Tensor, f) -> torch.Tensor:
    """The stream handed to the final norm, written from the equations in docs/golf.md."""
    cfg, res, L = model.cfg, model.residual, model.cfg.n_layers

    def layer(j, x):
        x = x + f(2 * j, x)
        return x + f(2 * j + 1, x)

    x = e
    if cfg.residual == "recurrent":
        last_pass = {}
        for r in range(cfg.repeats):
            this_pass = {}
            for j in range(L):
                x = x + res.loop_embed[r * L + j]
                if r >= 1:
                    x = x + res.cross_skip[r - 1, j] * last_pass[j]
                x = layer(j, x)
                this_pass[j] = x
            last_pass = this_pass
    elif cfg.residual == "unet":
        E, z = L // 2, []
        for j in range(L):
            if E <= j < 2 * E:  # decoder layer i = j - E reads encoder layer E - 1 - i
                x = x + res.skip_weight[j - E] * z[E - 1 - (j - E)]
            x = layer(j, x)
            if j < E:
                z.append(x)
    elif cfg.residual == "golf_attnres":
        per_block, D = L // cfg.golf_blocks, cfg.d_model
        bank = [e.detach()]
        for j in range(L):
            S = torch.stack(bank)  # (M, B, T, D)
            keys = S / torch.sqrt(S.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
            logits = torch.einsum("d,mbtd->mbt", res.query[j], keys) / (math.sqrt(D) * cfg.golf_temperature)
            routed = torch.einsum("mbt,mbtd->btd", logits.softmax(0), S)
            h = (1 - cfg.golf_blend) * x + cfg.golf_blend * routed
            x = x + f(2 * j, h)
            x = x + f(2 * j + 1, x)
            if (j + 1) % per_block == 0 and j + 1 < L:
                bank.append(x.detach())
    else:
        raise ValueError(cfg.residual)
    return x
