"""LongVU on a small LLM: compressed video tokens, exported pieces, host-side selection."""
