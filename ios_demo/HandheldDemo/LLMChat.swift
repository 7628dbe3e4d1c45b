import ExecuTorchLLM
import Foundation

/// The 4-bit LLM through ExecuTorch's Swift LLM runner (TextRunner, the C++ generation loop of
/// llama_main), reading the bundle's .pte and tokenizer.json. Turns follow one another on the
/// runner's KV cache, and the conversation goes on past max_seq_len through ChatWindow (the
/// manifest's `context` policy).
final class LLMChat {
    let entry: ModelEntry
    let format: ChatFormat
    private let runner: TextRunner
    private let tokenizer: BPETokenizer  // counts prompt tokens for the prefill rate
    let maxSeqLen: Int
    let window: ChatWindow
    static let defaultReplyTokens = 256
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
        let counter = tokenizer
        // bundles from before the context policy existed: the host's defaults
        window = ChatWindow(
            maxSeqLen: maxLen, sinkTokens: entry.context?.sinkTokens ?? 4,
            windowTokens: entry.context?.windowTokens ?? maxLen / 2, count: { counter.encode($0).count })
        runner = TextRunner(modelPath: bundle.url(entry, file).path, tokenizerPath: bundle.url(entry, tok.file).path)
        let start = Date()
        try runner.load()
        loadMs = Date().timeIntervalSince(start) * 1000
    }

    /// Streams the reply; returns the same metrics export/device/results.py derives on other devices.
    @discardableResult
    /// At most `maxTokens` answer tokens, and at most half the window; a message that cannot fit
    /// the window with room for an answer throws and the conversation goes on.
    func reply(_ message: String, maxTokens: Int? = nil, onToken: @escaping (String) -> Void) throws -> [String: Double] {
        let replyTokens = min(maxTokens ?? Self.defaultReplyTokens, window.windowTokens / 2)
        let feed = try window.next(message, format: format, replyTokens: replyTokens)
        if feed.reset { runner.reset() }  // then refill from position 0 with the kept turns
        let promptTokens = window.count(feed.text)
        let start = Date()
        var first: Date?
        var generated = 0
        var answer = ""
        // sequenceLength counts this call's prompt and answer (the runner adds its cache position)
        try runner.generate(feed.text, Config { $0.sequenceLength = promptTokens + replyTokens }) { token in
            if first == nil { first = Date() }
            generated += 1
            answer += token
            onToken(token)
        }
        let closing = format.endOfTurn.trimmingCharacters(in: .whitespacesAndNewlines)
        if !closing.isEmpty, answer.hasSuffix(closing) { answer.removeLast(closing.count) }
        window.record(feed, message: message, reply: answer, generated: generated)
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

    /// A new conversation: the cache and the kept turns are cleared.
    func newConversation() {
        runner.reset()
        window.clear()
    }

    func stop() { runner.stop() }
}
