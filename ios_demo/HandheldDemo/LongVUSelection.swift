import Foundation

/// LongVU's selection stages, ported from export/longvu/compress.py so the phone keeps the same
/// frames and tokens as the host runtime (double precision, ties to the earlier frame).
/// A frame's [N, D] tokens are one row-major [Float].
enum LongVUSelection {
    private static func unitRows(_ x: [Float], _ n: Int, _ d: Int) -> [Double] {
        var out = [Double](repeating: 0, count: n * d)
        for i in 0..<n {
            var norm = 0.0
            for k in 0..<d { norm += Double(x[i * d + k]) * Double(x[i * d + k]) }
            let inv = 1 / max(norm.squareRoot(), 1e-12)
            for k in 0..<d { out[i * d + k] = Double(x[i * d + k]) * inv }
        }
        return out
    }

    static func frameSimilarity(_ a: [Double], _ b: [Double], _ n: Int) -> Double {
        var sum = 0.0
        for i in a.indices { sum += a[i] * b[i] }
        return sum / Double(n)
    }

    static func temporalDedup(_ feats: [[Float]], n: Int, d: Int, window: Int, threshold: Double, rule: String) -> [Int] {
        let units = feats.map { unitRows($0, n, d) }
        var kept: [Int] = []
        for start in stride(from: 0, to: feats.count, by: window) {
            let idx = Array(start..<min(start + window, feats.count))
            if rule == "window-mean" && idx.count > 1 {
                let means = idx.map { i in idx.filter { $0 != i }.map { frameSimilarity(units[i], units[$0], n) }.reduce(0, +) / Double(idx.count - 1) }
                let chosen = idx.enumerated().filter { means[$0.offset] < threshold }.map(\.element)
                kept += chosen.isEmpty ? [idx[means.indices.min { means[$0] < means[$1] }!]] : chosen
            } else {
                var inWindow: [Int] = []
                for i in idx where inWindow.isEmpty || inWindow.map({ frameSimilarity(units[i], units[$0], n) }).max()! < threshold { inWindow.append(i) }
                kept += inWindow
            }
        }
        return kept
    }

    static func queryScore(_ hi: [Float], _ text: [Float], dim: Int) -> Double {
        let nh = hi.count / dim, l = text.count / dim
        var sum = 0.0
        for i in 0..<nh { for j in 0..<l { for k in 0..<dim { sum += Double(hi[i * dim + k]) * Double(text[j * dim + k]) } } }
        return sum / Double(nh * l)
    }

    static func fullResCount(frames: Int, budget: Int, hiTokens: Int, loTokens: Int) -> Int {
        if hiTokens == loTokens { return frames }
        return max(0, min(frames, (budget - frames * loTokens) / (hiTokens - loTokens)))
    }

    static func topK(_ scores: [Double], _ k: Int) -> [Int] {
        Array(scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }.prefix(k)).sorted()
    }

    private static func cosine(_ a: [Float], _ b: [Float], row: Int, dim: Int) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for k in 0..<dim {
            let x = Double(a[row * dim + k]), y = Double(b[row * dim + k])
            dot += x * y; na += x * x; nb += y * y
        }
        return dot / max(na.squareRoot() * nb.squareRoot(), 1e-8)
    }

    static func spatialCompress(hi: [[Float]], lo: [[Float]], fullRes: [Bool], dim: Int, chunk: Int, threshold: Double) -> [[Int]] {
        hi.indices.map { t in
            let own = fullRes[t] ? hi[t] : lo[t]
            let first = (t / chunk) * chunk
            let n = own.count / dim
            if t == first { return Array(0..<n) }
            let ref = fullRes[t] ? hi[first] : lo[first]
            return (0..<n).filter { cosine(own, ref, row: $0, dim: dim) < threshold }
        }
    }

    static func truncateUniform(_ kept: [[Int]], budget: Int) -> [[Int]] {
        let total = kept.reduce(0) { $0 + $1.count }
        if total <= budget { return kept }
        var keep = [Bool](repeating: false, count: total)
        for i in 0..<budget { keep[i * total / budget] = true }
        var offset = 0
        return kept.map { frame in
            defer { offset += frame.count }
            return frame.enumerated().filter { keep[offset + $0.offset] }.map(\.element)
        }
    }
}
