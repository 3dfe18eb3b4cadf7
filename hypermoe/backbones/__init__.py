"""Real transformer backbones whose FFNs are swapped for MoE layers at run time."""
