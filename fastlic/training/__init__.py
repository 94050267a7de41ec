"""Training: data loading, the rate-distortion loop, checkpoints."""
