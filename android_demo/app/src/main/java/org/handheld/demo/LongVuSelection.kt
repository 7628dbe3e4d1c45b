package org.handheld.demo

import kotlin.math.sqrt

/**
 * LongVU's selection stages, ported from export/longvu/compress.py so the phone keeps the same
 * frames and tokens as the host runtime (similarities in double precision, ties to the earlier
 * frame). Features are row-major: a frame's [N, D] tokens as one FloatArray.
 */
object LongVuSelection {
    private fun unitRows(x: FloatArray, n: Int, d: Int): DoubleArray {
        val out = DoubleArray(n * d)
        for (i in 0 until n) {
            var norm = 0.0
            for (k in 0 until d) norm += x[i * d + k].toDouble() * x[i * d + k]
            val inv = 1.0 / maxOf(sqrt(norm), 1e-12)
            for (k in 0 until d) out[i * d + k] = x[i * d + k] * inv
        }
        return out
    }

    /** Mean over the N positions of the per-position cosine between two frames' [N, D] features. */
    fun frameSimilarity(a: DoubleArray, b: DoubleArray, n: Int, d: Int): Double {
        var sum = 0.0
        for (i in 0 until n * d) sum += a[i] * b[i]
        return sum / n
    }

    /** Windows of [window] frames; greedy: drop a frame >= threshold similar to one kept in its window. */
    fun temporalDedup(feats: List<FloatArray>, n: Int, d: Int, window: Int, threshold: Double, rule: String): List<Int> {
        val units = feats.map { unitRows(it, n, d) }
        val kept = ArrayList<Int>()
        for (start in feats.indices step window) {
            val idx = (start until minOf(start + window, feats.size)).toList()
            if (rule == "window-mean" && idx.size > 1) {
                val means = idx.map { i -> idx.filter { it != i }.sumOf { j -> frameSimilarity(units[i], units[j], n, d) } / (idx.size - 1) }
                val chosen = idx.filterIndexed { k, _ -> means[k] < threshold }
                kept += chosen.ifEmpty { listOf(idx[means.indices.minBy { means[it] }]) }
            } else {
                val inWindow = ArrayList<Int>()
                for (i in idx) if (inWindow.isEmpty() || inWindow.maxOf { frameSimilarity(units[i], units[it], n, d) } < threshold) inWindow.add(i)
                kept += inWindow
            }
        }
        return kept
    }

    /** mean(v . t) over a frame's full-resolution tokens [Nh, dim] and the question's embeddings [L, dim]. */
    fun queryScore(hi: FloatArray, text: FloatArray, dim: Int): Double {
        val nh = hi.size / dim
        val l = text.size / dim
        var sum = 0.0
        for (i in 0 until nh) for (j in 0 until l) {
            var dot = 0.0
            for (k in 0 until dim) dot += hi[i * dim + k].toDouble() * text[j * dim + k]
            sum += dot
        }
        return sum / (nh * l)
    }

    fun fullResCount(frames: Int, budget: Int, hiTokens: Int, loTokens: Int): Int {
        if (hiTokens == loTokens) return frames
        val spare = budget - frames * loTokens
        return maxOf(0, minOf(frames, spare / (hiTokens - loTokens)))
    }

    fun topK(scores: List<Double>, k: Int): List<Int> =
        scores.indices.sortedWith(compareBy<Int>({ -scores[it] }, { it })).take(k).sorted()

    private fun cosine(a: FloatArray, b: FloatArray, row: Int, dim: Int): Double {
        var dot = 0.0; var na = 0.0; var nb = 0.0
        for (k in 0 until dim) {
            val x = a[row * dim + k].toDouble(); val y = b[row * dim + k].toDouble()
            dot += x * y; na += x * x; nb += y * y
        }
        return dot / maxOf(sqrt(na) * sqrt(nb), 1e-8)
    }

    /** STC: in chunks, later frames drop tokens >= threshold similar to the chunk's first frame (same resolution). */
    fun spatialCompress(hi: List<FloatArray>, lo: List<FloatArray>, fullRes: List<Boolean>, dim: Int, chunk: Int, threshold: Double): List<List<Int>> =
        hi.indices.map { t ->
            val own = if (fullRes[t]) hi[t] else lo[t]
            val first = (t / chunk) * chunk
            val n = own.size / dim
            if (t == first) (0 until n).toList()
            else {
                val ref = if (fullRes[t]) hi[first] else lo[first]
                (0 until n).filter { cosine(own, ref, it, dim) < threshold }
            }
        }

    /** Evenly spaced tokens of the whole sequence when it is over budget. */
    fun truncateUniform(kept: List<List<Int>>, budget: Int): List<List<Int>> {
        val total = kept.sumOf { it.size }
        if (total <= budget) return kept
        val keep = BooleanArray(total)
        for (i in 0 until budget) keep[(i.toLong() * total / budget).toInt()] = true
        var offset = 0
        return kept.map { frame -> frame.filterIndexed { k, _ -> keep[offset + k] }.also { offset += frame.size } }
    }
}
