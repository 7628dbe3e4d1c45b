package org.handheld.demo

import android.content.Context
import android.media.MediaMetadataRetriever
import android.net.Uri
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

class VideoAnswer(val text: String, val framesSampled: Int, val framesKept: Int, val tokens: Int, val timingsMs: Map<String, Long>)

/**
 * LongVU on the phone: sample frames, DINO features -> temporal dedup, SigLIP + projector on the
 * kept frames, question-guided full-resolution frames, STC, then prefill [prompt, video tokens,
 * question] as embeddings and decode greedily. Methods are named by [Names.LONGVU_IO].
 */
class VideoQa(val spec: LongVuSpec) : AutoCloseable {
    private val module: Module = Module.load(spec.modelPath)
    private val tokenizer = BpeTokenizer(java.io.File(spec.tokenizerPath))

    fun sampleFrames(context: Context, video: Uri): List<android.graphics.Bitmap> {
        val retriever = MediaMetadataRetriever()
        retriever.setDataSource(context, video)
        val durationMs = retriever.extractMetadata(MediaMetadataRetriever.METADATA_KEY_DURATION)?.toLong() ?: 0L
        val available = maxOf(1, (durationMs / 1000.0 * spec.fps).toInt())
        val count = minOf(available, spec.maxFrames)
        // longer videos are sampled uniformly down to max_frames, as the host does
        val frames = (0 until count).mapNotNull { i ->
            val t = (i.toDouble() * available / count / spec.fps * 1_000_000).toLong()
            retriever.getFrameAtTime(t, MediaMetadataRetriever.OPTION_CLOSEST)
        }
        retriever.release()
        if (frames.isEmpty()) throw BundleException("no frames could be decoded from this video")
        return frames
    }

    private fun run(method: String, vararg inputs: Tensor): Array<EValue> = module.execute(method, *inputs.map { EValue.from(it) }.toTypedArray())

    private fun pixels(frame: android.graphics.Bitmap, size: Int): Tensor =
        Tensor.fromBlob(ImagePrep.forVisionEncoder(frame, spec.decodeSize, size), longArrayOf(1, 3, size.toLong(), size.toLong()))

    private fun embed(ids: List<Int>): Tensor =
        run(Names.EMBED, Tensor.fromBlob(ids.map { it.toLong() }.toLongArray(), longArrayOf(1, ids.size.toLong())))[0].toTensor()

    fun answer(frames: List<android.graphics.Bitmap>, question: String, onToken: (String) -> Unit = {}): VideoAnswer {
        val timings = LinkedHashMap<String, Long>()
        fun <T> timed(name: String, block: () -> T): T {
            val start = System.currentTimeMillis()
            return block().also { timings[name] = (timings[name] ?: 0L) + System.currentTimeMillis() - start }
        }
        // 1. DINO features of every sampled frame -> temporal dedup
        val dino = timed("dino_ms") { frames.map { run(Names.DINO, pixels(it, spec.dinoSize))[0].toTensor() } }
        val (n, d) = dino[0].shape().let { it[1].toInt() to it[2].toInt() }
        val kept = LongVuSelection.temporalDedup(dino.map { it.dataAsFloatArray }, n, d, spec.dedupWindow, spec.dedupThreshold, spec.dedupRule)
        // 2. SigLIP + projector on the kept frames only (the expensive encoder)
        val projected = timed("siglip_ms") { kept.map { run(Names.PROJECT, run(Names.SIGLIP, pixels(frames[it], spec.siglipSize))[0].toTensor()) } }
        val hi = projected.map { it[0].toTensor().dataAsFloatArray }
        val lo = projected.map { it[1].toTensor().dataAsFloatArray }
        val dim = projected[0][0].toTensor().shape()[2].toInt()
        // 3. question-guided resolution, STC, truncation within the context budget
        val (head, tail) = spec.chatFormat.prompt("\u0000").split("\u0000")
        val headIds = tokenizer.encode(head)
        val questionIds = tokenizer.encode("\n$question$tail")
        val text = embed(tokenizer.encode(question)).dataAsFloatArray
        val budget = spec.contextLen - spec.maxNewTokens - headIds.size - questionIds.size
        if (budget < 1) throw BundleException("the question leaves no room for video tokens: shorten it")
        val k = LongVuSelection.fullResCount(kept.size, budget, spec.hiTokens, spec.loTokens)
        val chosen = LongVuSelection.topK(hi.map { LongVuSelection.queryScore(it, text, dim) }, k).toSet()
        val full = kept.indices.map { it in chosen }
        val tokens = LongVuSelection.truncateUniform(LongVuSelection.spatialCompress(hi, lo, full, dim, spec.stcChunk, spec.stcThreshold), budget)
        // 4. [head, video tokens, question] as embeddings -> prefill, then greedy decode
        val video = FloatArray(tokens.sumOf { it.size } * dim)
        var row = 0
        for ((t, positions) in tokens.withIndex()) {
            val source = if (full[t]) hi[t] else lo[t]
            for (p in positions) { source.copyInto(video, row * dim, p * dim, (p + 1) * dim); row++ }
        }
        // a template-less prompt has no head: embed only non-empty pieces
        val head = if (headIds.isEmpty()) FloatArray(0) else embed(headIds).dataAsFloatArray
        val sequence = head + video + embed(questionIds).dataAsFloatArray
        val length = sequence.size / dim
        val reply = ArrayList<Int>()
        timed("time_to_first_token_ms") {
            reply.add(argmax(decode(sequence, length, dim, 0)))
        }
        timed("decode_ms") {
            while (reply.size < spec.maxNewTokens && reply.last() !in spec.eosIds) {
                onToken(tokenizer.decode(listOf(reply.last())))
                val e = embed(listOf(reply.last())).dataAsFloatArray
                reply.add(argmax(decode(e, 1, dim, length + reply.size - 1)))
            }
        }
        val answer = tokenizer.decode(reply.filter { it !in spec.eosIds })
        return VideoAnswer(answer, frames.size, kept.size, tokens.sumOf { it.size }, timings)
    }

    private fun decode(embeds: FloatArray, length: Int, dim: Int, pos: Int): FloatArray =
        run(Names.DECODE, Tensor.fromBlob(embeds, longArrayOf(1, length.toLong(), dim.toLong())), Tensor.fromBlob(longArrayOf(pos.toLong()), longArrayOf(1)))[0]
            .toTensor().dataAsFloatArray

    private fun argmax(x: FloatArray): Int {
        var best = 0
        for (i in x.indices) if (x[i] > x[best]) best = i
        return best
    }

    override fun close() = module.destroy()
}
