"""Training what DAISY adds to a frozen HuBERT: stage 1 (exit branches on HuBERT's own cluster
targets), calibration (per-layer entropy, tau), and writing the resulting checkpoints."""
