package org.handheld.demo

import android.app.Activity
import android.graphics.Bitmap
import android.graphics.Color
import android.os.Bundle
import android.util.Log
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File
import kotlin.concurrent.thread

/**
 * Benchmark mode, started by `handheld bench DIR --device adb:SERIAL` (export/device/adb.py):
 *
 *   am start -W -S -n org.handheld.demo/.BenchmarkActivity --es bundle DIR --es model KIND-BACKEND
 *       --ei warmup W --ei iterations N --es prompt TEXT --es out FILE
 *
 * Runs W discarded and N measured iterations of the model's main operation and writes a
 * bench.schema.json record to FILE, which the host pulls. Logs go to `adb logcat -s HandheldBench`.
 */
class BenchmarkActivity : Activity() {
    object Extras {
        const val BUNDLE = "bundle"
        const val MODEL = "model"
        const val WARMUP = "warmup"
        const val ITERATIONS = "iterations"
        const val PROMPT = "prompt"
        const val OUT = "out"
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val root = File(intent.getStringExtra(Extras.BUNDLE) ?: File(getExternalFilesDir(null), Names.BUNDLE_DIR).path)
        val model = intent.getStringExtra(Extras.MODEL) ?: return fail("missing --es ${Extras.MODEL}")
        val warmup = intent.getIntExtra(Extras.WARMUP, 2)
        val iterations = intent.getIntExtra(Extras.ITERATIONS, 5)
        val prompt = intent.getStringExtra(Extras.PROMPT) ?: "Explain in two sentences why the sky is blue."
        val out = File(intent.getStringExtra(Extras.OUT) ?: return fail("missing --es ${Extras.OUT}"))
        thread(name = "handheld-bench") {
            try {
                val bundle = HandheldBundle(root)
                bundle.verifyChecksums()
                val entry = bundle.entryByDir(model)
                val record = BenchmarkRecord(entry, warmup, iterations)
                val measure = { name: String, op: () -> Double -> record.add(name, repeatMeasured(warmup, iterations, op)) }
                when (entry.getString(Keys.KIND)) {
                    "llm" -> benchLlm(LlmSpec(bundle, entry), prompt, warmup, iterations, record)
                    "sam" -> benchSegmenter(SamSpec(bundle, entry), measure)
                    "longvu" -> benchLongVu(LongVuSpec(bundle, entry), measure)
                    else -> throw BundleException("unknown kind ${entry.getString(Keys.KIND)}")
                }
                val tmp = File(out.path + ".partial")
                tmp.writeText(record.toJson(etdumpPath = null).toString(2))
                tmp.renameTo(out) // the host polls for `out`: it appears complete or not at all
                Log.i(TAG, "wrote $out")
            } catch (e: Exception) {
                Log.e(TAG, "benchmark failed", e)
            }
            runOnUiThread { finish() }
        }
    }

    private fun fail(message: String) { Log.e(TAG, message); finish() }

    private fun repeatMeasured(warmup: Int, iterations: Int, op: () -> Double): List<Double> {
        repeat(warmup) { op() }
        return List(iterations) { op() }
    }

    private fun timeMs(block: () -> Unit): Double {
        val start = System.nanoTime()
        block()
        return (System.nanoTime() - start) / 1e6
    }

    private fun benchLlm(spec: LlmSpec, prompt: String, warmup: Int, iterations: Int, record: BenchmarkRecord) {
        LlmChat(spec).use { chat ->
            // every measured reply starts from an empty cache (a fresh conversation)
            repeat(warmup) { chat.newConversation(); chat.reply(prompt, maxTokens = 192) {} }
            val runs = List(iterations) { chat.newConversation(); LlmChat.metrics(chat.reply(prompt, maxTokens = 192) {}) }
            for (name in runs[0].keys) record.add(name, runs.map { it.getValue(name) })
        }
    }

    private fun benchSegmenter(spec: SamSpec, measure: (String, () -> Double) -> Unit) {
        // a synthetic photo: a bright disc on a gradient (latency does not depend on content)
        val photo = Bitmap.createBitmap(640, 480, Bitmap.Config.ARGB_8888)
        for (y in 0 until 480) for (x in 0 until 640) {
            val inDisc = (x - 320) * (x - 320) + (y - 240) * (y - 240) < 120 * 120
            photo.setPixel(x, y, if (inDisc) Color.rgb(240, 200, 40) else Color.rgb(x * 255 / 640, 90, y * 255 / 480))
        }
        Segmenter(spec).use { seg ->
            val image = ImagePrep.forSegmenter(photo, spec)
            measure("preprocess_ms") { timeMs { ImagePrep.forSegmenter(photo, spec) } }
            measure("first_mask_ms") { timeMs { seg.segment(image, emptyList(), null) } }
            val first = seg.segment(image, emptyList(), null)
            measure("click_ms") { timeMs { seg.segment(image, listOf(Click(320f, 240f, true)), first) } }
        }
    }

    private fun benchLongVu(spec: LongVuSpec, measure: (String, () -> Double) -> Unit) {
        // each method once per iteration on zero inputs of the manifest's shapes
        val module = Module.load(spec.modelPath)
        fun pixels(size: Int) = EValue.from(Tensor.fromBlob(FloatArray(3 * size * size), longArrayOf(1, 3, size.toLong(), size.toLong())))
        val siglip = module.execute(Names.SIGLIP, pixels(spec.siglipSize))[0]
        val hi = module.execute(Names.PROJECT, siglip)[0].toTensor()
        val dim = hi.shape()[2]
        measure("dino_ms") { timeMs { module.execute(Names.DINO, pixels(spec.dinoSize)) } }
        measure("siglip_ms") { timeMs { module.execute(Names.SIGLIP, pixels(spec.siglipSize)) } }
        measure("project_ms") { timeMs { module.execute(Names.PROJECT, siglip) } }
        val tokens = EValue.from(Tensor.fromBlob(LongArray(16), longArrayOf(1, 16)))
        measure("embed_ms") { timeMs { module.execute(Names.EMBED, tokens) } }
        val step = EValue.from(Tensor.fromBlob(FloatArray(dim.toInt()), longArrayOf(1, 1, dim)))
        measure("decode_step_ms") { timeMs { module.execute(Names.DECODE, step, EValue.from(Tensor.fromBlob(longArrayOf(0), longArrayOf(1)))) } }
        module.destroy()
    }

    companion object {
        const val TAG = "HandheldBench"
    }
}
