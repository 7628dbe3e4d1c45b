"""Simulated quantization for measuring accuracy (the paper's W/A/KV settings) and GPTQ.

The deployable integer quantization of an export lives in `export.llm.quantize`; this package
is the reference math the rotations are learned and judged with.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import HandheldError


@dataclass(frozen=True)
class QuantScheme:
    """One column of the accuracy table. 16 bits = not quantized; group None = per-channel."""

    name: str
    w_bits: int = 16
    w_group: int | None = None
    a_bits: int = 16
    kv_bits: int = 16
    w_clip_search: bool = True  # RTN clipping-ratio search (SpinQuant's w_clip)

    def __post_init__(self):
        for what, bits in (("w_bits", self.w_bits), ("a_bits", self.a_bits), ("kv_bits", self.kv_bits)):
            if bits not in (2, 3, 4, 6, 8, 16):
                raise HandheldError(f"{self.name}: {what}={bits} is not supported", "use 2, 3, 4, 6, 8 or 16")
        if self.w_group is not None and self.w_group <= 0:
            raise HandheldError(f"{self.name}: w_group={self.w_group}", "use a positive group size or None")

    @property
    def quantized_kv(self) -> bool:
        return self.kv_bits < 16


SCHEMES = {
    s.name: s
    for s in (
        QuantScheme("W4A16g32", w_bits=4, w_group=32),
        QuantScheme("W4A8KV8", w_bits=4, a_bits=8, kv_bits=8),
        QuantScheme("W4A4KV4", w_bits=4, a_bits=4, kv_bits=4),
    )
}
