import Foundation

/// A conversation on one KV cache that goes on past the context: the app's side of the manifest's
/// `context` policy (sink_tokens, window_tokens, on_overflow "recompute"), as runtime/context.py
/// applies it on the host.
///
/// ExecuTorch's runner keeps its cache position from one generate() to the next, so each turn
/// feeds only its own text: the previous answer's end-of-turn marker (the runner stops on it
/// without feeding it) and the new user turn. When that turn and the room for its answer would
/// pass max_seq_len, the cache is reset and refilled from position 0 with the newest whole turns
/// whose tokens fit in window_tokens, then the new turn: the recompute form of the sliding window.
/// The host keeps the first sink_tokens token ids as well; through the runner's text API the app
/// keeps whole turns only, so sink_tokens is read and reported, and the window is what is kept.
/// Tokens are counted with the bundle's own tokenizer.
final class ChatWindow {
    struct Feed {
        let text: String
        let reset: Bool
        let keptTurns: Int
    }

    private struct Turn {
        let user: String
        let reply: String
    }

    let maxSeqLen: Int
    let sinkTokens: Int
    let windowTokens: Int
    let count: (String) -> Int
    private var turns: [Turn] = []  // every finished turn, oldest first
    private var inCache = 0  // how many of the newest turns the cache holds
    private(set) var used = 0  // positions of the cache in use
    private(set) var evictions = 0

    init(maxSeqLen: Int, sinkTokens: Int, windowTokens: Int, count: @escaping (String) -> Int) {
        self.maxSeqLen = maxSeqLen
        self.sinkTokens = sinkTokens
        self.windowTokens = windowTokens
        self.count = count
    }

    /// The text for `message` leaving `replyTokens` positions for the answer.
    func next(_ message: String, format: ChatFormat, replyTokens: Int) throws -> Feed {
        let prompt = format.prompt(message)
        let own = count(prompt)
        if own + replyTokens > windowTokens {
            throw BundleError.invalid("This message needs \(own) tokens plus \(replyTokens) for the answer; the model keeps \(windowTokens). Send a shorter message.")
        }
        let turnText = (inCache > 0 ? format.endOfTurn : "") + prompt
        if used + count(turnText) + replyTokens <= maxSeqLen {
            return Feed(text: turnText, reset: false, keptTurns: inCache)
        }
        // recompute: the newest whole turns that fit in the window beside the new one
        var budget = windowTokens - own - replyTokens
        var kept = 0
        for turn in turns.reversed() {
            let cost = count(render(turn, format))
            if cost > budget { break }
            budget -= cost
            kept += 1
        }
        let history = turns.suffix(kept).map { render($0, format) }.joined()
        evictions += 1
        return Feed(text: history + prompt, reset: true, keptTurns: kept)
    }

    /// After the runner answered `feed` with `reply` (`generated` tokens).
    func record(_ feed: Feed, message: String, reply: String, generated: Int) {
        used = (feed.reset ? 0 : used) + count(feed.text) + generated
        turns.append(Turn(user: message, reply: reply))
        inCache = feed.keptTurns + 1
    }

    func clear() {
        turns.removeAll()
        inCache = 0
        used = 0
    }

    private func render(_ turn: Turn, _ format: ChatFormat) -> String {
        format.prompt(turn.user) + turn.reply + format.endOfTurn
    }
}
