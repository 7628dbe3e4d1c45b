package org.handheld.demo

import java.io.File
import org.json.JSONObject
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule

/**
 * ExecuTorch's LLM runner (the same C++ generation loop as llama_main) on the bundle's 4-bit
 * .pte: it feeds forward(tokens, input_pos) and reads the get_max_seq_len / eos metadata the
 * exporter writes into the program. Turns follow one another on the runner's KV cache, and the
 * conversation goes on past max_seq_len through [ChatWindow] (the manifest's `context` policy).
 */
class LlmChat(val spec: LlmSpec, temperature: Float = 0.0f) : AutoCloseable {
    private val module = LlmModule(spec.modelPath, spec.tokenizerPath, temperature)
    private val tokenizer = BpeTokenizer(File(spec.tokenizerPath))
    val window = ChatWindow(spec.maxSeqLen, spec.sinkTokens, spec.windowTokens) { tokenizer.encode(it).size }
    val loadMs: Long

    init {
        val start = System.currentTimeMillis()
        val status = module.load()
        if (status != 0) throw BundleException("ExecuTorch could not load ${spec.modelPath} (error $status)")
        loadMs = System.currentTimeMillis() - start
    }

    /**
     * Streams the reply to [onToken] (at most [maxTokens] tokens, and at most half the window);
     * returns ExecuTorch's stats (PyTorchObserver JSON). A message that cannot fit the window
     * with room for an answer is a [BundleException] and the conversation goes on.
     */
    fun reply(message: String, maxTokens: Int = DEFAULT_REPLY_TOKENS, onToken: (String) -> Unit): JSONObject {
        val replyTokens = minOf(maxTokens, spec.windowTokens / 2)
        val feed = window.next(message, spec.chatFormat, replyTokens)
        if (feed.reset) module.resetContext() // then refill from position 0 with the kept turns
        var stats = JSONObject()
        val reply = StringBuilder()
        val callback = object : LlmCallback {
            override fun onResult(result: String) {
                reply.append(result)
                onToken(result)
            }
            override fun onStats(result: String) { stats = JSONObject(result) }
        }
        // seqLen counts this call's prompt and answer (the runner adds its cache position)
        module.generate(feed.text, window.count(feed.text) + replyTokens, callback, false)
        val answer = reply.toString().removeSuffix(spec.chatFormat.endOfTurn.trim())
        window.record(feed, message, answer, if (stats.has("generated_tokens")) stats.getInt("generated_tokens") else 0)
        return stats
    }

    /** A new conversation: the cache and the kept turns are cleared. */
    fun newConversation() {
        module.resetContext()
        window.clear()
    }

    fun stop() = module.stop()

    override fun close() = module.resetNative()

    companion object {
        const val DEFAULT_REPLY_TOKENS = 256

        /**
         * The same metrics export/device/results.py derives from llama_main's stats line, so
         * phone and host numbers line up in `handheld report`.
         */
        fun metrics(stats: JSONObject): Map<String, Double> {
            val start = stats.getDouble("inference_start_ms")
            val promptEnd = stats.getDouble("prompt_eval_end_ms")
            val end = stats.getDouble("inference_end_ms")
            val decoded = maxOf(stats.getInt("generated_tokens") - 1, 1)
            return mapOf(
                "prefill_tok_s" to stats.getInt("prompt_tokens") / (promptEnd - start) * 1000,
                "decode_tok_s" to if (end > promptEnd) decoded / (end - promptEnd) * 1000 else 0.0,
                "time_to_first_token_ms" to stats.getDouble("first_token_ms") - start,
                "model_load_ms" to stats.getDouble("model_load_end_ms") - stats.getDouble("model_load_start_ms"),
            )
        }
    }
}
