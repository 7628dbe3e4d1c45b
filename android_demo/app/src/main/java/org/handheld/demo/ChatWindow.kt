package org.handheld.demo

/**
 * A conversation on one KV cache that goes on past the context: the app's side of the manifest's
 * `context` policy (sink_tokens, window_tokens, on_overflow "recompute"), as runtime/context.py
 * applies it on the host.
 *
 * ExecuTorch's runner keeps its cache position from one generate() to the next, so each turn
 * feeds only its own text: the previous answer's end-of-turn marker (the runner stops on it
 * without feeding it) and the new user turn. When that turn and the room for its answer would
 * pass max_seq_len, the cache is reset and refilled from position 0 with the newest whole turns
 * whose tokens fit in window_tokens, then the new turn: the recompute form of the sliding
 * window. The host keeps the first sink_tokens token ids as well; through the runner's text API
 * the app keeps whole turns only (a few tokens of a first turn would be a broken turn), so
 * sink_tokens is read and reported, and the window is what is kept. Tokens are counted with the
 * bundle's own tokenizer.
 */
class ChatWindow(
    private val maxSeqLen: Int,
    val sinkTokens: Int,
    private val windowTokens: Int,
    val count: (String) -> Int,
) {
    /** What to feed next; [reset] says the cache must be cleared first. */
    data class Feed(val text: String, val reset: Boolean, val keptTurns: Int)

    private data class Turn(val user: String, val reply: String)

    private val turns = mutableListOf<Turn>() // every finished turn, oldest first
    private var inCache = 0 // how many of the newest turns the cache holds
    var used = 0 // positions of the cache in use
        private set
    var evictions = 0
        private set

    /** The text for [message] leaving [replyTokens] positions for the answer. */
    fun next(message: String, format: ChatFormat, replyTokens: Int): Feed {
        val prompt = format.prompt(message)
        val own = count(prompt)
        if (own + replyTokens > windowTokens) {
            throw BundleException(
                "This message needs $own tokens plus $replyTokens for the answer; the model keeps $windowTokens. " +
                    "Send a shorter message.",
            )
        }
        val turnText = (if (inCache > 0) format.endOfTurn else "") + prompt
        if (used + count(turnText) + replyTokens <= maxSeqLen) return Feed(turnText, reset = false, keptTurns = inCache)
        // recompute: the newest whole turns that fit in the window beside the new one
        var budget = windowTokens - own - replyTokens
        var kept = 0
        for (turn in turns.asReversed()) {
            val cost = count(render(turn, format))
            if (cost > budget) break
            budget -= cost
            kept += 1
        }
        val history = turns.takeLast(kept).joinToString("") { render(it, format) }
        evictions += 1
        return Feed(history + prompt, reset = true, keptTurns = kept)
    }

    /** After the runner answered [feed] with [reply] ([generated] tokens). */
    fun record(feed: Feed, message: String, reply: String, generated: Int) {
        used = (if (feed.reset) 0 else used) + count(feed.text) + generated
        turns += Turn(message, reply)
        inCache = feed.keptTurns + 1
    }

    fun clear() {
        turns.clear()
        inCache = 0
        used = 0
    }

    private fun render(turn: Turn, format: ChatFormat): String = format.prompt(turn.user) + turn.reply + format.endOfTurn
}
