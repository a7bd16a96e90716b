"""The worker: a vLLM batch runner with a durable priority queue and the control endpoint."""
