import AVFoundation
import CoreML
import ExecuTorch
import Foundation

struct VideoAnswer {
    let text: String
    let framesSampled: Int
    let framesKept: Int
    let tokens: Int
    let timingsMs: [String: Double]
}

/// One LongVU method, on ExecuTorch (a method of the program) or CoreML (its own .mlpackage).
protocol MethodRunner {
    /// inputs/outputs by the manifest's names, row-major floats (int64 inputs carried as Int).
    func run(_ floats: [String: ([Float], [Int])], ints: [String: ([Int], [Int])]) throws -> [String: ([Float], [Int])]
}

final class ExecuTorchMethod: MethodRunner {
    private let module: Module
    private let method: String
    private let io: ([String], [String])

    init(module: Module, method: String) throws {
        self.module = module
        self.method = method
        io = BundleNames.longVUIO[method]!
        try module.load(method)
    }

    func run(_ floats: [String: ([Float], [Int])], ints: [String: ([Int], [Int])]) throws -> [String: ([Float], [Int])] {
        // positional, in the manifest's input order
        let inputs: [Value] = io.0.map { name in
            if let f = floats[name] { return Value(Tensor<Float>(f.0, shape: f.1)) }
            let i = ints[name]!
            return Value(Tensor<Int64>(i.0.map(Int64.init), shape: i.1))
        }
        let outputs = try module.execute(method, inputs)
        var result: [String: ([Float], [Int])] = [:]
        for (i, name) in io.1.enumerated() {
            let t: Tensor<Float> = outputs[i].tensor()!
            result[name] = (t.scalars(), t.shape)
        }
        return result
    }
}

final class CoreMLMethod: MethodRunner {
    private let model: MLModel
    private let io: ([String], [String])

    init(url: URL, method: String) throws {
        model = try MLModel(contentsOf: try MLModel.compileModel(at: url))
        io = BundleNames.longVUIO[method]!
    }

    func run(_ floats: [String: ([Float], [Int])], ints: [String: ([Int], [Int])]) throws -> [String: ([Float], [Int])] {
        var features: [String: MLFeatureValue] = [:]
        for (name, (v, shape)) in floats {
            let a = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
            for (i, x) in v.enumerated() { a[i] = NSNumber(value: x) }
            features[name] = MLFeatureValue(multiArray: a)
        }
        let out = try model.prediction(from: try MLDictionaryFeatureProvider(dictionary: features))
        var result: [String: ([Float], [Int])] = [:]
        for name in io.1 {
            let a = out.featureValue(for: name)!.multiArrayValue!
            result[name] = ((0..<a.count).map { a[$0].floatValue }, a.shape.map(\.intValue))
        }
        return result
    }
}

/// LongVU on the phone: sample frames, DINO -> temporal dedup, SigLIP + projector on kept frames,
/// question-guided resolution, STC, truncation, then prefill [head, video, question] embeddings and
/// decode greedily. Vision methods run on CoreML when the bundle has a CoreML LongVU entry.
final class VideoQA {
    let config: LongVUConfig
    private let eos: Set<Int>
    private let format: ChatFormat
    private let tokenizer: BPETokenizer
    private(set) var methods: [String: MethodRunner] = [:]

    init(bundle: HandheldBundle) throws {
        guard let text = bundle.entry(kind: "longvu", backend: "executorch"), let file = text.modelFile,
              let tok = text.tokenizer, let config = text.config, let specs = text.methods else {
            throw BundleError.invalid("This bundle has no ExecuTorch LongVU entry (its text methods run on ExecuTorch).")
        }
        for (method, io) in BundleNames.longVUIO {
            try HandheldBundle.requireNames("LongVU \(method) inputs", specs[method]?.inputs, io.0)
            try HandheldBundle.requireNames("LongVU \(method) outputs", specs[method]?.outputs, io.1)
        }
        self.config = config
        eos = Set(tok.eosIds)
        format = ChatFormat(template: tok.chatTemplate)
        tokenizer = try BPETokenizer(url: bundle.url(text, tok.file))
        let module = Module(filePath: bundle.url(text, file).path)
        let vision = bundle.entry(kind: "longvu", backend: "coreml")
        for method in BundleNames.longVUIO.keys {
            if let v = vision, BundleNames.longVUVisionMethods.contains(method), let mlFile = v.methods?[method]?.file {
                methods[method] = try CoreMLMethod(url: bundle.url(v, mlFile), method: method)
            } else {
                methods[method] = try ExecuTorchMethod(module: module, method: method)
            }
        }
    }

    func sampleFrames(_ url: URL) async throws -> [CGImage] {
        let asset = AVURLAsset(url: url)
        let seconds = try await asset.load(.duration).seconds
        let available = max(1, Int(seconds * config.video.fps))
        let count = min(available, config.video.maxFrames)  // longer videos: uniformly down to max_frames
        let generator = AVAssetImageGenerator(asset: asset)
        generator.requestedTimeToleranceBefore = .zero
        generator.requestedTimeToleranceAfter = .zero
        var frames: [CGImage] = []
        for i in 0..<count {
            let t = Double(i) * Double(available) / Double(count) / config.video.fps
            frames.append(try await generator.image(at: CMTime(seconds: t, preferredTimescale: 600)).image)
        }
        guard !frames.isEmpty else { throw BundleError.invalid("No frames could be decoded from this video.") }
        return frames
    }

    private func pixels(_ frame: CGImage, _ size: Int) -> [String: ([Float], [Int])] {
        ["pixels": (ImagePrep.forVisionEncoder(frame, decodeSize: config.video.decodeSize, imageSize: size), [1, 3, size, size])]
    }

    private func embed(_ ids: [Int]) throws -> [Float] {
        try methods["embed"]!.run([:], ints: ["tokens": (ids, [1, ids.count])])["embeds"]!.0
    }

    private func decode(_ embeds: [Float], length: Int, dim: Int, pos: Int) throws -> Int {
        let logits = try methods["decode"]!.run(["embeds": (embeds, [1, length, dim])], ints: ["input_pos": ([pos], [1])])["logits"]!.0
        return logits.indices.max { logits[$0] < logits[$1] }!
    }

    func answer(_ frames: [CGImage], question: String) throws -> VideoAnswer {
        var timings: [String: Double] = [:]
        func timed<T>(_ name: String, _ block: () throws -> T) rethrows -> T {
            let start = Date()
            defer { timings[name, default: 0] += Date().timeIntervalSince(start) * 1000 }
            return try block()
        }
        let c = config.compress
        let dino = try timed("dino_ms") { try frames.map { try methods["dino"]!.run(pixels($0, config.dino.imageSize), ints: [:])["feats"]! } }
        let (n, d) = (dino[0].1[1], dino[0].1[2])
        let kept = LongVUSelection.temporalDedup(dino.map(\.0), n: n, d: d, window: c.dedupWindow, threshold: c.dedupThreshold, rule: c.dedupRule)
        let projected = try timed("siglip_ms") {
            try kept.map { i -> [String: ([Float], [Int])] in
                let feats = try methods["siglip"]!.run(pixels(frames[i], config.siglip.imageSize), ints: [:])["feats"]!
                return try methods["project"]!.run(["feats": feats], ints: [:])
            }
        }
        let hi = projected.map { $0["hi"]!.0 }, lo = projected.map { $0["lo"]!.0 }
        let dim = projected[0]["hi"]!.1[2]
        let parts = format.prompt("\u{0}").components(separatedBy: "\u{0}")
        let headIds = tokenizer.encode(parts[0])
        let questionIds = tokenizer.encode("\n" + question + (parts.count > 1 ? parts[1] : ""))
        let text = try embed(tokenizer.encode(question))
        let budget = config.llm.maxSeqLen - config.maxNewTokens - headIds.count - questionIds.count
        guard budget > 0 else { throw BundleError.invalid("The question leaves no room for video tokens: shorten it.") }
        let k = LongVUSelection.fullResCount(frames: kept.count, budget: budget, hiTokens: c.hiGrid * c.hiGrid, loTokens: c.loGrid * c.loGrid)
        let chosen = Set(LongVUSelection.topK(hi.map { LongVUSelection.queryScore($0, text, dim: dim) }, k))
        let full = kept.indices.map { chosen.contains($0) }
        let tokens = LongVUSelection.truncateUniform(
            LongVUSelection.spatialCompress(hi: hi, lo: lo, fullRes: full, dim: dim, chunk: c.stcChunk, threshold: c.stcThreshold), budget: budget)
        var video: [Float] = []
        for (t, positions) in tokens.enumerated() {
            let source = full[t] ? hi[t] : lo[t]
            for p in positions { video += source[(p * dim)..<((p + 1) * dim)] }
        }
        // a template-less prompt has no head: embed only non-empty pieces
        let head = headIds.isEmpty ? [] : try embed(headIds)
        let sequence = head + video + (try embed(questionIds))
        let length = sequence.count / dim
        let firstToken = try timed("time_to_first_token_ms") { try decode(sequence, length: length, dim: dim, pos: 0) }
        var reply = [firstToken]
        try timed("decode_ms") {
            while reply.count < config.maxNewTokens, !eos.contains(reply.last!) {
                reply.append(try decode(try embed([reply.last!]), length: 1, dim: dim, pos: length + reply.count - 1))
            }
        }
        return VideoAnswer(text: tokenizer.decode(reply.filter { !eos.contains($0) }), framesSampled: frames.count, framesKept: kept.count,
                           tokens: tokens.reduce(0) { $0 + $1.count }, timingsMs: timings)
    }
}
