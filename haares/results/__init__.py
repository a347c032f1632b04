"""Reports: per-seed tables, paired deltas, time-to-target, cost tables and plots. Never imports torch."""
