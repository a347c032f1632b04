"""haares: paired-experiment orchestrator for residual-routing research (the HAARES paper)."""

__version__ = "0.1.0"
