import Foundation

/// One user message -> the prompt the instruct model was trained on. The manifest records the
/// Jinja chat template; the app recognises the families Handheld exports by their markers
/// (ChatML for SmolLM2/Qwen2, Llama 3 headers) instead of shipping a Jinja engine; ChatWindow
/// strings the turns together.
enum ChatFormat {
    case chatML, llama3, raw

    init(template: String?) {
        guard let t = template else { self = .raw; return }
        if t.contains("<|im_start|>") { self = .chatML }
        else if t.contains("<|start_header_id|>") { self = .llama3 }
        else { self = .raw }
    }

    var known: Bool { if case .raw = self { return false }; return true }

    /// What closes an answer in the template: the runner stops on it without feeding it.
    var endOfTurn: String {
        switch self {
        case .chatML: return "<|im_end|>\n"
        case .llama3: return "<|eot_id|>"
        case .raw: return "\n"
        }
    }

    func prompt(_ user: String) -> String {
        switch self {
        case .chatML: return "<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
        case .llama3: return "<|start_header_id|>user<|end_header_id|>\n\n\(user)<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        case .raw: return user
        }
    }
}
