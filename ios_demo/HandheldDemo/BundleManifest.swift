import Foundation

// bundle.json as `handheld bundle --target ios` writes it (export/bundle/schema/bundle.schema.json).
// Every key this app reads is a CodingKeys case below; tests/test_app_contract.py parses them and
// fails when an exporter or the bundler stops producing one. Decode manifests only through these
// types (no string-keyed dictionary reads).

enum BundleError: LocalizedError {
    case invalid(String)
    var errorDescription: String? { if case .invalid(let message) = self { return message }; return nil }
}

enum BundleNames {
    static let manifest = "bundle.json"
    static let formatVersion = 1
    static let target = "ios"
    static let folder = "bundle"  // Documents/bundle, where `handheld bench` copies it
    static let llmInputs = ["tokens", "input_pos"]
    static let llmOutputs = ["logits"]
    static let samInputs = ["image", "clicks"]
    static let samOutputs = ["mask_logits"]
    /// LongVU method -> (input names, output names)
    static let longVUIO: [String: ([String], [String])] = [
        "dino": (["pixels"], ["feats"]),
        "siglip": (["pixels"], ["feats"]),
        "project": (["feats"], ["hi", "lo"]),
        "embed": (["tokens"], ["embeds"]),
        "decode": (["embeds", "input_pos"], ["logits"]),
    ]
    static let longVUVisionMethods = ["dino", "siglip", "project"]
}

/// Any JSON value: parity numbers are passed through to benchmark records untouched.
enum JSONValue: Codable {
    case number(Double), string(String), bool(Bool), array([JSONValue]), object([String: JSONValue]), null

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        case .bool(let b): try c.encode(b)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        case .null: try c.encodeNil()
        }
    }
}

/// A shape entry: a fixed size or a named dynamic dimension ("seq").
enum ShapeDim: Decodable {
    case fixed(Int), symbolic(String)
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int.self) { self = .fixed(n) } else { self = .symbolic(try c.decode(String.self)) }
    }
}

struct IOSpec: Decodable {
    let name: String
    let shape: [ShapeDim]
    enum CodingKeys: String, CodingKey { case name, shape }
}

/// How a chat goes on past max_seq_len (export/bundle/contract.py LLM_CONTEXT).
struct ContextPolicy: Decodable {
    let sinkTokens: Int
    let windowTokens: Int
    let onOverflow: String
    enum CodingKeys: String, CodingKey {
        case sinkTokens = "sink_tokens"
        case windowTokens = "window_tokens"
        case onOverflow = "on_overflow"
    }
}

struct TokenizerSpec: Decodable {
    let file: String
    let bosId: Int?
    let eosIds: [Int]
    let chatTemplate: String?
    enum CodingKeys: String, CodingKey {
        case file
        case bosId = "bos_id"
        case eosIds = "eos_ids"
        case chatTemplate = "chat_template"
    }
}

struct SamPreprocessing: Decodable {
    let imageSize: Int
    let resize: String
    let pad: String
    let pixelMean: [Float]
    let pixelStd: [Float]
    enum CodingKeys: String, CodingKey {
        case imageSize = "image_size"
        case resize, pad
        case pixelMean = "pixel_mean"
        case pixelStd = "pixel_std"
    }
}

struct ClickEncoding: Decodable {
    let encoding: String
    let sigmaPx: Float
    let maxClicks: Int
    let prevMaskChannel: Bool
    enum CodingKeys: String, CodingKey {
        case encoding
        case sigmaPx = "sigma_px"
        case maxClicks = "max_clicks"
        case prevMaskChannel = "prev_mask_channel"
    }
}

struct MethodSpec: Decodable {
    let file: String?  // CoreML variants: one .mlpackage per method
    let inputs: [IOSpec]
    let outputs: [IOSpec]
    enum CodingKeys: String, CodingKey { case file, inputs, outputs }
}

struct VideoConfig: Decodable {
    let fps: Double
    let maxFrames: Int
    let decodeSize: Int
    enum CodingKeys: String, CodingKey {
        case fps
        case maxFrames = "max_frames"
        case decodeSize = "decode_size"
    }
}

struct VitConfig: Decodable {
    let imageSize: Int
    enum CodingKeys: String, CodingKey { case imageSize = "image_size" }
}

struct CompressConfig: Decodable {
    let dedupWindow: Int
    let dedupThreshold: Double
    let dedupRule: String
    let hiGrid: Int
    let loGrid: Int
    let stcChunk: Int
    let stcThreshold: Double
    enum CodingKeys: String, CodingKey {
        case dedupWindow = "dedup_window"
        case dedupThreshold = "dedup_threshold"
        case dedupRule = "dedup_rule"
        case hiGrid = "hi_grid"
        case loGrid = "lo_grid"
        case stcChunk = "stc_chunk"
        case stcThreshold = "stc_threshold"
    }
}

struct DecoderConfig: Decodable {
    let maxSeqLen: Int
    enum CodingKeys: String, CodingKey { case maxSeqLen = "max_seq_len" }
}

struct LongVUConfig: Decodable {
    let video: VideoConfig
    let dino: VitConfig
    let siglip: VitConfig
    let compress: CompressConfig
    let llm: DecoderConfig
    let maxNewTokens: Int
    enum CodingKeys: String, CodingKey {
        case video, dino, siglip, compress, llm
        case maxNewTokens = "max_new_tokens"
    }
}

/// One artifact in the bundle: the exporter's manifest fields plus `dir`. Kind-specific fields
/// are decoded only for their kind (an LLM's `config` is not LongVU's).
struct ModelEntry: Decodable {
    let kind: String
    let backend: String
    let dir: String
    let sizeBytes: Int
    let parity: JSONValue?
    let modelFile: String?
    let inputs: [IOSpec]?
    let outputs: [IOSpec]?
    let tokenizer: TokenizerSpec?
    let maxSeqLen: Int?
    let context: ContextPolicy?
    let preprocessing: SamPreprocessing?
    let clicks: ClickEncoding?
    let maskThreshold: Float?
    let methods: [String: MethodSpec]?
    let config: LongVUConfig?

    enum CodingKeys: String, CodingKey {
        case kind, backend, dir, parity, inputs, outputs, tokenizer, preprocessing, clicks, methods, config, context
        case sizeBytes = "size_bytes"
        case modelFile = "model_file"
        case maxSeqLen = "max_seq_len"
        case maskThreshold = "mask_threshold"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(String.self, forKey: .kind)
        backend = try c.decode(String.self, forKey: .backend)
        dir = try c.decode(String.self, forKey: .dir)
        sizeBytes = try c.decode(Int.self, forKey: .sizeBytes)
        parity = try c.decodeIfPresent(JSONValue.self, forKey: .parity)
        modelFile = try c.decodeIfPresent(String.self, forKey: .modelFile)
        inputs = try c.decodeIfPresent([IOSpec].self, forKey: .inputs)
        outputs = try c.decodeIfPresent([IOSpec].self, forKey: .outputs)
        tokenizer = try c.decodeIfPresent(TokenizerSpec.self, forKey: .tokenizer)
        maxSeqLen = try c.decodeIfPresent(Int.self, forKey: .maxSeqLen)
        context = try c.decodeIfPresent(ContextPolicy.self, forKey: .context)
        let isSam = kind == "sam", isLongVU = kind == "longvu"
        preprocessing = try isSam ? c.decode(SamPreprocessing.self, forKey: .preprocessing) : nil
        clicks = try isSam ? c.decode(ClickEncoding.self, forKey: .clicks) : nil
        maskThreshold = try isSam ? c.decode(Float.self, forKey: .maskThreshold) : nil
        methods = try isLongVU ? c.decode([String: MethodSpec].self, forKey: .methods) : nil
        config = try isLongVU ? c.decode(LongVUConfig.self, forKey: .config) : nil
    }
}

struct BundleManifest: Decodable {
    let bundleFormatVersion: Int
    let target: String
    let models: [ModelEntry]
    let files: [String: String]
    enum CodingKeys: String, CodingKey {
        case bundleFormatVersion = "bundle_format_version"
        case target, models, files
    }
}

/// A bundle folder: bundle.json plus one folder per artifact; paths in an entry are relative to its dir.
struct HandheldBundle {
    let root: URL
    let manifest: BundleManifest

    init(root: URL) throws {
        self.root = root
        let url = root.appendingPathComponent(BundleNames.manifest)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw BundleError.invalid("No \(BundleNames.manifest) in \(root.lastPathComponent): copy a bundle made by `handheld bundle --target ios`.")
        }
        manifest = try JSONDecoder().decode(BundleManifest.self, from: Data(contentsOf: url))
        guard manifest.bundleFormatVersion == BundleNames.formatVersion else {
            throw BundleError.invalid("Bundle format \(manifest.bundleFormatVersion), this app reads \(BundleNames.formatVersion): rebuild the bundle.")
        }
        guard manifest.target == BundleNames.target else {
            throw BundleError.invalid("This bundle targets \(manifest.target): rebuild with --target ios.")
        }
    }

    static func inDocuments() throws -> HandheldBundle {
        let docs = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
        return try HandheldBundle(root: docs.appendingPathComponent(BundleNames.folder))
    }

    func entry(kind: String, backend: String) -> ModelEntry? { manifest.models.first { $0.kind == kind && $0.backend == backend } }
    func entry(dir: String) -> ModelEntry? { manifest.models.first { $0.dir == dir } }
    func url(_ entry: ModelEntry, _ relative: String) -> URL { root.appendingPathComponent(entry.dir).appendingPathComponent(relative) }

    /// The app feeds tensors by position: refuse an artifact whose names moved.
    static func requireNames(_ what: String, _ specs: [IOSpec]?, _ expected: [String]) throws {
        let got = (specs ?? []).map(\.name)
        guard Array(got.prefix(expected.count)) == expected else {
            throw BundleError.invalid("\(what): expected tensors \(expected), the bundle has \(got). Re-export with this Handheld.")
        }
    }
}
