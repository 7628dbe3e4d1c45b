package org.handheld.demo

import org.json.JSONObject
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule

/**
 * ExecuTorch's LLM runner (the same C++ generation loop as llama_main) on the bundle's 4-bit
 * .pte: it feeds forward(tokens, input_pos) and reads the get_max_seq_len / eos metadata the
 * exporter writes into the program.
 */
class LlmChat(val spec: LlmSpec, temperature: Float = 0.0f) : AutoCloseable {
    private val module = LlmModule(spec.modelPath, spec.tokenizerPath, temperature)
    val loadMs: Long

    init {
        val start = System.currentTimeMillis()
        val status = module.load()
        if (status != 0) throw BundleException("ExecuTorch could not load ${spec.modelPath} (error $status)")
        loadMs = System.currentTimeMillis() - start
    }

    /** Streams the reply to [onToken]; returns ExecuTorch's stats (PyTorchObserver JSON). */
    fun reply(message: String, maxTokens: Int = spec.maxSeqLen, onToken: (String) -> Unit): JSONObject {
        var stats = JSONObject()
        val callback = object : LlmCallback {
            override fun onResult(result: String) = onToken(result)
            override fun onStats(result: String) { stats = JSONObject(result) }
        }
        module.generate(spec.chatFormat.prompt(message), minOf(maxTokens, spec.maxSeqLen), callback, false)
        return stats
    }

    fun stop() = module.stop()

    override fun close() = module.resetNative()

    companion object {
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
