"""Fine-tuning VRS-HQ on logged corrections: clips -> training step -> trainer -> merged checkpoint."""
