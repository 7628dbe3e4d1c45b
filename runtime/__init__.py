"""Handheld's runtime side: run exported artifacts alone (no eager model), generate, segment."""
