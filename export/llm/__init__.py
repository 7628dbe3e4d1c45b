"""The Llama-family LLM path: model, checkpoints, quantization, export wrapper."""
