import CoreGraphics
import Foundation

/// A benchmark record in export/bundle/schema/bench.schema.json's shape (the host's shape), so
/// `handheld report` compares phone and host runs. tests/test_app_contract.py checks that every
/// key encoded here is in the schema and that every required one is.
struct BenchMetric: Encodable {
    let name: String
    let value: Double
    let unit: String
    let samples: [Double]
    enum CodingKeys: String, CodingKey { case name, value, unit, samples }
}

struct BenchDevice: Encodable {
    let type: String
    let id: String
    let name: String
    let os: String
    enum CodingKeys: String, CodingKey { case type, id, name, os }
}

struct BenchRecord: Encodable {
    let benchSchemaVersion: Int
    let kind: String
    let backend: String
    let model: String
    let device: BenchDevice
    let runner: String
    let sizeBytes: Int
    let warmup: Int
    let iterations: Int
    let metrics: [BenchMetric]
    let parity: JSONValue?
    let createdUnix: Int
    enum CodingKeys: String, CodingKey {
        case kind, backend, model, device, runner, warmup, iterations, metrics, parity
        case benchSchemaVersion = "bench_schema_version"
        case sizeBytes = "size_bytes"
        case createdUnix = "created_unix"
    }
}

/// Launched by `handheld bench DIR --device ios:UDID` (export/device/ios.py) through
///   xcrun devicectl device process launch --console org.handheld.demo --benchmark --bundle Documents/bundle
///       --model KIND-BACKEND --warmup W --iterations N --prompt TEXT --out Documents/bench.json
/// Paths are relative to the app's data container. Runs W discarded and N measured iterations,
/// writes the record, exits. Thread counts are the runtimes' own, so metrics carry none.
enum BenchmarkMode {
    static func requested(_ arguments: [String] = ProcessInfo.processInfo.arguments) -> [String: String]? {
        guard arguments.contains("--benchmark") else { return nil }
        var flags: [String: String] = [:]
        var i = 0
        while i < arguments.count {
            if arguments[i].hasPrefix("--"), i + 1 < arguments.count, !arguments[i + 1].hasPrefix("--") {
                flags[arguments[i]] = arguments[i + 1]
                i += 2
            } else { i += 1 }
        }
        return flags
    }

    static func run(_ flags: [String: String]) {
        let home = URL(fileURLWithPath: NSHomeDirectory())
        do {
            let bundle = try HandheldBundle(root: home.appendingPathComponent(flags["--bundle"] ?? "Documents/bundle"))
            guard let dir = flags["--model"], let entry = bundle.entry(dir: dir) else { throw BundleError.invalid("--model names no entry of the bundle") }
            let warmup = Int(flags["--warmup"] ?? "") ?? 2
            let iterations = Int(flags["--iterations"] ?? "") ?? 5
            let prompt = flags["--prompt"] ?? "Explain in two sentences why the sky is blue."
            var samples: [String: [Double]] = [:]
            func measure(_ body: () throws -> [String: Double]) rethrows {
                for _ in 0..<warmup { _ = try body() }
                for _ in 0..<iterations { for (k, v) in try body() { samples[k, default: []].append(v) } }
            }
            switch entry.kind {
            case "llm":
                let chat = try LLMChat(bundle: bundle, entry: entry)
                // every measured reply starts from an empty cache (a fresh conversation)
                try measure {
                    chat.newConversation()
                    return try chat.reply(prompt, maxTokens: 192) { _ in }
                }
            case "sam":
                let seg = try Segmenter(bundle: bundle, entry: entry)
                let photo = syntheticPhoto()
                let image = ImagePrep.forSegmenter(photo, seg.preprocessing)
                let first = try seg.segment(image, [], previous: nil)
                try measure {
                    let preprocess = elapsedMs { _ = ImagePrep.forSegmenter(photo, seg.preprocessing) }
                    let firstMask = try elapsedMs { _ = try seg.segment(image, [], previous: nil) }
                    let click = try elapsedMs { _ = try seg.segment(image, [Click(x: 320, y: 240, positive: true)], previous: first) }
                    return ["preprocess_ms": preprocess, "first_mask_ms": firstMask, "click_ms": click]
                }
            case "longvu":
                let qa = try VideoQA(bundle: bundle)
                try measure { try timeMethods(qa) }
            default:
                throw BundleError.invalid("unknown kind \(entry.kind)")
            }
            let metrics = samples.keys.sorted().map { name -> BenchMetric in
                let s = samples[name]!.sorted()
                let median = s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
                return BenchMetric(name: name, value: median, unit: name.hasSuffix("_ms") ? "ms" : name.hasSuffix("_tok_s") ? "tok/s" : "count", samples: samples[name]!)
            }
            var sys = utsname()
            uname(&sys)
            let machine = withUnsafeBytes(of: &sys.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let record = BenchRecord(
                benchSchemaVersion: 1, kind: entry.kind, backend: entry.backend, model: entry.dir,
                device: BenchDevice(type: "ios", id: machine, name: machine, os: "iOS \(ProcessInfo.processInfo.operatingSystemVersionString)"),
                runner: "app", sizeBytes: entry.sizeBytes, warmup: warmup, iterations: iterations, metrics: metrics,
                parity: entry.parity, createdUnix: Int(Date().timeIntervalSince1970))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(record).write(to: home.appendingPathComponent(flags["--out"] ?? "Documents/bench.json"), options: .atomic)
            print("handheld benchmark: wrote \(flags["--out"] ?? "Documents/bench.json")")
        } catch {
            print("handheld benchmark failed: \(error.localizedDescription)")  // devicectl --console shows this
        }
        exit(0)
    }

    private static func elapsedMs(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
    }

    /// Each LongVU method once on zero inputs of the configured sizes.
    private static func timeMethods(_ qa: VideoQA) throws -> [String: Double] {
        let c = qa.config, m = qa.methods
        let dino = c.dino.imageSize, sig = c.siglip.imageSize
        var feats: ([Float], [Int]) = ([], [])
        var dim = 0
        let dinoMs = try elapsedMs { _ = try m["dino"]!.run(["pixels": ([Float](repeating: 0, count: 3 * dino * dino), [1, 3, dino, dino])], ints: [:]) }
        let siglipMs = try elapsedMs { feats = try m["siglip"]!.run(["pixels": ([Float](repeating: 0, count: 3 * sig * sig), [1, 3, sig, sig])], ints: [:])["feats"]! }
        let projectMs = try elapsedMs { dim = try m["project"]!.run(["feats": feats], ints: [:])["hi"]!.1[2] }
        let embedMs = try elapsedMs { _ = try m["embed"]!.run([:], ints: ["tokens": ([Int](repeating: 0, count: 16), [1, 16])]) }
        let decodeMs = try elapsedMs { _ = try m["decode"]!.run(["embeds": ([Float](repeating: 0, count: dim), [1, 1, dim])], ints: ["input_pos": ([0], [1])]) }
        return ["dino_ms": dinoMs, "siglip_ms": siglipMs, "project_ms": projectMs, "embed_ms": embedMs, "decode_step_ms": decodeMs]
    }

    /// A bright disc on a gradient: latency does not depend on content.
    private static func syntheticPhoto() -> CGImage {
        let (w, h) = (640, 480)
        let ctx = CGContext(data: nil, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                            space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue)!
        let px = ctx.data!.assumingMemoryBound(to: UInt8.self)  // owned by the context
        for y in 0..<h {
            for x in 0..<w {
                let disc = (x - 320) * (x - 320) + (y - 240) * (y - 240) < 120 * 120
                let i = (y * w + x) * 4
                px[i] = disc ? 240 : UInt8(x * 255 / w); px[i + 1] = disc ? 200 : 90; px[i + 2] = disc ? 40 : UInt8(y * 255 / h); px[i + 3] = 255
            }
        }
        return ctx.makeImage()!
    }
}
