"""Export wrappers: fixed shapes, named inputs/outputs, no data-dependent control flow.

The SqueezeSAM module itself is already export-clean (forward(image, clicks) -> logits); the
teacher is split into its encode-once image encoder and its per-prompt box decoder, which is how
a SAM-family app runs it (encoder once per photo, decoder per click).
"""

from __future__ import annotations

import torch.nn as nn

SQUEEZESAM_IO = (["image", "clicks"], ["mask_logits"])  # export/bundle/contract.py SAM_*_NAMES
TEACHER_ENCODER_IO = (["image"], ["embedding"])
TEACHER_DECODER_IO = (["embedding", "box"], ["logits"])


class TeacherEncoder(nn.Module):
    """image [1,3,S,S] in [0,1] -> embedding [1,256,S/4,S/4] (LiteMedSAM: S=256, 64x64)."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, image):
        return self.teacher.embed(image)


class TeacherDecoder(nn.Module):
    """(embedding, box [1,4] x0,y0,x1,y1 in input pixels) -> mask logits [1,1,S,S].

    Box prompts: LiteMedSAM was trained on boxes (its point prompts give empty masks), and the
    box path has no label-dependent indexing, so it exports with fixed shapes.
    """

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, embedding, box):
        logits, _ = self.teacher.decode(embedding, box=box)
        return logits
