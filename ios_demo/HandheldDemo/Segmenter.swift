import CoreML
import Foundation

/// SqueezeSAM on CoreML: image [1,3,S,S] + clicks [1,C,S,S] -> mask_logits [1,1,S,S]. Early
/// fusion re-runs the whole network per click (no cached image embedding).
final class Segmenter {
    let entry: ModelEntry
    let preprocessing: SamPreprocessing
    let clicks: ClickEncoding
    let threshold: Float
    private let model: MLModel

    init(bundle: HandheldBundle, entry: ModelEntry) throws {
        guard let prep = entry.preprocessing, let enc = entry.clicks, let thr = entry.maskThreshold, let file = entry.modelFile else {
            throw BundleError.invalid("The segmenter entry lacks preprocessing/clicks/mask_threshold/model_file.")
        }
        guard enc.encoding == "gaussian", prep.resize == "longest_side", prep.pad == "bottom_right" else {
            throw BundleError.invalid("Preprocessing \(prep.resize)/\(prep.pad), clicks \(enc.encoding): not what this app reproduces.")
        }
        try HandheldBundle.requireNames("segmenter inputs", entry.inputs, BundleNames.samInputs)
        try HandheldBundle.requireNames("segmenter outputs", entry.outputs, BundleNames.samOutputs)
        self.entry = entry
        preprocessing = prep
        clicks = enc
        threshold = thr
        let compiled = try MLModel.compileModel(at: bundle.url(entry, file))  // .mlpackage -> .mlmodelc
        let config = MLModelConfiguration()
        config.computeUnits = .all
        model = try MLModel(contentsOf: compiled, configuration: config)
    }

    private static func array(_ values: [Float], _ shape: [Int]) throws -> MLMultiArray {
        let a = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
        values.withUnsafeBufferPointer { src in
            a.dataPointer.assumingMemoryBound(to: Float.self).update(from: src.baseAddress!, count: values.count)
        }
        return a
    }

    /// Mask logits [S*S] for the clicks so far (none = auto mode: the salient object).
    func segment(_ image: PreparedImage, _ clickList: [Click], previous: [Float]?) throws -> [Float] {
        let s = image.size
        let prevBinary = previous.map { $0.map { $0 > threshold ? Float(1) : Float(0) } }
        let maps = ImagePrep.clickMaps(clickList, image, clicks, previousMask: prevBinary)
        let names = BundleNames.samInputs
        let inputs = try MLDictionaryFeatureProvider(dictionary: [
            names[0]: MLFeatureValue(multiArray: try Self.array(image.chw, [1, 3, s, s])),
            names[1]: MLFeatureValue(multiArray: try Self.array(maps, [1, maps.count / (s * s), s, s])),
        ])
        let out = try model.prediction(from: inputs)
        guard let logits = out.featureValue(for: BundleNames.samOutputs[0])?.multiArrayValue else {
            throw BundleError.invalid("The segmenter returned no \(BundleNames.samOutputs[0]).")
        }
        let p = logits.dataPointer.assumingMemoryBound(to: Float.self)
        return Array(UnsafeBufferPointer(start: p, count: s * s))
    }

    /// Auto mode: empty clicks, then a first positive click on the mask's peak.
    func auto(_ image: PreparedImage) throws -> ([Float], [Click]) {
        let first = try segment(image, [], previous: nil)
        let best = first.indices.max { first[$0] < first[$1] } ?? 0
        let s = image.size
        let click = Click(x: (Float(best % s) + 0.5) / image.scale, y: (Float(best / s) + 0.5) / image.scale, positive: true)
        return (try segment(image, [click], previous: first), [click])
    }
}
