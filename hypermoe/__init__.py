"""hypermoe: a config-driven framework to study mixture-of-experts layers and HyperMoE."""

__version__ = "0.1.0"
