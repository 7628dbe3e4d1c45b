"""What the phone apps read from a bundle: the one place exporters, bundler and apps agree on.

A bundle's `bundle.json` holds one entry per artifact: the artifact's own manifest (every
field the exporter wrote, minus its file list) plus `dir`, the artifact's folder inside the
bundle. The apps (android_demo/, ios_demo/) read only the keys below; exporters import these
names so a rename breaks here, in the bundler, and in tests/test_app_contract.py at once.

Paths inside an entry (model_file, tokenizer.file, methods.*.file) are relative to the entry's
`dir`, exactly as the exporter wrote them.
"""

from __future__ import annotations

BUNDLE_MANIFEST = "bundle.json"
BUNDLE_FORMAT_VERSION = 1
BENCH_SCHEMA_VERSION = 1
KINDS = ("llm", "sam", "longvu")
TARGETS = ("android", "ios")

# --- LLM (export/llm/pipeline.py writes these) ------------------------------------------
# forward(tokens [1, seq] int64, input_pos [1] int64) -> logits [1, vocab] float32: the
# signature ExecuTorch's LlmModule / TextLLMRunner feed positionally.
LLM_INPUT_NAMES = ("tokens", "input_pos")
LLM_OUTPUT_NAMES = ("logits",)
LLM_KEYS = ("backend", "model_file", "inputs", "outputs", "tokenizer", "max_seq_len")
TOKENIZER_KEYS = ("file", "bos_id", "eos_ids", "chat_template")
# Conversations past max_seq_len (runtime/context.py; written since 2026-12, absent in older
# artifacts): when the cache fills, keep the first sink_tokens and the last window_tokens and
# prefill them again from position 0 ("recompute"). The host runtime and `handheld chat` follow
# it; the demo apps (ChatWindow.kt / .swift) keep whole turns that fit in window_tokens.
LLM_CONTEXT = "context"
LLM_CONTEXT_KEYS = ("sink_tokens", "window_tokens", "on_overflow")

# --- SqueezeSAM (export/sam/ must write these; names follow export/sam/config.py) --------
# forward(image [1, 3, S, S] float32 normalized, clicks [1, 2 (+1 with prev_mask_channel), S, S]
# float32) -> mask_logits [1, 1, S, S] float32, foreground where logits > mask_threshold.
# Auto mode is the same network run with all-zero click maps (trained for the salient object).
SAM_INPUT_NAMES = ("image", "clicks")
SAM_OUTPUT_NAMES = ("mask_logits",)
SAM_KEYS = ("backend", "model_file", "inputs", "outputs", "preprocessing", "clicks", "mask_threshold")
# image_size: S; resize: "longest_side" (keep aspect, longest side -> S); pad: "bottom_right"
# with zeros after normalization; pixel_mean/pixel_std: per RGB channel on the 0..1 scale.
SAM_PREPROCESSING_KEYS = ("image_size", "resize", "pad", "pixel_mean", "pixel_std")
# encoding "gaussian": exp(-d^2 / (2 sigma_px^2)) around each click, d in model-input pixels
# measured from pixel centres (+0.5), positive and negative channels combined with max
# (export/sam/clicks.py); prev_mask_channel: feed the previous mask as a third channel.
SAM_CLICK_KEYS = ("encoding", "sigma_px", "max_clicks", "prev_mask_channel")

# --- LongVU (export/longvu/export.py writes these) ---------------------------------------
# One ExecuTorch program (model_file) with five methods; `methods.<name>` holds its IO specs
# (a CoreML variant adds `methods.<name>.file`, one .mlpackage per method). Pixels go in as
# RGB in [0, 1], bilinear-resized to the encoder's image_size: normalization is in the graph.
# Selection (dedup, query, STC, truncation) runs on the phone's CPU as runtime/ does on the host.
LONGVU_KEYS = ("backend", "model_file", "methods", "config", "tokenizer")
LONGVU_IO = {  # method -> (input names, output names)
    "dino": (("pixels",), ("feats",)),  # [1, 3, Sd, Sd] -> [1, Nd, Dd]
    "siglip": (("pixels",), ("feats",)),  # [1, 3, Ss, Ss] -> [1, g*g, Dv]
    "project": (("feats",), ("hi", "lo")),  # -> [1, hi_grid^2, dim], [1, lo_grid^2, dim]
    "embed": (("tokens",), ("embeds",)),  # [1, L] int64 -> [1, L, dim]
    "decode": (("embeds", "input_pos"), ("logits",)),  # static KV cache, like the LLM
}
LONGVU_METHODS = tuple(LONGVU_IO)
LONGVU_VISION_METHODS = ("dino", "siglip", "project")  # CoreML on iOS when a CoreML variant is bundled
METHOD_KEYS = ("inputs", "outputs")
LONGVU_CONFIG_KEYS = ("video", "dino", "siglip", "compress", "llm", "max_new_tokens")
LONGVU_VIDEO_KEYS = ("fps", "max_frames", "decode_size")
VIT_KEYS = ("image_size",)
# names of export/longvu/config.py's CompressConfig
LONGVU_COMPRESS_KEYS = (
    "dedup_window",
    "dedup_threshold",
    "dedup_rule",
    "hi_grid",
    "lo_grid",
    "stc_chunk",
    "stc_threshold",
)
LLM_CONFIG_KEYS = ("max_seq_len",)  # the decoder's context: prompt + video tokens + answer

# IO spec entries (inputs[i], outputs[i])
IO_KEYS = ("name", "dtype", "shape")

KIND_KEYS = {"llm": LLM_KEYS, "sam": SAM_KEYS, "longvu": LONGVU_KEYS}
# nested objects an app reads: (kind, dotted path) -> keys inside it
NESTED_KEYS = {
    ("llm", "tokenizer"): TOKENIZER_KEYS,
    ("sam", "preprocessing"): SAM_PREPROCESSING_KEYS,
    ("sam", "clicks"): SAM_CLICK_KEYS,
    ("longvu", "config"): LONGVU_CONFIG_KEYS,
    ("longvu", "config.video"): LONGVU_VIDEO_KEYS,
    ("longvu", "config.dino"): VIT_KEYS,
    ("longvu", "config.siglip"): VIT_KEYS,
    ("longvu", "config.compress"): LONGVU_COMPRESS_KEYS,
    ("longvu", "config.llm"): LLM_CONFIG_KEYS,
    ("longvu", "tokenizer"): TOKENIZER_KEYS,
}
IO_NAMES = {
    "llm": (LLM_INPUT_NAMES, LLM_OUTPUT_NAMES),
    "sam": (SAM_INPUT_NAMES, SAM_OUTPUT_NAMES),
}

# Which backends each app runs per kind. Android: ExecuTorch everywhere (the AAR). iOS: CoreML
# for the segmenter and LongVU's vision methods, ExecuTorch's Swift package for text decoders;
# an iOS bundle may carry a LongVU artifact of each backend (vision from CoreML, text from
# ExecuTorch), or an ExecuTorch one alone.
TARGET_BACKENDS = {
    "android": {"llm": ("executorch",), "sam": ("executorch",), "longvu": ("executorch",)},
    "ios": {"llm": ("executorch",), "sam": ("coreml",), "longvu": ("executorch", "coreml")},
}

# (kind, backend) entries an app can only use beside another: the iOS app runs LongVU's text
# methods on ExecuTorch (the CoreML artifact's embed/decode packages are checked on the host but
# not wired into the app yet), so a CoreML LongVU artifact needs the ExecuTorch one too.
TARGET_COMPANIONS = {"ios": {("longvu", "coreml"): ("longvu", "executorch")}, "android": {}}

# Where the apps look for a pushed bundle and write benchmark results (device side).
ANDROID_PACKAGE = "org.handheld.demo"
ANDROID_BENCH_ACTIVITY = ".BenchmarkActivity"
ANDROID_FILES_DIR = f"/sdcard/Android/data/{ANDROID_PACKAGE}/files"  # getExternalFilesDir(null)
ANDROID_BUNDLE_DIR = f"{ANDROID_FILES_DIR}/bundle"
IOS_BUNDLE_ID = "org.handheld.demo"
IOS_BUNDLE_DIR = "Documents/bundle"
BENCH_RESULT_FILE = "bench.json"


def required_paths(kind: str) -> list[str]:
    """Every dotted key path an app reads from a `kind` entry (IO specs and pieces aside)."""
    paths = list(KIND_KEYS[kind])
    for (k, parent), keys in NESTED_KEYS.items():
        if k == kind:
            paths += [f"{parent}.{key}" for key in keys]
    return paths
