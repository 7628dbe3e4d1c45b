import ExecuTorchLLM
import Foundation

/// The 4-bit LLM through ExecuTorch's Swift LLM runner (TextRunner, the C++ generation loop of
/// llama_main), reading the bundle's .pte and tokenizer.json.
final class LLMChat {
    let entry: ModelEntry
    let format: ChatFormat
    private let runner: TextRunner
    private let tokenizer: BPETokenizer  // counts prompt tokens for the prefill rate
    let maxSeqLen: Int
    private(set) var loadMs: Double = 0

    init(bundle: HandheldBundle, entry: ModelEntry) throws {
        guard let file = entry.modelFile, let tok = entry.tokenizer, let maxLen = entry.maxSeqLen else {
            throw BundleError.invalid("The LLM entry lacks model_file/tokenizer/max_seq_len.")
        }
        try HandheldBundle.requireNames("LLM inputs", entry.inputs, BundleNames.llmInputs)
        try HandheldBundle.requireNames("LLM outputs", entry.outputs, BundleNames.llmOutputs)
        self.entry = entry
        format = ChatFormat(template: tok.chatTemplate)
        maxSeqLen = maxLen
        tokenizer = try BPETokenizer(url: bundle.url(entry, tok.file))
        runner = TextRunner(modelPath: bundle.url(entry, file).path, tokenizerPath: bundle.url(entry, tok.file).path)
        let start = Date()
        try runner.load()
        loadMs = Date().timeIntervalSince(start) * 1000
    }

    /// Streams the reply; returns the same metrics export/device/results.py derives on other devices.
    @discardableResult
    func reply(_ message: String, maxTokens: Int? = nil, onToken: @escaping (String) -> Void) throws -> [String: Double] {
        let prompt = format.prompt(message)
        let promptTokens = tokenizer.encode(prompt).count
        let start = Date()
        var first: Date?
        var generated = 0
        try runner.generate(prompt, Config { $0.sequenceLength = min(maxTokens ?? maxSeqLen, maxSeqLen) }) { token in
            if first == nil { first = Date() }
            generated += 1
            onToken(token)
        }
        let end = Date()
        let prefill = (first ?? end).timeIntervalSince(start)
        let decode = end.timeIntervalSince(first ?? end)
        return [
            "prefill_tok_s": prefill > 0 ? Double(promptTokens) / prefill : 0,
            "decode_tok_s": decode > 0 ? Double(max(generated - 1, 1)) / decode : 0,
            "time_to_first_token_ms": prefill * 1000,
            "model_load_ms": loadMs,
        ]
    }

    func stop() { runner.stop() }
}
