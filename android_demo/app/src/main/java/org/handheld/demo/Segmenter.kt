package org.handheld.demo

import android.graphics.Bitmap
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/** A mask in model-input pixels ([S, S] logits) and the photo region it covers. */
class Mask(val logits: FloatArray, val size: Int, val threshold: Float, val image: PreparedImage) {
    /** An ARGB overlay the size of the photo: the foreground tinted, the rest transparent. */
    fun overlay(color: Int = 0x8000A0FF.toInt()): Bitmap {
        val out = Bitmap.createBitmap(image.width, image.height, Bitmap.Config.ARGB_8888)
        val row = IntArray(image.width)
        for (y in 0 until image.height) {
            val my = ((y + 0.5f) * image.scale).toInt().coerceIn(0, size - 1)
            for (x in 0 until image.width) {
                val mx = ((x + 0.5f) * image.scale).toInt().coerceIn(0, size - 1)
                row[x] = if (logits[my * size + mx] > threshold) color else 0
            }
            out.setPixels(row, 0, image.width, 0, y, image.width, 1)
        }
        return out
    }

    /** The most confident foreground pixel, in photo pixels: where auto mode puts its first click. */
    fun peak(): Click {
        var best = 0
        for (i in logits.indices) if (logits[i] > logits[best]) best = i
        return Click((best % size + 0.5f) / image.scale, (best / size + 0.5f) / image.scale, positive = true)
    }
}

/**
 * SqueezeSAM on ExecuTorch: forward(image [1,3,S,S], clicks [1,C,S,S]) -> mask_logits [1,1,S,S].
 * Early fusion re-runs the whole network per click (no cached image embedding).
 */
class Segmenter(val spec: SamSpec) : AutoCloseable {
    private val module: Module = Module.load(spec.modelPath)

    /** Auto mode: empty click maps give the salient object; its peak becomes the first click. */
    fun auto(image: PreparedImage): Pair<Mask, List<Click>> {
        val first = segment(image, emptyList(), null)
        val click = first.peak()
        return segment(image, listOf(click), first) to listOf(click)
    }

    fun segment(image: PreparedImage, clicks: List<Click>, previous: Mask?): Mask {
        val s = image.size
        val maps = ImagePrep.clickMaps(clicks, image, spec, previous?.let { m -> FloatArray(m.logits.size) { if (m.logits[it] > spec.maskThreshold) 1f else 0f } })
        val channels = maps.size / (s * s)
        val outputs = module.forward(
            EValue.from(Tensor.fromBlob(image.chw, longArrayOf(1, 3, s.toLong(), s.toLong()))),
            EValue.from(Tensor.fromBlob(maps, longArrayOf(1, channels.toLong(), s.toLong(), s.toLong()))),
        )
        return Mask(outputs[0].toTensor().dataAsFloatArray, s, spec.maskThreshold, image)
    }

    override fun close() = module.destroy()
}
