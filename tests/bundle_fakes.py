"""Tiny fake artifacts for bundle/device/report tests: real manifests (write_manifest), fake weights.

Each manifest carries exactly the contract keys (export/bundle/contract.py) plus what
write_manifest adds, so a test passing here proves the apps need nothing more.
"""

from __future__ import annotations

import json
from pathlib import Path

from export.bundle import contract
from export.manifest import write_manifest

LLM_VOCAB, SAM_SIZE = 97, 64


def io(names, shapes, dtypes):
    return [{"name": n, "dtype": d, "shape": s} for n, s, d in zip(names, shapes, dtypes)]


def tokenizer_fields(folder: Path) -> dict:
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}}}))
    return {"file": "tokenizer.json", "bos_id": 1, "eos_ids": [2], "chat_template": "{{ messages }}"}


def make_llm(root: Path, backend: str = "executorch", name: str = "llm") -> Path:
    folder = Path(root) / name
    folder.mkdir(parents=True)
    model_file = {"executorch": "model.pte", "onnx": "model.onnx", "coreml": "model.mlpackage"}[backend]
    (folder / model_file).write_bytes(b"PTE-FAKE" * 64)
    write_manifest(
        folder,
        "llm",
        backend=backend,
        model_file=model_file,
        inputs=io(contract.LLM_INPUT_NAMES, [[1, "seq"], [1]], ["int64", "int64"]),
        outputs=io(contract.LLM_OUTPUT_NAMES, [[1, LLM_VOCAB]], ["float32"]),
        tokenizer=tokenizer_fields(folder),
        max_seq_len=128,
        **{contract.LLM_CONTEXT: dict(zip(contract.LLM_CONTEXT_KEYS, (4, 64, "recompute")))},
        parity={"passed": True, "logits_cosine_min": 0.998, "greedy_agreement": 0.97},
    )
    return folder


def make_sam(root: Path, backend: str = "executorch", name: str = "sam") -> Path:
    folder = Path(root) / name
    folder.mkdir(parents=True)
    if backend == "coreml":  # an .mlpackage is a folder
        model_file = "model.mlpackage"
        (folder / model_file / "Data").mkdir(parents=True)
        (folder / model_file / "Manifest.json").write_text("{}")
        (folder / model_file / "Data" / "model.mlmodel").write_bytes(b"MIL" * 32)
    else:
        model_file = "model.pte"
        (folder / model_file).write_bytes(b"SAM-FAKE" * 64)
    s = SAM_SIZE
    write_manifest(
        folder,
        "sam",
        backend=backend,
        model_file=model_file,
        inputs=io(contract.SAM_INPUT_NAMES, [[1, 3, s, s], [1, 2, s, s]], ["float32", "float32"]),
        outputs=io(contract.SAM_OUTPUT_NAMES, [[1, 1, s, s]], ["float32"]),
        preprocessing={
            "image_size": s,
            "resize": "longest_side",
            "pad": "bottom_right",
            "pixel_mean": [0.485, 0.456, 0.406],
            "pixel_std": [0.229, 0.224, 0.225],
        },
        clicks={"encoding": "gaussian", "sigma_px": 5.0, "max_clicks": 16, "prev_mask_channel": False},
        mask_threshold=0.0,
        parity={"passed": True, "iou_median": 0.97, "iou_worst": 0.91},
    )
    return folder


def make_longvu(root: Path, backend: str = "executorch", name: str = "longvu") -> Path:
    folder = Path(root) / name
    folder.mkdir(parents=True)
    shapes = {
        "pixels": [1, 3, 56, 56],
        "feats": [1, 16, 24],
        "hi": [1, 144, 64],
        "lo": [1, 64, 64],
        "tokens": [1, "seq"],
        "embeds": [1, "seq", 64],
        "input_pos": [1],
        "logits": [1, LLM_VOCAB],
    }
    dtype = lambda n: "int64" if n in ("tokens", "input_pos") else "float32"  # noqa: E731
    methods = {
        m: {
            "inputs": io(i, [shapes[n] for n in i], [dtype(n) for n in i]),
            "outputs": io(o, [shapes[n] for n in o], [dtype(n) for n in o]),
        }
        for m, (i, o) in contract.LONGVU_IO.items()
    }
    if backend == "executorch":
        model_file = "longvu.pte"
        (folder / model_file).write_bytes(b"LONGVU" * 32)
    else:  # one .mlpackage per method under one folder
        model_file = "mlpackages"
        for m in methods:
            methods[m]["file"] = f"{model_file}/{m}.mlpackage"
            (folder / methods[m]["file"]).mkdir(parents=True)
            (folder / methods[m]["file"] / "weights.bin").write_bytes(m.encode() * 16)
    write_manifest(
        folder,
        "longvu",
        backend=backend,
        model_file=model_file,
        methods=methods,
        config={
            "video": {"fps": 1.0, "max_frames": 32, "decode_size": 64},
            "dino": {"image_size": 56},
            "siglip": {"image_size": 64},
            "compress": {
                "dedup_window": 16,
                "dedup_threshold": 0.83,
                "dedup_rule": "greedy",
                "hi_grid": 12,
                "lo_grid": 8,
                "stc_chunk": 8,
                "stc_threshold": 0.8,
            },
            "llm": {"max_seq_len": 1024},
            "max_new_tokens": 48,
        },
        tokenizer=tokenizer_fields(folder),
        parity={"passed": True, "selection_identical": True, "token_agreement": 1.0},
    )
    return folder


def app_record(kind: str = "sam", backend: str = "executorch", device_type: str = "android") -> dict:
    """A bench record as the demo apps' benchmark mode writes it (bench.schema.json)."""
    name = {"llm": "decode_tok_s", "sam": "first_mask_ms", "longvu": "time_to_first_token_ms"}[kind]
    return {
        "bench_schema_version": contract.BENCH_SCHEMA_VERSION,
        "kind": kind,
        "backend": backend,
        "model": f"{kind}-{backend}",
        "device": {"type": device_type, "id": "app-side-id", "name": "from the app", "os": "15"},
        "runner": "app",
        "size_bytes": 4096,
        "warmup": 1,
        "iterations": 3,
        "metrics": [
            {
                "name": name,
                "value": 21.0,
                "unit": "ms" if name.endswith("_ms") else "tok/s",
                "samples": [20.0, 21.0, 25.0],
            }
        ],
        "created_unix": 1_790_000_000,
    }


def make_etdump(folder: Path) -> Path:
    """A real ETDump: a 2-op model lowered to a portable .pte, run three times with profiling (~8 s)."""
    import torch
    from executorch.exir import to_edge
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    class TwoOps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.relu(self.linear(x))

    torch.manual_seed(0)
    pte, etdump = Path(folder) / "two_ops.pte", Path(folder) / "two_ops.etdp"
    program = to_edge(torch.export.export(TwoOps(), (torch.randn(2, 8),))).to_executorch()
    pte.write_bytes(program.buffer)
    module = _load_for_executorch(str(pte), enable_etdump=True)
    for _ in range(3):
        module.run_method("forward", (torch.randn(2, 8),))
    module.write_etdump_result_to_file(str(etdump))
    return etdump
