"""Residual-scheme registry: name -> class, one module per scheme, and `build_residual(cfg)`."""

from __future__ import annotations

from haares.config import ConfigError, ModelConfig
from haares.residual.base import Residual
from haares.residual.block_attnres import BlockAttnRes
from haares.residual.golf_attnres import GolfAttnRes
from haares.residual.haares import Haares
from haares.residual.recurrent import Recurrent
from haares.residual.simple import LayerScale, ReZero, Standard
from haares.residual.unet import UNet

RESIDUALS: dict[str, type[Residual]] = {
    "standard": Standard,
    "rezero": ReZero,
    "layerscale": LayerScale,
    "block_attnres": BlockAttnRes,
    "haares": Haares,
    # The parameter-golf records' schemes (docs/golf.md)
    "golf_attnres": GolfAttnRes,
    "recurrent": Recurrent,
    "unet": UNet,
}


def build_residual(cfg: ModelConfig) -> Residual:
    """The scheme named by cfg.residual, uninitialised (GPT.init_weights resets it)."""
    if cfg.residual not in RESIDUALS:
        raise ConfigError(f"unknown model.residual {cfg.residual!r}; known: {', '.join(RESIDUALS)}")
    return RESIDUALS[cfg.residual](cfg)


__all__ = [
    "RESIDUALS", "Residual", "build_residual", "BlockAttnRes", "GolfAttnRes", "Haares", "LayerScale", "Recurrent",
    "ReZero", "Standard", "UNet",
]
