import Foundation

/// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2 style, as SmolLM2 and Qwen2 use), for
/// the video screen, which builds its prompt from token embeddings itself. This reads Hugging
/// Face's tokenizer.json format, not bundle.json (the contract test exempts this file).
final class BPETokenizer {
    private struct File: Decodable {
        struct Model: Decodable {
            let vocab: [String: Int]
            let merges: [Merge]
        }
        struct Added: Decodable {
            let id: Int
            let content: String
        }
        let model: Model
        let added_tokens: [Added]?
    }

    /// "a b" in older files, ["a", "b"] in newer ones.
    private struct Merge: Decodable {
        let pair: [String]
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { pair = s.split(separator: " ", maxSplits: 1).map(String.init) } else { pair = try c.decode([String].self) }
        }
    }

    private let vocab: [String: Int]
    private var inverse: [Int: String] = [:]
    private var ranks: [String: Int] = [:]  // "a\u{1}b" -> rank
    private let special: [String: Int]
    private let byteToChar: [UInt8: Character]
    private let charToByte: [Character: UInt8]
    private static let pretokenize = try! NSRegularExpression(pattern: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+")

    init(url: URL) throws {
        let file = try JSONDecoder().decode(File.self, from: Data(contentsOf: url))
        vocab = file.model.vocab
        for (i, m) in file.model.merges.enumerated() where m.pair.count == 2 { ranks[m.pair[0] + "\u{1}" + m.pair[1]] = i }
        special = Dictionary((file.added_tokens ?? []).map { ($0.content, $0.id) }, uniquingKeysWith: { a, _ in a })
        var map: [UInt8: Character] = [:]
        let printable = Array(33...126) + Array(161...172) + Array(174...255)
        for b in printable { map[UInt8(b)] = Character(UnicodeScalar(b)!) }
        var n = 0
        for b in 0...255 where map[UInt8(b)] == nil { map[UInt8(b)] = Character(UnicodeScalar(256 + n)!); n += 1 }
        byteToChar = map
        charToByte = Dictionary(uniqueKeysWithValues: map.map { ($1, $0) })
        for (t, id) in vocab { inverse[id] = t }
        for (t, id) in special { inverse[id] = t }
    }

    func encode(_ text: String) -> [Int] {
        var out: [Int] = []
        for (piece, isSpecial) in splitSpecial(text) {
            if isSpecial { out.append(special[piece]!); continue }
            let ns = piece as NSString
            for m in Self.pretokenize.matches(in: piece, range: NSRange(location: 0, length: ns.length)) {
                let word = ns.substring(with: m.range)
                let symbols = Array(word.utf8).map { String(byteToChar[$0]!) }
                out += bpe(symbols).compactMap { vocab[$0] }
            }
        }
        return out
    }

    func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard let t = inverse[id] else { continue }
            if special[t] != nil { bytes += Array(t.utf8); continue }
            for c in t { bytes.append(charToByte[c] ?? UInt8(ascii: "?")) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func bpe(_ symbols: [String]) -> [String] {
        var parts = symbols
        while parts.count > 1 {
            var best = -1, bestRank = Int.max
            for i in 0..<(parts.count - 1) {
                if let r = ranks[parts[i] + "\u{1}" + parts[i + 1]], r < bestRank { best = i; bestRank = r }
            }
            if best < 0 { break }
            parts.replaceSubrange(best...(best + 1), with: [parts[best] + parts[best + 1]])
        }
        return parts
    }

    private func splitSpecial(_ text: String) -> [(String, Bool)] {
        guard !special.isEmpty else { return [(text, false)] }
        let pattern = special.keys.sorted { $0.count > $1.count }.map(NSRegularExpression.escapedPattern(for:)).joined(separator: "|")
        let regex = try! NSRegularExpression(pattern: pattern)
        let ns = text as NSString
        var out: [(String, Bool)] = [], last = 0
        for m in regex.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
            if m.range.location > last { out.append((ns.substring(with: NSRange(location: last, length: m.range.location - last)), false)) }
            out.append((ns.substring(with: m.range), true))
            last = m.range.location + m.range.length
        }
        if last < ns.length { out.append((ns.substring(from: last), false)) }
        return out
    }
}
