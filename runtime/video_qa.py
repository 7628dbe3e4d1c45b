"""Video question answering on LongVU pieces: host-side selection, then generation.

The pieces (`dino`, `siglip`, `project`, `embed`, `decode`; shapes in export/longvu/pipeline.py)
are fixed-shape model calls; everything data-dependent runs here: frame sampling, temporal
dedup, the cross-modal query, spatial token compression, truncation and prompt assembly.
The same code drives the eager modules and an exported artifact's methods.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from runtime.compress import CompressConfig, Selection, compress
from runtime.errors import HandheldError
from runtime.generate import GenerationResult, SamplingConfig, generate
from runtime.registry import Registry
from runtime.video import Video, VideoConfig, resize_frames

VIDEO_PLACEHOLDER = "<video>"


@dataclass(frozen=True)
class QAConfig:
    """What answering needs of a LongVU artifact's config (its manifest's `config`): how to
    sample the video, the compression thresholds, the encoders' input sizes, the context.
    Export's LongVUConfig has the same fields, so eager pieces pass it as is."""

    video: VideoConfig
    compress: CompressConfig
    dino_size: int
    siglip_size: int
    context_len: int
    max_new_tokens: int

    @classmethod
    def from_dict(cls, d: dict) -> QAConfig:
        return cls(
            VideoConfig(**d["video"]),
            CompressConfig(**d["compress"]),
            int(d["dino"]["image_size"]),
            int(d["siglip"]["image_size"]),
            int(d["llm"]["max_seq_len"]),
            int(d["max_new_tokens"]),
        )


class Pieces(Protocol):
    cfg: QAConfig
    max_seq_len: int

    def dino(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def siglip(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def project(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def embed(self, tokens: torch.Tensor) -> torch.Tensor: ...
    def decode(self, embeds: torch.Tensor, pos: int) -> torch.Tensor: ...


@dataclass
class Prompt:
    prefix: list[int]  # chat template up to the video
    question: list[int]  # the question alone (the cross-modal query's text)
    suffix: list[int]  # the rest of the turn, question included, up to the assistant's reply


@dataclass
class VideoAnswer:
    text: str
    selection: Selection
    generation: GenerationResult
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def prompt_tokens(self) -> int:
        return self.generation.prompt_tokens


def build_prompt(tokenizer, question: str) -> Prompt:
    text = tokenizer.chat_prompt(f"{VIDEO_PLACEHOLDER}\n{question}")
    before, after = text.split(VIDEO_PLACEHOLDER, 1)
    return Prompt(tokenizer.encode(before), tokenizer.encode(question), tokenizer.encode(after))


MIN_VISUAL_TOKENS = 64  # one frame at LongVU's low resolution (8 x 8)


def visual_budget(cfg: QAConfig, prompt: Prompt) -> int:
    """Visual tokens the context can take next to the prompt and the reserved answer."""
    return cfg.context_len - len(prompt.prefix) - len(prompt.suffix) - cfg.max_new_tokens


def _each_frame(fn, pixels: torch.Tensor) -> torch.Tensor:
    """Run a batch-1 piece over [T, 3, S, S] -> [T, ...]."""
    return torch.cat([fn(pixels[i : i + 1]) for i in range(pixels.shape[0])])


def select(pieces: Pieces, frames: np.ndarray, prompt: Prompt) -> tuple[Selection, torch.Tensor, dict]:
    """frames: [T, H, W, 3] uint8 -> (selection, visual tokens [n, dim], seconds per stage)."""
    cfg, timings = pieces.cfg, {}
    t = time.perf_counter()
    dino_feats = _each_frame(pieces.dino, resize_frames(frames, cfg.dino_size))  # [T, Nd, Dd]
    timings["dino_s"] = time.perf_counter() - t

    def visual_tokens(kept: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        feats = _each_frame(pieces.siglip, resize_frames(frames[kept], cfg.siglip_size))
        t1 = time.perf_counter()
        pairs = [pieces.project(feats[i : i + 1]) for i in range(feats.shape[0])]
        timings["siglip_s"], timings["project_s"] = t1 - t0, time.perf_counter() - t1
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    t = time.perf_counter()
    text = pieces.embed(torch.tensor([prompt.question], dtype=torch.long))[0]  # [L, dim]
    selection, seq = compress(dino_feats, visual_tokens, text, visual_budget(cfg, prompt), cfg.compress)
    timings["select_s"] = time.perf_counter() - t - timings["siglip_s"] - timings["project_s"]
    return selection, seq, timings


class EmbedsStepper:
    """`runtime.generate`'s step over embeddings: the first call (pos 0) prefills the whole
    multimodal prompt, whatever ids it is handed; later calls embed the sampled token."""

    def __init__(self, pieces: Pieces, prompt_embeds: torch.Tensor):
        self.pieces = pieces
        self.prompt_embeds = prompt_embeds  # [1, P, dim]
        self.max_seq_len = pieces.max_seq_len

    def __call__(self, tokens, pos: int) -> torch.Tensor:
        if pos == 0:
            return self.pieces.decode(self.prompt_embeds, 0)
        ids = torch.as_tensor(tokens, dtype=torch.long).reshape(1, -1)
        return self.pieces.decode(self.pieces.embed(ids), pos)


def prompt_embeddings(pieces: Pieces, prompt: Prompt, visual: torch.Tensor) -> torch.Tensor:
    """[1, prefix + n_visual + suffix, dim]."""
    embed = lambda ids: pieces.embed(torch.tensor([ids], dtype=torch.long))[0]
    return torch.cat([embed(prompt.prefix), visual, embed(prompt.suffix)])[None]


def ask(pieces: Pieces, tokenizer, video: Video, question: str, sampling: SamplingConfig | None = None) -> VideoAnswer:
    cfg = pieces.cfg
    sampling = sampling or SamplingConfig(max_new_tokens=cfg.max_new_tokens)
    prompt = build_prompt(tokenizer, question)
    budget = visual_budget(cfg, prompt)
    if budget < MIN_VISUAL_TOKENS:
        raise HandheldError(
            f"the question takes {len(prompt.prefix) + len(prompt.suffix)} of the artifact's {cfg.context_len} context tokens "
            f"({cfg.max_new_tokens} reserved for the answer), leaving {max(budget, 0)} for the video",
            f"ask a shorter question (the video needs at least {MIN_VISUAL_TOKENS} tokens), or re-export with a larger --context-len",
        )
    selection, visual, timings = select(pieces, video.frames, prompt)
    embeds = prompt_embeddings(pieces, prompt, visual)
    step = EmbedsStepper(pieces, embeds)
    placeholder_ids = [0] * embeds.shape[1]  # only the length is read: EmbedsStepper prefills `embeds`
    result = generate(step, placeholder_ids, sampling, stop_ids=tokenizer.eos_ids)
    result.text = tokenizer.decode(result.tokens)
    timings.update(time_to_first_token_s=result.prefill_s, decode_s=result.decode_s)
    return VideoAnswer(result.text, selection, result, timings)


# -- exported artifacts -----------------------------------------------------------------------

# backend -> class(folder, manifest, threads) implementing Pieces
PIECES_BACKENDS = Registry[type]("LongVU runtime backend")


@PIECES_BACKENDS.register("executorch")
class ExecuTorchPieces:
    """The methods of one .pte program (loaded once; each method's delegate loaded once)."""

    def __init__(self, folder: Path, manifest: dict, threads: int | None = None):
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama:: kernels)
        import executorch.kernels.quantized  # noqa: F401  (quantized_decomposed:: kernels)
        from executorch.runtime import Runtime

        from runtime.executorch_runner import set_threads

        if threads:
            set_threads(threads)
        self.cfg = QAConfig.from_dict(manifest["config"])
        self.max_seq_len = self.cfg.context_len
        path = Path(folder) / manifest["model_file"]
        try:
            program = Runtime.get().load_program(str(path))
            self.methods = {name: program.load_method(name) for name in manifest["methods"]}
        except Exception as err:
            raise HandheldError(
                f"ExecuTorch could not load {path} ({type(err).__name__}: {str(err)[:200]})",
                "re-export the artifact with this Handheld/ExecuTorch version",
            ) from None
        self.program = program

    def _call(self, name: str, *args: torch.Tensor) -> list[torch.Tensor]:
        from runtime.executorch_runner import native_stderr_silenced

        # ExecuTorch reads inputs as dense row-major and may reuse output memory on the next call
        with native_stderr_silenced():
            outs = self.methods[name].execute([a.contiguous() for a in args])
        return [o.clone() for o in outs]

    def dino(self, pixels):
        return self._call("dino", pixels)[0]

    def siglip(self, pixels):
        return self._call("siglip", pixels)[0]

    def project(self, feats):
        hi, lo = self._call("project", feats)
        return hi, lo

    def embed(self, tokens):
        return self._call("embed", tokens)[0]

    def decode(self, embeds, pos: int):
        return self._call("decode", embeds, torch.tensor([pos], dtype=torch.long))[0].reshape(-1)


@PIECES_BACKENDS.register("coreml")
class CoreMLPieces:
    """Every method its own .mlpackage. macOS: Apple's runtime through coremltools (`decode` keeps
    its KV cache in a state from `make_state`). Elsewhere there is no CoreML runtime: the saved
    MIL programs are interpreted in fp32 by runtime/mil_interpreter.py (vision with PyTorch
    kernels; embed/decode with coremltools' value inference, states kept between calls), so the host selection and the
    decoder see what the packages hold, not Apple's fp16 kernels."""

    def __init__(self, folder: Path, manifest: dict, threads: int | None = None, interpreter: bool | None = None):
        from runtime.coreml_runner import LINUX_NOTICE, coreml_runtime_available

        self.cfg = QAConfig.from_dict(manifest["config"])
        self.max_seq_len = self.cfg.context_len
        specs = manifest["methods"]
        missing = [
            name for name in ("dino", "siglip", "project", "embed", "decode") if "file" not in specs.get(name, {})
        ]
        if missing:
            raise HandheldError(
                f"this CoreML LongVU artifact has no .mlpackage for {', '.join(missing)} (an older export kept text on ExecuTorch)",
                "re-export it: handheld export longvu --backend coreml --out DIR",
            )
        path = lambda name: Path(folder) / specs[name]["file"]
        self.native = coreml_runtime_available() if interpreter is None else not interpreter
        try:
            if self.native:
                import coremltools as ct

                self.models = {
                    name: ct.models.MLModel(str(path(name)), compute_units=ct.ComputeUnit.ALL) for name in specs
                }
                self.state = self.models["decode"].make_state()
            else:
                from runtime.mil_interpreter import MILInterpreter

                print(LINUX_NOTICE, file=sys.stderr)
                self.vision = {
                    name: MILInterpreter(path(name), kernels="torch") for name in ("dino", "siglip", "project")
                }
                self.vision_inputs = {name: [i["name"] for i in specs[name]["inputs"]] for name in self.vision}
                self.text = {name: MILInterpreter(path(name)) for name in ("embed", "decode")}
        except Exception as err:
            raise HandheldError(
                f"could not load the CoreML packages in {folder} ({type(err).__name__}: {str(err)[:200]})",
                "re-export the artifact with this Handheld/coremltools version",
            ) from None

    def _call(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        if self.native:
            state = {"state": self.state} if name == "decode" else {}
            return self.models[name].predict(inputs, **state)
        if name in self.vision:
            feeds = {n: torch.from_numpy(v) for n, v in zip(self.vision_inputs[name], inputs.values())}
            outputs = self.vision[name].run(feeds).values()
            return dict(zip(("hi", "lo") if name == "project" else ("feats",), outputs))
        return self.text[name].run(inputs)

    def _tensor(self, value) -> torch.Tensor:
        return value if torch.is_tensor(value) else torch.from_numpy(np.asarray(value, dtype=np.float32))

    def dino(self, pixels):
        return self._tensor(self._call("dino", pixels=pixels.contiguous().numpy())["feats"])

    def siglip(self, pixels):
        return self._tensor(self._call("siglip", pixels=pixels.contiguous().numpy())["feats"])

    def project(self, feats):
        out = self._call("project", feats=feats.contiguous().numpy())
        return self._tensor(out["hi"]), self._tensor(out["lo"])

    def embed(self, tokens):
        return self._tensor(self._call("embed", tokens=tokens.numpy().astype(np.int32))["embeds"])

    def decode(self, embeds, pos: int):
        from runtime.coreml_runner import causal_mask

        s = embeds.shape[1]
        if pos + s >= self.max_seq_len:
            raise HandheldError(
                f"{pos + s} positions exceed the {self.max_seq_len - 1}-token context of the CoreML decoder",
                "ask a shorter question or use fewer frames",
            )
        mask = causal_mask(pos, s).numpy().astype(np.float32)
        out = self._call("decode", embeds=embeds.contiguous().numpy().astype(np.float32), causal_mask=mask)
        return self._tensor(out["logits"]).reshape(-1)


@PIECES_BACKENDS.register("onnx")
class OnnxPieces:
    """One onnxruntime session per method. `decode` runs through `BoundKVSession`: its cache
    buffers are updated in place and a rewind is a smaller position, as in the ExecuTorch program."""

    def __init__(self, folder: Path, manifest: dict, threads: int | None = None):
        from runtime.onnx_runner import BoundKVSession, open_session

        self.cfg = QAConfig.from_dict(manifest["config"])
        self.max_seq_len = self.cfg.context_len
        self.sessions = {
            name: open_session(Path(folder) / spec["file"], threads) for name, spec in manifest["methods"].items()
        }
        spec = manifest["methods"]["decode"]
        caches = [i for i in spec["inputs"] if i["name"].startswith("past_")]
        self.decoder = BoundKVSession(
            self.sessions["decode"],
            [i["name"] for i in caches],
            [o["name"] for o in spec["outputs"] if o["name"].startswith("present_")],
            caches[0]["shape"],
        )

    def _call(self, name: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        outs = self.sessions[name].run(None, {k: v.contiguous().numpy() for k, v in inputs.items()})
        return [torch.from_numpy(o) for o in outs]

    def dino(self, pixels):
        return self._call("dino", pixels=pixels)[0]

    def siglip(self, pixels):
        return self._call("siglip", pixels=pixels)[0]

    def project(self, feats):
        hi, lo = self._call("project", feats=feats)
        return hi, lo

    def embed(self, tokens):
        return self._call("embed", tokens=tokens)[0]

    def decode(self, embeds, pos: int):
        if pos + embeds.shape[1] > self.max_seq_len:
            raise HandheldError(
                f"{pos + embeds.shape[1]} positions exceed the {self.max_seq_len}-token context",
                "ask a shorter question or use fewer frames",
            )
        return torch.from_numpy(self.decoder.run(embeds.contiguous().numpy(), pos))


def open_pieces(folder: Path, threads: int | None = None):
    """(pieces, tokenizer, manifest) of a LongVU artifact folder, checksums verified."""
    from runtime.manifest import load_manifest
    from runtime.tokenizer import ArtifactTokenizer

    manifest = load_manifest(folder, verify=True)
    if manifest.get("kind") != "longvu":
        raise HandheldError(
            f"{folder} is a {manifest.get('kind')!r} artifact, not LongVU",
            "pass the --out folder of `handheld export longvu`",
        )
    pieces = PIECES_BACKENDS.get(manifest["backend"])(Path(folder), manifest, threads)
    return pieces, ArtifactTokenizer(folder, manifest["tokenizer"]), manifest
