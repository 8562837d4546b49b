/// Copy drafts (prompt lookup; not in the Kangaroo paper): when the last `n` tokens of the text so far
/// also occur earlier in it, the tokens that followed that occurrence are likely next tokens.
/// Translations, summaries and answers from a document copy long spans of their prompt, which the
/// adapter's single attention layer rarely drafts.
///
/// The text is the prompt and every committed token (`history`) followed by the round's drafts. Of
/// several occurrences, the one whose match reaches furthest back (up to `measuredBefore` tokens) is
/// copied, the latest among equals: on the Spec-Bench outputs of `appendChain`, its copies are right
/// more often than the latest occurrence's (3.6% more tokens per unit of verification cost, with the
/// measured costs of a forward over 1…4 tokens).
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

    /// Matches are measured up to this many tokens before the n-gram, to choose an occurrence and the
    /// length of its chain.
    static let measuredBefore = 16

    /// The token that followed the chosen earlier occurrence of the last `n` tokens of history + `drafts`,
    /// or nil if they do not occur earlier (or the text is shorter than n + 1 tokens).
    public func proposal(after drafts: [Int32]) -> Int32? {
        match(after: drafts).map { token($0.start + n, drafts) }
    }

    /// Appends to `drafts` (the round's drafts so far) a copy chain of at most `limit` tokens in all:
    /// the tokens that followed the chosen occurrence. The chain is as long as the number of tokens
    /// before the n-gram that match too, and at least one: a copy whose match is longer is right far
    /// more often, and a long chain that fails costs a multi-token verification for nothing. The
    /// chain stays within the limit even for long matches, since wider verifications cost what the
    /// extra tokens save (docs/measurements.md).
    public func appendChain(to drafts: inout [Int32], limit: Int) {
        guard drafts.count < limit, let found = match(after: drafts) else { return }
        let length = min(limit - drafts.count, max(1, found.length - n))
        // Read from the text as it grows: the copied passage may run into the copy (a repeating run).
        for i in 0..<length { drafts.append(token(found.start + n + i, drafts)) }
    }

    private func token(_ i: Int, _ drafts: [Int32]) -> Int32 { i < history.count ? history[i] : drafts[i - history.count] }

    /// The chosen earlier occurrence of the last `n` tokens (its start) and the length of the match
    /// there: n plus the tokens before it that match too (up to `measuredBefore` of them).
    private func match(after drafts: [Int32]) -> (start: Int, length: Int)? {
        let count = history.count + drafts.count
        guard count > n else { return nil }
        // The last n tokens start at count − n; an earlier occurrence starting at s ≤ count − n − 1 has a
        // following token, s + n.
        var best: (start: Int, length: Int)?
        var start = count - n - 1
        while start >= 0 {
            var k = 0
            while k < n, token(start + k, drafts) == token(count - n + k, drafts) { k += 1 }
            if k == n {
                var length = n
                while length < n + Self.measuredBefore, start + n - length - 1 >= 0,
                      token(start + n - length - 1, drafts) == token(count - length - 1, drafts) { length += 1 }
                if length > (best?.length ?? 0) { best = (start, length) }
                if length == n + Self.measuredBefore { break }
            }
            start -= 1
        }
        return best
    }
}
