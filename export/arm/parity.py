"""`handheld parity DIR --isa aarch64`: an ExecuTorch or ONNX artifact on ARM's kernels (emulated),
against the same artifact on this machine and against its eager model.

The integer GEMMs agree by construction; activation quantization, softmax, norms and layout
code differ per ISA, and so can a delegate. Each artifact kind runs a short protocol on real
inputs, once per phone kernel family (dotprod, i8mm: qemu CPU models that have each), and the
numbers go into the manifest under `parity.aarch64`. What this proves: the aarch64 builds of the
pinned ExecuTorch and onnxruntime run the artifact with ARM's kernels (the CPU features the
emulated CPU reported are recorded) and compute what the x86 ones do. What it does not: speed,
big.LITTLE scheduling, SME2 (qemu 7.2 has none), Apple's CoreML runtime.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from export.arm.lane import FAMILIES, run_program, setup
from export.manifest import update_manifest
from export.tolerances import judge
from runtime.errors import HandheldError
from runtime.executorch_runner import native_stderr_silenced
from runtime.manifest import load_manifest

# Named tolerances, metric -> ("min" | "max", limit).
# LLM: teacher-forced logits of a 32-token prefill then LLM_DECODE_STEPS decode steps.
LLM_PREFILL, LLM_DECODE_STEPS = 32, 24
LLM_TOLERANCES = {
    "vs_host_cosine_mean": ("min", 0.99),
    "vs_host_top1_agreement": ("min", 0.9),
    "vs_eager_cosine_mean": ("min", 0.99),  # the host parity's bars
    "vs_eager_top1_agreement": ("min", 0.85),
    # ARM may not sit further from eager than x86 does (cosine mean, same steps)
    "eager_gap_vs_host": ("max", 0.005),
}
# The smallest per-step cosine is reported, not judged: on the real SmolLM2 .pte one step of 24
# sat at 0.93 vs the host, the position where x86 is furthest from eager too (0.988): an int8
# activation-rounding flip that ARM's arithmetic tips further; the steps after it are >= 0.999.
# SqueezeSAM int8: the host parity's 15 photo x click cases, masks at the photo's resolution.
SAM_TOLERANCES = {
    "vs_host_median_iou": ("min", 0.97),
    "vs_host_worst_iou": ("min", 0.90),
    "vs_eager_median_iou": ("min", 0.90),  # the host int8 parity's bars
    "vs_eager_worst_iou": ("min", 0.70),
}

# LongVU: its DINO method on real frames of the sample videos (features per frame).
LONGVU_FRAMES = 3  # per sample video
LONGVU_TOLERANCES = {
    "vs_host_cosine_min": ("min", 0.999),
    "vs_eager_cosine_min": ("min", 0.99),  # the host parity's feature bar
}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def _logit_numbers(prefix: str, art: np.ndarray, ref: np.ndarray) -> dict:
    cos = _cosines(art, ref)
    return {
        f"{prefix}_cosine_min": round(float(cos.min()), 6),
        f"{prefix}_cosine_mean": round(float(cos.mean()), 6),
        f"{prefix}_max_abs": round(float(np.abs(art - ref).max()), 4),
        f"{prefix}_top1_agreement": round(float((art.argmax(-1) == ref.argmax(-1)).mean()), 4),
    }


class _LLMProtocol:
    """Prefill LLM_PREFILL held-out tokens at position 0, then feed the next tokens one by one."""

    tolerances = LLM_TOLERANCES
    method = "forward"

    def __init__(self, folder: Path, manifest: dict, prepared=None, tokens=None):
        from export.config import llm_config_from_dict
        from export.data.text import token_windows
        from export.llm.parity import EagerLLMRunner
        from export.llm.pipeline import load_checkpoint
        from export.llm.quantize import with_cached_dequantized_weights
        from export.llm.wrapper import CachedDecoder
        from runtime.runner import open_runner

        cfg = llm_config_from_dict(manifest["config"])
        length = LLM_PREFILL + LLM_DECODE_STEPS
        if cfg.max_seq_len < length:
            raise HandheldError(
                f"the aarch64 protocol needs {length} positions; this artifact holds {cfg.max_seq_len}",
                f"export with --max-seq-len {length} or more",
            )
        # prepared: the eager reference check_aarch64 built (eager_model) or was given
        if tokens is None:  # held-out Wikipedia text, the parity split
            ck = prepared.checkpoint if prepared.checkpoint is not None else load_checkpoint(cfg.checkpoint)
            tokens = token_windows(ck.tokenizer, "parity", length, 1)[0]
        window = torch.as_tensor(tokens)[:length]
        self.cases = [[window[None, :LLM_PREFILL].numpy(), np.array([0], np.int64)]]
        self.cases += [
            [window[None, p : p + 1].numpy(), np.array([p], np.int64)] for p in range(LLM_PREFILL, length - 1)
        ]
        self.program = folder / manifest["model_file"]
        host = open_runner(folder)
        self.job = {}
        if manifest["backend"] == "onnx":  # the decoder's cache: present -> past from step to step
            graph, session = manifest["onnx_graph"], host.session
            self.job = {
                "input_names": [session.get_inputs()[0].name, "input_pos"],
                "output_names": [session.get_outputs()[0].name],
                "state": list(zip(graph["past"], graph["present"])),
                "kv_shape": graph["kv_shape"],
            }
        reference = CachedDecoder(
            with_cached_dequantized_weights(prepared.model), cfg.max_seq_len, cfg.quant.kv_cache_bits
        )
        self.eager = self._steps(EagerLLMRunner(reference.eval(), cfg.max_seq_len))
        self.host = self._steps(host)

    def _steps(self, runner) -> np.ndarray:
        rows = []
        for tokens, pos in self.cases:
            out = runner.run({"tokens": torch.from_numpy(tokens), "input_pos": torch.from_numpy(pos)})["logits"]
            rows.append(np.asarray(out, np.float32).reshape(-1))
        return np.stack(rows)

    def numbers(self, outputs: list[list[np.ndarray]]) -> dict:
        arm = np.stack([o[0].reshape(-1) for o in outputs]).astype(np.float32)
        out = {
            "steps": len(arm),
            **_logit_numbers("vs_host", arm, self.host),
            **_logit_numbers("vs_eager", arm, self.eager),
        }
        out.update(_logit_numbers("host_vs_eager", self.host, self.eager))  # the anchor: x86 on the same steps
        out["eager_gap_vs_host"] = round(out["host_vs_eager_cosine_mean"] - out["vs_eager_cosine_mean"], 6)
        out["vs_host_cosine_per_step"] = [round(float(c), 5) for c in _cosines(arm, self.host)]
        out["host_vs_eager_cosine_per_step"] = [round(float(c), 5) for c in _cosines(self.host, self.eager)]
        return out


class _SAMProtocol:
    """The host parity's photo x click cases on the int8 program; the emulated outputs are
    replayed through the same Segmenter so masks are compared at the photo's resolution."""

    tolerances = SAM_TOLERANCES
    method = "forward"

    def __init__(self, folder: Path, manifest: dict, prepared=None, tokens=None):
        from export.sam.parity import compare, parity_cases
        from runtime.sam_backends import load_forward
        from runtime.segment import Segmenter

        entry = manifest["variants"].get("int8")
        if entry is None:
            raise HandheldError(
                f"{folder} has no int8 variant", "export it with `handheld export sam` (int8 is built by default)"
            )
        model = prepared
        self.spec = model.config.input_spec

        def eager_forward(image, clicks):
            with torch.no_grad():
                return model(torch.from_numpy(image), torch.from_numpy(clicks)).numpy()

        self.reference = Segmenter(eager_forward, self.spec, "eager fp32")
        self.cases_photos = parity_cases(self.reference)
        self.program = folder / entry["file"]
        backend = manifest["backend"]
        run = load_forward(backend, self.program)
        self.job = {}
        if backend == "onnx":
            from runtime.onnx_runner import open_session

            session = open_session(self.program)
            self.job = {
                "input_names": [i.name for i in session.get_inputs()],
                "output_names": [session.get_outputs()[0].name],
            }
        recorded = []

        def host_forward(image, clicks):
            out = run(image, clicks)[0]
            recorded.append(([image.copy(), clicks.copy()], out))
            return out

        self.host_numbers = compare(self.reference, Segmenter(host_forward, self.spec, "host int8"), self.cases_photos)
        self.cases = [inputs for inputs, _ in recorded]
        self.host = [out for _, out in recorded]
        self._compare = compare

    def _replay(self, outputs, name):
        from runtime.segment import Segmenter

        it = iter(outputs)
        return Segmenter(lambda image, clicks: next(it), self.spec, name)

    def numbers(self, outputs: list[list[np.ndarray]]) -> dict:
        arm = [o[0] for o in outputs]
        vs_host = self._compare(
            self._replay(self.host, "host int8"), self._replay(arm, "aarch64 int8"), self.cases_photos
        )
        vs_eager = self._compare(self.reference, self._replay(arm, "aarch64 int8"), self.cases_photos)
        out = {"cases": len(arm)}
        for prefix, numbers in (("vs_host", vs_host), ("vs_eager", vs_eager)):
            # identical logits have an infinite SQNR, which JSON cannot hold: max-abs says it
            out.update(
                {
                    f"{prefix}_{k}": v
                    for k, v in numbers.items()
                    if k != "cases" and np.isfinite(v if isinstance(v, float) else 0)
                }
            )
        out["logits_max_abs_vs_host"] = round(float(max(np.abs(a - h).max() for a, h in zip(arm, self.host))), 4)
        return out


class _LongVUProtocol:
    """LongVU's DINO method (the frame-dedup features) on LONGVU_FRAMES real frames of each sample
    video; the other methods share its kernels (fp32 or int8 GEMMs, softmax, layer norms)."""

    tolerances = LONGVU_TOLERANCES
    method = "dino"

    def __init__(self, folder: Path, manifest: dict, prepared=None, tokens=None):
        from export.longvu.config import config_from_dict
        from export.longvu.parity import sample_videos
        from export.longvu.pipeline import EagerPieces
        from runtime.video import decode, resize_frames
        from runtime.video_qa import open_pieces

        cfg = config_from_dict(manifest["config"])
        model = prepared
        frames = []
        for path in sample_videos().values():
            video = decode(path, cfg.video)
            frames += list(video.frames[:: max(1, len(video.frames) // LONGVU_FRAMES)][:LONGVU_FRAMES])
        pixels = resize_frames(np.stack(frames), cfg.dino.image_size)
        self.cases = [[pixels[i : i + 1].numpy()] for i in range(len(pixels))]
        self.program = folder / manifest["model_file"]
        self.job = {}
        art, _, _ = open_pieces(folder)
        eager = EagerPieces(model)
        with torch.no_grad():
            self.host = np.stack([np.asarray(art.dino(torch.from_numpy(c[0])), np.float32) for c in self.cases])
            self.eager = np.stack([np.asarray(eager.dino(torch.from_numpy(c[0])), np.float32) for c in self.cases])

    def numbers(self, outputs: list[list[np.ndarray]]) -> dict:
        arm = np.stack([o[0] for o in outputs]).astype(np.float32)
        out = {"frames": len(arm)}
        for prefix, ref in (("vs_host", self.host), ("vs_eager", self.eager), ("host_vs_eager", None)):
            a, r = (self.host, self.eager) if ref is None else (arm, ref)
            cos = _cosines(a, r)
            out[f"{prefix}_cosine_min"] = round(float(cos.min()), 6)
            out[f"{prefix}_max_abs"] = round(float(np.abs(a - r).max()), 5)
        return out


PROTOCOLS = {"llm": _LLMProtocol, "sam": _SAMProtocol, "longvu": _LongVUProtocol}
# (kind, backend) pairs the lane runs: ExecuTorch programs in ExecuTorch's aarch64 runtime, ONNX
# graphs in onnxruntime's aarch64 CPU provider (LongVU's ONNX pieces: not yet)
LANES = [("llm", "executorch"), ("sam", "executorch"), ("longvu", "executorch"), ("llm", "onnx"), ("sam", "onnx")]


def eager_model(manifest: dict):
    """The artifact's eager reference, built as its export built it (an LLM's GPTQ takes minutes:
    built before the host runtimes' logs are silenced, so its progress shows)."""
    kind = manifest["kind"]
    if kind == "llm":
        from export.config import llm_config_from_dict
        from export.llm.pipeline import prepare_model

        return prepare_model(llm_config_from_dict(manifest["config"]))
    if kind == "sam":
        from export.sam.parity import reference_model

        return reference_model(manifest)
    from export.longvu.config import config_from_dict
    from export.longvu.pipeline import build_model

    return build_model(config_from_dict(manifest["config"]))


def kernel_family(features: dict) -> str:
    """The int8 GEMM family XNNPACK/KleidiAI pick on a CPU with these features."""
    return "i8mm" if features.get("i8mm") else "dotprod" if features.get("asimddp") else "neon"


def check_aarch64(folder: Path, families=FAMILIES, prepared=None, progress: bool = True, tokens=None) -> dict:
    """Run the artifact's protocol under emulation once per kernel family; numbers into the manifest.
    prepared: the family's eager model when the caller has it (an LLM's PreparedModel, a
    SqueezeSAM module); tokens: an LLM window other than the held-out text (tiny vocabularies)."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    kind, backend = manifest["kind"], manifest.get("backend")
    if (kind, backend) not in LANES:
        runs = ", ".join(f"{k} on {b}" for k, b in LANES)
        raise HandheldError(
            f"--isa aarch64 runs {runs}; this artifact is {kind} on {backend}",
            "pass one of those artifacts, or leave --isa out (CoreML runs on Apple's runtime only)",
        )
    lane = setup(progress=progress)  # before the heavy work: a lane that cannot be set up says so first
    say = print if progress else (lambda *a, **k: None)
    start = time.perf_counter()
    prepared = prepared if prepared is not None else eager_model(manifest)
    with native_stderr_silenced():  # the host runtimes' cpuinfo/threadpool log lines (--verbose shows them)
        protocol = PROTOCOLS[kind](folder, manifest, prepared, tokens)
    report = {"protocol": kind, "cases": len(protocol.cases), "host_and_eager_s": round(time.perf_counter() - start, 1)}
    report["lane"] = {k: lane.info()[k] for k in ("setup", "torch")}
    failures = []
    for family in families:
        say(
            f"aarch64 ({family}): {len(protocol.cases)} cases of {protocol.program.name} under emulation ...",
            flush=True,
        )
        start = time.perf_counter()
        outputs, result = run_program(lane, protocol.program, protocol.method, protocol.cases, family, **protocol.job)
        numbers = protocol.numbers(outputs)
        verdict = judge(numbers, protocol.tolerances)
        ran = kernel_family(result["cpu_features"])
        if ran != family:
            verdict["failures"].append(f"asked for the {family} kernels, the emulated CPU offered {ran}")
            verdict["passed"] = False
        report[family] = {
            "kernel_family": ran,
            "cpu_features": result["cpu_features"],
            "wall_s": round(time.perf_counter() - start, 1),
            **{k: result[k] for k in ("import_s", "load_s", "run_s")},
            "metrics": numbers,
            **verdict,
        }
        failures += [f"{family}: {f}" for f in verdict["failures"]]
    report["tolerances"] = protocol.tolerances
    report["failures"] = failures
    report["passed"] = not failures
    parity = dict(load_manifest(folder, verify=False).get("parity") or {})
    parity["aarch64"] = report
    update_manifest(folder, parity=parity)
    for line in format_report(report):
        say(line)
    return report


def format_report(report: dict) -> list[str]:
    lines = []
    for family in FAMILIES:
        r = report.get(family)
        if r is None:
            continue
        m = r["metrics"]
        if report["protocol"] == "llm":
            shown = (
                f"vs host: cosine mean {m['vs_host_cosine_mean']:.4f} min {m['vs_host_cosine_min']:.4f}, "
                f"top-1 {m['vs_host_top1_agreement']:.3f}, max-abs {m['vs_host_max_abs']:.3f}; "
                f"vs eager: cosine mean {m['vs_eager_cosine_mean']:.4f} (host {m['host_vs_eager_cosine_mean']:.4f}), "
                f"top-1 {m['vs_eager_top1_agreement']:.3f} (host {m['host_vs_eager_top1_agreement']:.3f}) over {m['steps']} steps"
            )
        elif report["protocol"] == "longvu":
            shown = (
                f"dino features vs host: cosine min {m['vs_host_cosine_min']:.5f}, max-abs {m['vs_host_max_abs']:.1e}; "
                f"vs eager: cosine min {m['vs_eager_cosine_min']:.5f} (host {m['host_vs_eager_cosine_min']:.5f}) "
                f"over {m['frames']} frames"
            )
        else:
            shown = (
                f"vs host: mask IoU median {m['vs_host_median_iou']:.4f} worst {m['vs_host_worst_iou']:.4f}; "
                f"vs eager fp32: median {m['vs_eager_median_iou']:.4f} worst {m['vs_eager_worst_iou']:.4f} "
                f"over {m['cases']} cases"
            )
        verdict = "PASS" if r["passed"] else "FAIL"
        lines.append(f"aarch64 [{verdict}] {family} kernels ({r['kernel_family']} ran, {r['wall_s']:.0f} s): {shown}")
        lines += [f"  out of tolerance: {f}" for f in r["failures"]]
    return lines
