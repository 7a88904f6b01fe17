"""Making a STOP scorer: Monte Carlo labels, training, checkpoints (the authors' release layout)."""
