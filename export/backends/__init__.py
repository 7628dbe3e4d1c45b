"""Lowering to phone backends. One module per backend; each exposes its lowering functions."""
