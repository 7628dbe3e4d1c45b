package org.handheld.demo

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.security.MessageDigest

class BundleException(message: String) : Exception(message)

/** A tensor as the manifest describes it; "seq"-like dims stay strings. */
data class IoSpec(val name: String, val shape: List<Any>)

/**
 * A bundle made by `handheld bundle --target android`: bundle.json plus one folder per artifact.
 * Entries keep the exporter's keys verbatim; paths inside an entry are relative to its dir.
 */
class HandheldBundle(val root: File) {
    val json: JSONObject
    val entries: List<JSONObject>

    init {
        val manifest = File(root, Names.BUNDLE_MANIFEST)
        if (!manifest.isFile) throw BundleException("no ${Names.BUNDLE_MANIFEST} in $root: push a bundle made by `handheld bundle --target android`")
        json = JSONObject(manifest.readText())
        val version = json.getInt(Keys.BUNDLE_FORMAT_VERSION)
        if (version != Names.BUNDLE_FORMAT_VERSION) throw BundleException("bundle format $version, this app reads ${Names.BUNDLE_FORMAT_VERSION}: rebuild the bundle")
        if (json.getString(Keys.TARGET) != Names.TARGET) throw BundleException("this bundle targets ${json.getString(Keys.TARGET)}: rebuild with --target android")
        val models = json.getJSONArray(Keys.MODELS)
        entries = (0 until models.length()).map { models.getJSONObject(it) }
    }

    fun entry(kind: String): JSONObject? = entries.firstOrNull { it.getString(Keys.KIND) == kind && it.getString(Keys.BACKEND) == Names.BACKEND }

    fun entryByDir(dir: String): JSONObject =
        entries.firstOrNull { it.getString(Keys.DIR) == dir } ?: throw BundleException("no model $dir in this bundle")

    fun file(entry: JSONObject, relative: String): File = File(File(root, entry.getString(Keys.DIR)), relative)

    /** sha256 of every listed file, as `handheld verify` does; a copy cut short fails here. */
    fun verifyChecksums(progress: (Int, Int) -> Unit = { _, _ -> }) {
        val files = json.getJSONObject(Keys.FILES)
        val names = files.keys().asSequence().toList()
        names.forEachIndexed { i, name ->
            progress(i, names.size)
            val path = File(root, name)
            if (!path.isFile) throw BundleException("missing $name: copy the whole bundle again")
            if (sha256(path) != files.getString(name)) throw BundleException("checksum mismatch in $name: the bundle is damaged or was modified")
        }
    }

    companion object {
        fun sha256(file: File): String {
            val digest = MessageDigest.getInstance("SHA-256")
            file.inputStream().use { input ->
                val buffer = ByteArray(1 shl 20)
                while (true) {
                    val n = input.read(buffer)
                    if (n < 0) break
                    digest.update(buffer, 0, n)
                }
            }
            return digest.digest().joinToString("") { "%02x".format(it) }
        }

        fun ioSpecs(array: JSONArray): List<IoSpec> = (0 until array.length()).map { i ->
            val spec = array.getJSONObject(i)
            val shape = spec.getJSONArray(Keys.SHAPE)
            IoSpec(spec.getString(Keys.NAME), (0 until shape.length()).map { shape.get(it) })
        }

        /** The app feeds tensors by position: refuse an artifact whose names moved. */
        fun requireNames(what: String, specs: List<IoSpec>, expected: List<String>) {
            val got = specs.map { it.name }
            if (got.take(expected.size) != expected) throw BundleException("$what: expected tensors $expected, the bundle has $got: re-export with this Handheld")
        }

        fun floats(array: JSONArray): FloatArray = FloatArray(array.length()) { array.getDouble(it).toFloat() }
    }
}

/** The chat LLM entry. */
class LlmSpec(bundle: HandheldBundle, entry: JSONObject) {
    val modelPath: String = bundle.file(entry, entry.getString(Keys.MODEL_FILE)).path
    private val tokenizer = entry.getJSONObject(Keys.TOKENIZER)
    val tokenizerPath: String = bundle.file(entry, tokenizer.getString(Keys.FILE)).path
    val bosId: Int? = if (tokenizer.isNull(Keys.BOS_ID)) null else tokenizer.getInt(Keys.BOS_ID)
    val eosIds: List<Int> = tokenizer.getJSONArray(Keys.EOS_IDS).let { a -> (0 until a.length()).map { a.getInt(it) } }
    val chatFormat = ChatFormat.fromTemplate(if (tokenizer.isNull(Keys.CHAT_TEMPLATE)) null else tokenizer.getString(Keys.CHAT_TEMPLATE))
    val maxSeqLen: Int = entry.getInt(Keys.MAX_SEQ_LEN)

    // the conversation window past the context (bundles from before it existed: the host's defaults)
    private val context = entry.optJSONObject(Keys.CONTEXT)
    val sinkTokens: Int = context?.getInt(Keys.SINK_TOKENS) ?: 4
    val windowTokens: Int = context?.getInt(Keys.WINDOW_TOKENS) ?: (maxSeqLen / 2)

    init {
        HandheldBundle.requireNames("LLM inputs", HandheldBundle.ioSpecs(entry.getJSONArray(Keys.INPUTS)), Names.LLM_INPUTS)
        HandheldBundle.requireNames("LLM outputs", HandheldBundle.ioSpecs(entry.getJSONArray(Keys.OUTPUTS)), Names.LLM_OUTPUTS)
    }
}

/** The segmenter entry: preprocessing and click encoding exactly as the exporter recorded them. */
class SamSpec(bundle: HandheldBundle, entry: JSONObject) {
    val modelPath: String = bundle.file(entry, entry.getString(Keys.MODEL_FILE)).path
    private val prep = entry.getJSONObject(Keys.PREPROCESSING)
    val imageSize: Int = prep.getInt(Keys.IMAGE_SIZE)
    val resize: String = prep.getString(Keys.RESIZE)
    val pad: String = prep.getString(Keys.PAD)
    val mean: FloatArray = HandheldBundle.floats(prep.getJSONArray(Keys.PIXEL_MEAN))
    val std: FloatArray = HandheldBundle.floats(prep.getJSONArray(Keys.PIXEL_STD))
    private val clicks = entry.getJSONObject(Keys.CLICKS)
    val encoding: String = clicks.getString(Keys.ENCODING)
    val sigmaPx: Float = clicks.getDouble(Keys.SIGMA_PX).toFloat()
    val maxClicks: Int = clicks.getInt(Keys.MAX_CLICKS)
    val prevMaskChannel: Boolean = clicks.getBoolean(Keys.PREV_MASK_CHANNEL)
    val maskThreshold: Float = entry.getDouble(Keys.MASK_THRESHOLD).toFloat()

    init {
        if (encoding != "gaussian") throw BundleException("click encoding $encoding is not one this app renders")
        if (resize != "longest_side" || pad != "bottom_right") throw BundleException("preprocessing $resize/$pad is not one this app reproduces")
        HandheldBundle.requireNames("segmenter inputs", HandheldBundle.ioSpecs(entry.getJSONArray(Keys.INPUTS)), Names.SAM_INPUTS)
        HandheldBundle.requireNames("segmenter outputs", HandheldBundle.ioSpecs(entry.getJSONArray(Keys.OUTPUTS)), Names.SAM_OUTPUTS)
    }
}

/** The LongVU entry: one program with five methods, the sampling and compression settings. */
class LongVuSpec(bundle: HandheldBundle, entry: JSONObject) {
    val modelPath: String = bundle.file(entry, entry.getString(Keys.MODEL_FILE)).path
    private val tokenizer = entry.getJSONObject(Keys.TOKENIZER)
    val tokenizerPath: String = bundle.file(entry, tokenizer.getString(Keys.FILE)).path
    val eosIds: List<Int> = tokenizer.getJSONArray(Keys.EOS_IDS).let { a -> (0 until a.length()).map { a.getInt(it) } }
    val chatFormat = ChatFormat.fromTemplate(if (tokenizer.isNull(Keys.CHAT_TEMPLATE)) null else tokenizer.getString(Keys.CHAT_TEMPLATE))
    private val config = entry.getJSONObject(Keys.CONFIG)
    private val video = config.getJSONObject(Keys.VIDEO)
    val fps: Double = video.getDouble(Keys.FPS)
    val maxFrames: Int = video.getInt(Keys.MAX_FRAMES)
    val decodeSize: Int = video.getInt(Keys.DECODE_SIZE)
    val dinoSize: Int = config.getJSONObject(Keys.DINO).getInt(Keys.IMAGE_SIZE)
    val siglipSize: Int = config.getJSONObject(Keys.SIGLIP).getInt(Keys.IMAGE_SIZE)
    private val compress = config.getJSONObject(Keys.COMPRESS)
    val dedupWindow: Int = compress.getInt(Keys.DEDUP_WINDOW)
    val dedupThreshold: Double = compress.getDouble(Keys.DEDUP_THRESHOLD)
    val dedupRule: String = compress.getString(Keys.DEDUP_RULE)
    val hiTokens: Int = compress.getInt(Keys.HI_GRID).let { it * it }
    val loTokens: Int = compress.getInt(Keys.LO_GRID).let { it * it }
    val stcChunk: Int = compress.getInt(Keys.STC_CHUNK)
    val stcThreshold: Double = compress.getDouble(Keys.STC_THRESHOLD)
    val contextLen: Int = config.getJSONObject(Keys.LLM).getInt(Keys.MAX_SEQ_LEN)
    val maxNewTokens: Int = config.getInt(Keys.MAX_NEW_TOKENS)

    init {
        val methods = entry.getJSONObject(Keys.METHODS)
        for ((method, io) in Names.LONGVU_IO) {
            val spec = methods.getJSONObject(method)
            HandheldBundle.requireNames("LongVU $method inputs", HandheldBundle.ioSpecs(spec.getJSONArray(Keys.INPUTS)), io.first)
            HandheldBundle.requireNames("LongVU $method outputs", HandheldBundle.ioSpecs(spec.getJSONArray(Keys.OUTPUTS)), io.second)
        }
    }
}
