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
    public func proposal(after drafts: [Int32]) -> Int32? { match(after: drafts, measuringUpTo: n)?.token }

    /// Appends to `drafts` (the round's drafts so far) a copy chain of at most `limit` tokens in all,
    /// each the proposal after the ones before it. The chain is as long as the number of tokens before
    /// the n-gram that match too, and at least one. Measured on Spec-Bench outputs (24 first turns,
    /// n = 2): a copy whose match is just the bigram is right 46% of the time and gets 0.9 tokens of a
    /// 3-token chain accepted; one with 6 or more matched tokens is right 81–90% and gets 2.2. A long
    /// chain that fails costs a multi-token verification for nothing, so short matches copy one token.
    public func appendChain(to drafts: inout [Int32], limit: Int) {
        guard drafts.count < limit, let first = match(after: drafts, measuringUpTo: n + limit) else { return }
        let end = min(limit, drafts.count + max(1, first.length - n))
        drafts.append(first.token)
        while drafts.count < end, let next = proposal(after: drafts) { drafts.append(next) }
    }

    /// The latest earlier occurrence of the last `n` tokens: the token that followed it and the length
    /// of the match there (n plus the tokens before it that match too, counted up to `limit`).
    private func match(after drafts: [Int32], measuringUpTo limit: Int) -> (token: Int32, length: Int)? {
        let count = history.count + drafts.count
        guard count > n else { return nil }
        func token(_ i: Int) -> Int32 { i < history.count ? history[i] : drafts[i - history.count] }
        // The last n tokens start at count − n; an earlier occurrence starting at s ≤ count − n − 1 has a
        // following token, s + n.
        var start = count - n - 1
        while start >= 0 {
            var k = 0
            while k < n, token(start + k) == token(count - n + k) { k += 1 }
            if k == n {
                var length = n
                while length < limit, start + n - length - 1 >= 0,
                      token(start + n - length - 1) == token(count - length - 1) { length += 1 }
                return (token(start + n), length)
            }
            start -= 1
        }
        return nil
    }
}
