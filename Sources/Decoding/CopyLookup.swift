/// Copy drafts (prompt lookup; not in the Kangaroo paper): when the last `n` tokens of the text so far
/// also occur earlier in it, the token that followed their latest earlier occurrence is a likely next
/// token. Translations, summaries and answers from a document copy long spans of their prompt, which
/// the adapter's single attention layer rarely drafts.
///
/// The text is the prompt and every committed token (`history`) followed by the round's drafts.
public struct CopyLookup: Sendable {
    /// Length of the n-gram that must match (≥ 1).
    public let n: Int
    public private(set) var history: [Int32] = []

    public init(n: Int) {
        precondition(n >= 1, "the n-gram must hold at least one token")
        self.n = n
    }

    public mutating func reset(to prompt: [Int32], capacity: Int) {
        history.removeAll(keepingCapacity: true)
        history.reserveCapacity(capacity)
        history.append(contentsOf: prompt)
    }

    public mutating func commit(_ tokens: some Sequence<Int32>) { history.append(contentsOf: tokens) }

    /// The token that followed the latest earlier occurrence of the last `n` tokens of history + `drafts`,
    /// or nil if they do not occur earlier (or the text is shorter than n + 1 tokens).
    public func proposal(after drafts: [Int32]) -> Int32? {
        let count = history.count + drafts.count
        guard count > n else { return nil }
        func token(_ i: Int) -> Int32 { i < history.count ? history[i] : drafts[i - history.count] }
        // The last n tokens start at count − n; an earlier occurrence starting at s ≤ count − n − 1 has a
        // following token, s + n.
        var start = count - n - 1
        while start >= 0 {
            var k = 0
            while k < n, token(start + k) == token(count - n + k) { k += 1 }
            if k == n { return token(start + n) }
            start -= 1
        }
        return nil
    }
}
