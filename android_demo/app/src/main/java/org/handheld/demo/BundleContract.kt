package org.handheld.demo

/**
 * Every bundle.json key, file name and tensor name this app reads, in one place.
 *
 * Mirrors export/bundle/contract.py. tests/test_app_contract.py parses this file and every JSON
 * read in the app's sources, and fails when an exporter or the bundler stops producing one, so
 * read manifest keys only through [Keys] (never a string literal).
 */
object Keys {
    // bundle.json
    const val BUNDLE_FORMAT_VERSION = "bundle_format_version"
    const val TARGET = "target"
    const val MODELS = "models"
    const val FILES = "files"

    // every entry (an artifact's manifest + dir)
    const val KIND = "kind"
    const val BACKEND = "backend"
    const val DIR = "dir"
    const val SIZE_BYTES = "size_bytes"
    const val PARITY = "parity"
    const val MODEL_FILE = "model_file"
    const val INPUTS = "inputs"
    const val OUTPUTS = "outputs"
    const val NAME = "name"
    const val SHAPE = "shape"

    // LLM (the tokenizer object is shared with LongVU)
    const val MAX_SEQ_LEN = "max_seq_len"
    const val TOKENIZER = "tokenizer"
    const val FILE = "file"
    const val BOS_ID = "bos_id"
    const val EOS_IDS = "eos_ids"
    const val CHAT_TEMPLATE = "chat_template"
    const val CONTEXT = "context"
    const val SINK_TOKENS = "sink_tokens"
    const val WINDOW_TOKENS = "window_tokens"

    // SqueezeSAM
    const val PREPROCESSING = "preprocessing"
    const val IMAGE_SIZE = "image_size"
    const val RESIZE = "resize"
    const val PAD = "pad"
    const val PIXEL_MEAN = "pixel_mean"
    const val PIXEL_STD = "pixel_std"
    const val CLICKS = "clicks"
    const val ENCODING = "encoding"
    const val SIGMA_PX = "sigma_px"
    const val MAX_CLICKS = "max_clicks"
    const val PREV_MASK_CHANNEL = "prev_mask_channel"
    const val MASK_THRESHOLD = "mask_threshold"

    // LongVU
    const val METHODS = "methods"
    const val CONFIG = "config"
    const val VIDEO = "video"
    const val FPS = "fps"
    const val MAX_FRAMES = "max_frames"
    const val DECODE_SIZE = "decode_size"
    const val DINO = "dino"
    const val SIGLIP = "siglip"
    const val COMPRESS = "compress"
    const val DEDUP_WINDOW = "dedup_window"
    const val DEDUP_THRESHOLD = "dedup_threshold"
    const val DEDUP_RULE = "dedup_rule"
    const val HI_GRID = "hi_grid"
    const val LO_GRID = "lo_grid"
    const val STC_CHUNK = "stc_chunk"
    const val STC_THRESHOLD = "stc_threshold"
    const val LLM = "llm"
    const val MAX_NEW_TOKENS = "max_new_tokens"
}

object Names {
    const val BUNDLE_MANIFEST = "bundle.json"
    const val BUNDLE_FORMAT_VERSION = 1
    const val TARGET = "android"
    const val BUNDLE_DIR = "bundle" // under getExternalFilesDir(null), where `adb push` puts it
    const val BACKEND = "executorch"

    val LLM_INPUTS = listOf("tokens", "input_pos")
    val LLM_OUTPUTS = listOf("logits")
    val SAM_INPUTS = listOf("image", "clicks")
    val SAM_OUTPUTS = listOf("mask_logits")

    const val DINO = "dino"
    const val SIGLIP = "siglip"
    const val PROJECT = "project"
    const val EMBED = "embed"
    const val DECODE = "decode"

    /** LongVU method -> (input names, output names), in the order the methods take and return them. */
    val LONGVU_IO = mapOf(
        DINO to (listOf("pixels") to listOf("feats")),
        SIGLIP to (listOf("pixels") to listOf("feats")),
        PROJECT to (listOf("feats") to listOf("hi", "lo")),
        EMBED to (listOf("tokens") to listOf("embeds")),
        DECODE to (listOf("embeds", "input_pos") to listOf("logits")),
    )
}
