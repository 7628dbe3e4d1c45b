import CoreGraphics
import Foundation

/// A photo resized, padded and normalized for the segmenter: [3, S, S] planes, channel-major.
struct PreparedImage {
    let chw: [Float]
    let size: Int
    let scale: Float  // model pixels per photo pixel
    let width: Int
    let height: Int
}

struct Click {
    let x: Float, y: Float  // photo pixels
    let positive: Bool
}

enum ImagePrep {
    /// `image` redrawn at w x h (CoreGraphics' high-quality interpolation), RGBA8, premultiplied.
    static func resized(_ image: CGImage, width w: Int, height h: Int) -> CGImage {
        let ctx = CGContext(data: nil, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                            space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue)!
        ctx.interpolationQuality = .high
        ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
        return ctx.makeImage()!
    }

    /// RGBA8 bytes of `image` drawn into a w x h bitmap.
    static func rgba(_ image: CGImage, width w: Int, height h: Int) -> [UInt8] {
        var pixels = [UInt8](repeating: 0, count: w * h * 4)
        pixels.withUnsafeMutableBytes { buffer in  // the context writes into `pixels` only inside this closure
            let ctx = CGContext(data: buffer.baseAddress, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue)!
            ctx.interpolationQuality = .high
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
        }
        return pixels
    }

    /// The exporter's recorded preprocessing: longest side -> S, pad bottom/right with zeros after normalization.
    static func forSegmenter(_ photo: CGImage, _ p: SamPreprocessing) -> PreparedImage {
        let s = p.imageSize
        let scale = Float(s) / Float(max(photo.width, photo.height))
        let w = min(s, max(1, Int((Float(photo.width) * scale).rounded())))
        let h = min(s, max(1, Int((Float(photo.height) * scale).rounded())))
        let px = rgba(photo, width: w, height: h)
        var chw = [Float](repeating: 0, count: 3 * s * s)
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    let v = Float(px[(y * w + x) * 4 + c]) / 255
                    chw[c * s * s + y * s + x] = (v - p.pixelMean[c]) / p.pixelStd[c]
                }
            }
        }
        return PreparedImage(chw: chw, size: s, scale: scale, width: photo.width, height: photo.height)
    }

    /// Gaussian click maps as export/sam/clicks.py renders them: exp(-d^2 / (2 sigma^2)) from pixel
    /// centres in model pixels, positive/negative channels combined with max (+ previous mask).
    static func clickMaps(_ clicks: [Click], _ image: PreparedImage, _ enc: ClickEncoding, previousMask: [Float]?) -> [Float] {
        let s = image.size, plane = s * s
        var maps = [Float](repeating: 0, count: (enc.prevMaskChannel ? 3 : 2) * plane)
        let twoSigma2 = 2 * enc.sigmaPx * enc.sigmaPx
        for click in clicks.prefix(enc.maxClicks) {
            let cx = click.x * image.scale, cy = click.y * image.scale
            let offset = click.positive ? 0 : plane
            for y in 0..<s {
                for x in 0..<s {
                    let dx = Float(x) + 0.5 - cx, dy = Float(y) + 0.5 - cy
                    let v = exp(-(dx * dx + dy * dy) / twoSigma2)
                    maps[offset + y * s + x] = max(maps[offset + y * s + x], v)
                }
            }
        }
        if enc.prevMaskChannel, let prev = previousMask { maps.replaceSubrange((2 * plane)..<(3 * plane), with: prev) }
        return maps
    }

    /// A video frame for LongVU: squashed to decode_size, then resized to the encoder's size, RGB in [0, 1].
    static func forVisionEncoder(_ frame: CGImage, decodeSize: Int, imageSize: Int) -> [Float] {
        let decoded = resized(frame, width: decodeSize, height: decodeSize)  // aspect squashed, as the host decodes
        let px = rgba(decoded, width: imageSize, height: imageSize)
        let plane = imageSize * imageSize
        var chw = [Float](repeating: 0, count: 3 * plane)
        for i in 0..<plane { for c in 0..<3 { chw[c * plane + i] = Float(px[i * 4 + c]) / 255 } }
        return chw
    }
}
