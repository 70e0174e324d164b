"""Engine layer (torch, sam2): model variants, checkpoints, loading, candidate masks, propagation."""
