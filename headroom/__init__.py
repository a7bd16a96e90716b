"""headroom: memory signals, a guard and a vLLM batch worker for one GPU box."""

__version__ = "0.1.0"
