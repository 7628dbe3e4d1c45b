package org.handheld.demo

import org.json.JSONObject
import java.io.File

/**
 * Byte-level BPE from a Hugging Face tokenizer.json (GPT-2 style, as SmolLM2 and Qwen2 use), for
 * the LongVU screen, which assembles its prompt from token embeddings itself. The chat screen
 * leaves tokenization to ExecuTorch's LlmModule.
 *
 * This file reads the tokenizer.json format, not bundle.json: its string keys are Hugging Face's
 * (tests/test_app_contract.py exempts it from the manifest-key check for that reason).
 */
class BpeTokenizer(file: File) {
    private val vocab = HashMap<String, Int>()
    private val inverse = HashMap<Int, String>()
    private val ranks = HashMap<Pair<String, String>, Int>()
    private val special = HashMap<String, Int>()
    private val byteToChar = bytesToUnicode()
    private val charToByte = byteToChar.entries.associate { (b, c) -> c to b }

    init {
        val json = JSONObject(file.readText())
        val model = json.getJSONObject("model")
        val v = model.getJSONObject("vocab")
        for (token in v.keys()) vocab[token] = v.getInt(token)
        val merges = model.getJSONArray("merges")
        for (i in 0 until merges.length()) {
            // older files store "a b", newer ones ["a", "b"]
            val pair = merges.optJSONArray(i)?.let { it.getString(0) to it.getString(1) }
                ?: merges.getString(i).split(" ", limit = 2).let { it[0] to it[1] }
            ranks[pair] = i
        }
        val added = json.optJSONArray("added_tokens")
        if (added != null) for (i in 0 until added.length()) {
            val t = added.getJSONObject(i)
            special[t.getString("content")] = t.getInt("id")
        }
        for ((token, id) in vocab) inverse[id] = token
        for ((token, id) in special) inverse[id] = token
    }

    fun encode(text: String): List<Int> {
        val out = ArrayList<Int>()
        for ((piece, isSpecial) in splitSpecial(text)) {
            if (isSpecial) { out.add(special.getValue(piece)); continue }
            for (word in PRETOKENIZE.findAll(piece)) {
                val chars = word.value.toByteArray(Charsets.UTF_8).map { byteToChar.getValue(it.toInt() and 0xff).toString() }
                for (token in bpe(chars)) out.add(vocab[token] ?: throw IllegalStateException("token $token not in vocab"))
            }
        }
        return out
    }

    fun decode(ids: List<Int>): String {
        val bytes = ArrayList<Byte>()
        for (id in ids) {
            val token = inverse[id] ?: continue
            if (token in special) { bytes.addAll(token.toByteArray(Charsets.UTF_8).toList()); continue }
            for (c in token) bytes.add((charToByte[c] ?: c.code).toByte())
        }
        return String(bytes.toByteArray(), Charsets.UTF_8)
    }

    private fun bpe(symbols: List<String>): List<String> {
        var parts = symbols
        while (parts.size > 1) {
            var best = -1
            var bestRank = Int.MAX_VALUE
            for (i in 0 until parts.size - 1) {
                val rank = ranks[parts[i] to parts[i + 1]] ?: continue
                if (rank < bestRank) { bestRank = rank; best = i }
            }
            if (best < 0) break
            parts = parts.subList(0, best) + (parts[best] + parts[best + 1]) + parts.subList(best + 2, parts.size)
        }
        return parts
    }

    private fun splitSpecial(text: String): List<Pair<String, Boolean>> {
        if (special.isEmpty()) return listOf(text to false)
        val pattern = Regex(special.keys.sortedByDescending { it.length }.joinToString("|") { Regex.escape(it) })
        val out = ArrayList<Pair<String, Boolean>>()
        var last = 0
        for (m in pattern.findAll(text)) {
            if (m.range.first > last) out.add(text.substring(last, m.range.first) to false)
            out.add(m.value to true)
            last = m.range.last + 1
        }
        if (last < text.length) out.add(text.substring(last) to false)
        return out
    }

    companion object {
        // GPT-2's pre-tokenizer split (contractions, letters, digits, punctuation, spaces)
        private val PRETOKENIZE = Regex("""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

        /** GPT-2's reversible byte -> printable character map. */
        private fun bytesToUnicode(): Map<Int, Char> {
            val printable = (33..126) + (161..172) + (174..255)
            val map = LinkedHashMap<Int, Char>()
            for (b in printable) map[b] = b.toChar()
            var n = 0
            for (b in 0..255) if (b !in map) { map[b] = (256 + n).toChar(); n++ }
            return map
        }
    }
}
