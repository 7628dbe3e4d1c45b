"""Handheld's export side: model families, quantization, lowering to phone backends, parity."""
