package org.handheld.demo

import android.graphics.Bitmap
import kotlin.math.exp
import kotlin.math.max
import kotlin.math.roundToInt

/** A photo resized, padded and normalized for the segmenter: [3, S, S] planes, channel-major. */
class PreparedImage(val chw: FloatArray, val size: Int, val scale: Float, val width: Int, val height: Int)

data class Click(val x: Float, val y: Float, val positive: Boolean) // photo pixels

/** The exporter's recorded preprocessing (SamSpec), reproduced step by step. */
object ImagePrep {
    fun forSegmenter(photo: Bitmap, spec: SamSpec): PreparedImage {
        val s = spec.imageSize
        // resize: longest side -> S keeping the aspect ratio (bilinear)
        val scale = s.toFloat() / max(photo.width, photo.height)
        val w = (photo.width * scale).roundToInt().coerceIn(1, s)
        val h = (photo.height * scale).roundToInt().coerceIn(1, s)
        val resized = Bitmap.createScaledBitmap(photo, w, h, true)
        val pixels = IntArray(w * h)
        resized.getPixels(pixels, 0, w, 0, 0, w, h)
        // pad bottom/right with zeros after normalization: the array starts zeroed
        val chw = FloatArray(3 * s * s)
        for (y in 0 until h) for (x in 0 until w) {
            val p = pixels[y * w + x]
            val rgb = floatArrayOf(((p shr 16) and 0xff) / 255f, ((p shr 8) and 0xff) / 255f, (p and 0xff) / 255f)
            for (c in 0 until 3) chw[c * s * s + y * s + x] = (rgb[c] - spec.mean[c]) / spec.std[c]
        }
        return PreparedImage(chw, s, scale, photo.width, photo.height)
    }

    /**
     * Gaussian click maps, export/sam/clicks.py's encoding: exp(-d^2 / (2 sigma^2)) around each
     * click in model-input pixels measured from pixel centres, positive and negative clicks in
     * separate channels combined with max. Returns [2 (+1 previous mask), S, S].
     */
    fun clickMaps(clicks: List<Click>, image: PreparedImage, spec: SamSpec, previousMask: FloatArray?): FloatArray {
        val s = image.size
        val channels = if (spec.prevMaskChannel) 3 else 2
        val maps = FloatArray(channels * s * s)
        val twoSigma2 = 2f * spec.sigmaPx * spec.sigmaPx
        for (click in clicks.take(spec.maxClicks)) {
            val cx = click.x * image.scale
            val cy = click.y * image.scale
            val offset = if (click.positive) 0 else s * s
            for (y in 0 until s) for (x in 0 until s) {
                val dx = x + 0.5f - cx
                val dy = y + 0.5f - cy
                val v = exp(-(dx * dx + dy * dy) / twoSigma2)
                val i = offset + y * s + x
                if (v > maps[i]) maps[i] = v
            }
        }
        if (spec.prevMaskChannel && previousMask != null) previousMask.copyInto(maps, 2 * s * s)
        return maps
    }

    /** A video frame for LongVU: squashed to decode_size, then bilinear to the encoder's size, RGB in [0, 1]. */
    fun forVisionEncoder(frame: Bitmap, decodeSize: Int, imageSize: Int): FloatArray {
        val decoded = Bitmap.createScaledBitmap(frame, decodeSize, decodeSize, true)
        val sized = if (imageSize == decodeSize) decoded else Bitmap.createScaledBitmap(decoded, imageSize, imageSize, true)
        val pixels = IntArray(imageSize * imageSize)
        sized.getPixels(pixels, 0, imageSize, 0, 0, imageSize, imageSize)
        val plane = imageSize * imageSize
        val chw = FloatArray(3 * plane)
        for (i in 0 until plane) {
            val p = pixels[i]
            chw[i] = ((p shr 16) and 0xff) / 255f
            chw[plane + i] = ((p shr 8) and 0xff) / 255f
            chw[2 * plane + i] = (p and 0xff) / 255f
        }
        return chw
    }
}
