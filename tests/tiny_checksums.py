"""Checksums of the tiny exports, for moves that must not change artifacts (issue 16's rule).

    PYTHONHASHSEED=0 python -m tests.tiny_checksums OUT        # export every family to every backend
    python -m tests.tiny_checksums --compare BEFORE AFTER      # the two runs' files, side by side

Run the "before" from a checkout of the old commit (git worktree), the "after" from the new one.
What counts as the same file: .pte and weight blobs byte for byte; .onnx with each node's
metadata removed (the exporter records stack traces: paths and line numbers); an mlpackage's
model.mlmodel by its spec serialized deterministically (map order varies). The CoreML-delegate
.pte embeds a random identifier per export and is not compared. PYTHONHASHSEED=0: CoreML's
stateful decoder conversion orders ops by set iteration.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

SKIP_SUFFIXES = (".json", ".png", ".html", ".txt", ".pt")
NONDETERMINISTIC = ("model_coreml_delegate.pte",)


def export_all(out: Path) -> None:
    import torch

    from export.config import Backend, LLMQuantConfig
    from export.llm.quant_coreml import simulate_coreml_weights
    from export.llm.quant_onnx import simulate_matmulnbits
    from export.llm.quantize import quantize_llm
    from export.longvu.config import PRESETS
    from export.longvu.export import export_longvu
    from export.longvu.pipeline import build_model
    from export.sam.config import SAM_PRESETS, SamExportConfig
    from export.sam.export import export_sam
    from export.sam.model import build, save_checkpoint
    from tests.llm_helpers import export_tiny, random_calibration, tiny_decoder
    from tests.longvu_helpers import tiny_checkpoint

    quantizers = {
        "executorch": lambda model, quant, calibration=None: quantize_llm(model, quant, calibration),
        "onnx": simulate_matmulnbits,
        "coreml": simulate_coreml_weights,
    }
    for backend, quantizer in quantizers.items():
        m = tiny_decoder()
        export_tiny(
            m, out / f"llm-{backend}", backend, quantizer, LLMQuantConfig(), 40, calibration=random_calibration(m)
        )

    torch.manual_seed(0)
    model = build(SAM_PRESETS["tiny-test"]).eval()
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    save_checkpoint(model, out / "tiny.pt", half=False)
    for b in Backend:
        cfg = SamExportConfig(checkpoint=str(out / "tiny.pt"), backend=b, calibration_images=2, enforce_parity=False)
        export_sam(cfg, out / f"sam-{b.value}")

    tiny = PRESETS["longvu-tiny"]
    base = dataclasses.replace(tiny, llm=dataclasses.replace(tiny.llm, max_seq_len=512), max_new_tokens=24)
    checkpoint = tiny_checkpoint()
    for b in Backend:
        cfg = dataclasses.replace(base, backend=b.value, quantize_vision=b is Backend.EXECUTORCH)
        export_longvu(cfg, out / f"longvu-{b.value}", check_parity=False, model=build_model(cfg, checkpoint))


def file_key(path: Path) -> str:
    """sha256 of what must stay the same in `path` (see the module docstring)."""
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path))
        for nodes in [model.graph.node, *(f.node for f in model.functions)]:
            for node in nodes:
                del node.metadata_props[:]
                node.doc_string = ""
        del model.metadata_props[:]
        data = model.SerializeToString()
    elif path.name == "model.mlmodel":
        import coremltools as ct

        data = ct.utils.load_spec(str(path.parents[2])).SerializeToString(deterministic=True)
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def checksums(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): file_key(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix not in SKIP_SUFFIXES and p.name not in NONDETERMINISTIC
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--compare", action="store_true", help="compare two earlier runs' folders")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (checksums(f) for f in args.folders[:2])
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        print(json.dumps({"compared": len(before.keys() | after.keys()), "differ": differ}, indent=1))
        return 1 if differ else 0
    out = args.folders[0]
    export_all(out)
    (out / "checksums.json").write_text(json.dumps(checksums(out), indent=1) + "\n")
    print(f"{out / 'checksums.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
