package org.handheld.demo

/**
 * Turns one user message into the prompt the instruct model was trained on.
 *
 * The manifest records the checkpoint's Jinja chat template. Rather than ship a Jinja engine,
 * the app recognises the template families Handheld exports (ChatML for SmolLM2/Qwen2, Llama 3
 * headers) from their markers and formats each turn the same way (ChatWindow strings turns
 * together); an unknown template falls back to the raw message (and says so in the UI).
 */
enum class ChatFormat(val known: Boolean) {
    CHATML(true) {
        override fun prompt(user: String) = "<|im_start|>user\n$user<|im_end|>\n<|im_start|>assistant\n"
        override val endOfTurn = "<|im_end|>\n"
    },
    LLAMA3(true) {
        override fun prompt(user: String) =
            "<|start_header_id|>user<|end_header_id|>\n\n$user<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        override val endOfTurn = "<|eot_id|>"
    },
    RAW(false) {
        override fun prompt(user: String) = user
        override val endOfTurn = "\n"
    };

    abstract fun prompt(user: String): String

    /** What closes an answer in the template: the runner stops on it without feeding it. */
    abstract val endOfTurn: String

    companion object {
        fun fromTemplate(template: String?): ChatFormat = when {
            template == null -> RAW
            "<|im_start|>" in template -> CHATML
            "<|start_header_id|>" in template -> LLAMA3
            else -> RAW
        }
    }
}
