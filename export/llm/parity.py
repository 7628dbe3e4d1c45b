"""LLM artifact parity: the lowered program against the eager model with the same
quantization simulated (the unlowered export wrapper), on real held-out Wikipedia text.

Measured:
- teacher-forced logits over text windows (one prefill call, then one decode call per
  token, so the KV cache path is exercised): cosine, max-abs, SQNR, top-1 agreement;
- perplexity of the artifact, of the eager quantized model and of eager fp32 on the same
  predicted tokens;
- free-running greedy generation of GREEDY_TOKENS tokens from fixed prompts: position-wise
  token agreement and the length of the identical prefix.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from export.config import llm_config_from_dict
from export.data.text import parity_prompts, token_windows
from export.manifest import update_manifest
from export.metrics import max_abs, sqnr_db
from export.progress import tqdm
from export.tolerances import parity_report, print_failures

# Named tolerances (artifact vs eager with the same quantization simulated):
# metric -> ("min" | "max", limit)
# Free-running greedy agreement is reported but not judged: on an outlier-heavy model with
# int8 activations (unrotated SmolLM2: hidden max ~24,800) a one-step rounding difference in
# the activation scale flips a near-tie and the two continuations part for good, while
# teacher-forced agreement and perplexity stay tight. Rotations remove the outliers.
TOLERANCES = {
    "logits_cosine_mean": ("min", 0.99),  # teacher-forced positions
    "logits_sqnr_db": ("min", 15.0),  # all positions together
    "top1_agreement": ("min", 0.85),  # teacher-forced argmax agreement
    "perplexity_ratio": ("max", 1.03),  # artifact ppl / eager-quantized ppl
    "perplexity_ratio_inverse": ("max", 1.03),  # ... in both directions
}
# Teacher-forced top-1 agreement also counts coin flips: on SmolLM2's held-out text a tenth of
# the positions have their two best logits within 0.10 of each other (measured), so a kernel
# that is not bit-exact (ONNX's MatMulNBits: per-position max-abs logit error ~0.5 against its
# simulation) flips some of them, more or fewer on another CPU. Agreement is judged again where
# the reference has decided: its top-1 leads its runner-up by at least DECIDED_LOGITS.
DECIDED_LOGITS = 1.0
WINDOWS, WINDOW_LEN, PREFILL_LEN = 2, 160, 32
PROMPTS, GREEDY_TOKENS = 4, 64


class EagerLLMRunner:
    """The unlowered export wrapper behind the Runner protocol."""

    def __init__(self, wrapper, max_seq_len: int):
        self.wrapper = wrapper
        self.manifest = {"max_seq_len": max_seq_len}

    @torch.no_grad()
    def run(self, inputs):
        from runtime.executorch_runner import native_stderr_silenced

        with native_stderr_silenced():  # the eager llama:: kernels log on every call
            return {"logits": self.wrapper(inputs["tokens"], inputs["input_pos"])}


def _teacher_forced(step, window: torch.Tensor) -> torch.Tensor:
    """[L] tokens -> [L - PREFILL_LEN, vocab] logits predicting tokens PREFILL_LEN..L-1."""
    rows = [step(window[:PREFILL_LEN], 0)]
    for pos in range(PREFILL_LEN, len(window) - 1):
        rows.append(step(window[pos : pos + 1], pos))
    return torch.stack(rows)


def _perplexity(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return math.exp(float(torch.nn.functional.cross_entropy(logits.double(), targets)))


def _greedy(step, prompt_ids: list[int], n: int) -> list[int]:
    from runtime.generate import SamplingConfig, generate

    return generate(step, prompt_ids, SamplingConfig(max_new_tokens=n)).tokens


def streamed_conversation(step, tokens: torch.Tensor, window, turn: int = 64, score_from: int = 0):
    """Teacher-force `tokens` through a runtime.context.Conversation as a chat would: turns of
    `turn` tokens prefilled at once alternate with `turn` tokens fed one by one (an answer).
    Returns ([n, vocab] logits, [n] targets) of the one-by-one tokens at index >= score_from,
    and the conversation (its evictions)."""
    from runtime.context import Conversation

    conv = Conversation(step, window)
    rows, targets = [], []
    i, prefill = 0, True
    while i < len(tokens) - 1:
        if prefill:
            end = min(i + turn, len(tokens) - 1)
            logits = conv.feed(tokens[i:end].tolist())
            i = end
        else:
            for _ in range(turn):
                if i >= len(tokens) - 1:
                    break
                if i >= score_from:
                    rows.append(logits)
                    targets.append(tokens[i])
                logits = conv.feed([int(tokens[i])])
                i += 1
        prefill = not prefill
    return torch.stack(rows), torch.stack(targets), conv


def top1_metrics(art: torch.Tensor, ref: torch.Tensor) -> dict:
    """art, ref: [positions, vocab] logits -> top-1 agreement, overall and where `ref` has decided."""
    same = art.argmax(-1) == ref.argmax(-1)
    best2 = ref.topk(2, dim=-1).values
    decided = best2[:, 0] - best2[:, 1] >= DECIDED_LOGITS
    behind = ref.max(-1).values - ref.gather(-1, art.argmax(-1, keepdim=True))[:, 0]  # 0 where they agree
    return {
        "top1_agreement": float(same.double().mean()),
        "top1_agreement_decided": float(same[decided].double().mean()) if decided.any() else 1.0,
        "top1_decided_positions": int(decided.sum()),
        "top1_worst_flip_logits": float(behind.max()),  # how far the artifact's worst pick trails the reference's best
    }


def measure(artifact_step, eager_step, fp_model, tokenizer) -> dict:
    windows = token_windows(tokenizer, "parity", WINDOW_LEN, WINDOWS)
    art, ref, fp, targets = [], [], [], []
    for w in tqdm(windows, desc="parity: teacher-forced windows"):
        art.append(_teacher_forced(artifact_step, w))
        ref.append(_teacher_forced(eager_step, w))
        with torch.no_grad():
            fp.append(fp_model(w[None])[0, PREFILL_LEN - 1 : -1])
        targets.append(w[PREFILL_LEN:])
    art, ref, fp, targets = (torch.cat(x) for x in (art, ref, fp, targets))
    per_pos_cos = torch.nn.functional.cosine_similarity(art.double(), ref.double(), dim=-1)

    prompts = [tokenizer(p, add_special_tokens=False).input_ids for p in parity_prompts(PROMPTS)]
    agreement, prefix = [], []
    for ids in tqdm(prompts, desc="parity: greedy generation"):
        a, r = _greedy(artifact_step, ids, GREEDY_TOKENS), _greedy(eager_step, ids, GREEDY_TOKENS)
        same = [x == y for x, y in zip(a, r)]
        agreement.append(sum(same) / max(len(r), 1))
        prefix.append(same.index(False) if False in same else len(same))
    ppl_art, ppl_ref = _perplexity(art, targets), _perplexity(ref, targets)
    return {
        "logits_cosine_min": float(per_pos_cos.min()),
        "logits_cosine_p01": float(per_pos_cos.quantile(0.01)),  # the tail without its single worst positions
        "logits_cosine_mean": float(per_pos_cos.mean()),
        "logits_max_abs": max_abs(art, ref),
        "logits_sqnr_db": sqnr_db(ref, art),
        **top1_metrics(art, ref),
        "greedy_agreement": sum(agreement) / len(agreement),
        "greedy_identical_prefix": prefix,
        "perplexity_artifact": ppl_art,
        "perplexity_eager_quantized": ppl_ref,
        "perplexity_eager_fp32": _perplexity(fp, targets),
        "perplexity_ratio": ppl_art / ppl_ref,
        "perplexity_ratio_inverse": ppl_ref / ppl_art,
        "predicted_tokens": int(targets.numel()),
    }


def print_report(report: dict) -> None:
    m = report["metrics"]
    print(
        f"parity [{'PASS' if report['passed'] else 'FAIL'}] vs eager {report['reference']}: "
        f"logits cosine min {m['logits_cosine_min']:.4f} p01 {m['logits_cosine_p01']:.4f} mean {m['logits_cosine_mean']:.5f}, "
        f"SQNR {m['logits_sqnr_db']:.1f} dB, max-abs {m['logits_max_abs']:.3f}, top-1 {m['top1_agreement']:.3f} "
        f"(where decided {m.get('top1_agreement_decided', float('nan')):.3f} of {m.get('top1_decided_positions', 0)}), "
        f"greedy agreement {m['greedy_agreement']:.3f} (identical prefixes {m['greedy_identical_prefix']}/{GREEDY_TOKENS}); "
        f"perplexity artifact {m['perplexity_artifact']:.2f} / eager quantized {m['perplexity_eager_quantized']:.2f} "
        f"/ eager fp32 {m['perplexity_eager_fp32']:.2f} over {m['predicted_tokens']} tokens"
    )
    print_failures(report)


def check_llm_parity(folder: Path, prepared=None) -> dict:
    """Run the artifact in `folder` against its eager reference; write the numbers into its manifest."""
    from export.llm.pipeline import prepare_model
    from export.llm.quantize import with_cached_dequantized_weights
    from export.llm.wrapper import CachedDecoder
    from runtime.generate import LLMStepper
    from runtime.manifest import load_manifest
    from runtime.runner import open_runner

    manifest = load_manifest(folder)
    cfg = llm_config_from_dict(manifest["config"])
    prepared = prepared or prepare_model(cfg)
    runner = open_runner(folder)
    kv_bits = cfg.quant.kv_cache_bits
    reference = CachedDecoder(with_cached_dequantized_weights(prepared.model), cfg.max_seq_len, kv_bits).eval()
    metrics = measure(
        LLMStepper(runner),
        LLMStepper(EagerLLMRunner(reference, cfg.max_seq_len)),
        prepared.checkpoint.model,
        prepared.checkpoint.tokenizer,
    )
    from export.llm.recipes import LLM_RECIPES

    simulator = LLM_RECIPES.get(cfg.backend).simulator
    report = parity_report(f"{cfg.quant.name} simulated ({simulator})", metrics, TOLERANCES)
    update_manifest(folder, parity=report)
    print_report(report)
    return report


def check_artifact(folder: Path) -> dict:
    """`handheld parity DIR` entry point."""
    return check_llm_parity(Path(folder))
