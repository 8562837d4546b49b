/// What a speculative decoder did during one generation.
public struct SpeculativeStatistics: Sendable, Equatable, Codable {
    /// `acceptedDrafts[a]` counts rounds in which `a` drafts were accepted (0 up to the most accepted).
    public var acceptedDrafts: [Int]
    /// Drafts proposed in all (draft-head evaluations).
    public var draftSteps = 0
    /// Draft nodes verified in all (a chain's drafts, a tree's nodes).
    public var draftedNodes = 0
    /// Drafts that were copies (`SpeculativeOptions.copyNgram`) rather than the drafter's.
    public var copiedDrafts = 0
    public var draftSeconds = 0.0
    public var verifySeconds = 0.0

    public init() {
        acceptedDrafts = [0]
    }

    public var rounds: Int { acceptedDrafts.reduce(0, +) }

    /// Mean tokens committed per round, counting the full model's own token (as Spec-Bench does).
    public var meanAcceptedTokens: Double {
        rounds == 0 ? 0 : Double(acceptedDrafts.enumerated().reduce(0) { $0 + ($1.offset + 1) * $1.element }) / Double(rounds)
    }

    /// Histogram of tokens committed per round: index `n` counts rounds that committed `n` tokens.
    public var acceptedLengthHistogram: [Int] { [0] + acceptedDrafts }

    /// CTAR(w): the share of rounds that committed more than `w` tokens, for w = 1 up to the most accepted.
    public var ctar: [Double] {
        guard rounds > 0 else { return [] }
        return (1..<acceptedDrafts.count).map { w in
            Double(acceptedDrafts.enumerated().filter { $0.offset + 1 > w }.reduce(0) { $0 + $1.element }) / Double(rounds)
        }
    }

    /// Counts a round that accepted `accepted` drafts (the histogram grows to the longest).
    mutating func record(accepted: Int) {
        if accepted >= acceptedDrafts.count { acceptedDrafts += Array(repeating: 0, count: accepted + 1 - acceptedDrafts.count) }
        acceptedDrafts[accepted] += 1
    }
}
