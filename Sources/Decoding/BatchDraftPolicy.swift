import Foundation

/// How many drafts each sequence of a batch may verify in a step, chosen from what forwards cost on
/// this machine and how often drafts have been accepted.
///
/// Alone, a sequence drafts as its drafter decides: a forward over a few rows costs little more than
/// one over a single row. In a batch the rows add up: once a forward is compute-bound, every draft row
/// costs its full share, and a draft that is accepted only sometimes buys fewer tokens than the same
/// time spent on the other sequences' plain rows. So with two sequences or more, each step gives its
/// greedy sequences the cap k (the same for all) that maximises expected tokens per unit of time:
///
///     n · (1 + A(k)) / (c(n · (1 + D(k))) + n · D(k) · draftCost)
///
/// where c is the measured cost of a forward over that many rows (`ForwardCosts`), A(k) the expected
/// accepted drafts and D(k) the expected drafted nodes of a round capped at k, both estimated from the
/// batch's recent rounds (a prior of 60% acceptance per depth until there are some). k = 0 decodes
/// every sequence plainly for the step. Drafting changes only speed, never the output.
public struct BatchDraftPolicy: Sendable {
    public let costs: ForwardCosts
    /// Largest cap considered.
    public let maxDraft: Int
    /// Per depth d (index d - 1): decayed counts of rounds that could reach it, that drafted it, and
    /// that accepted it.
    private var reachable: [Double]
    private var drafted: [Double]
    private var accepted: [Double]
    /// Weight of older rounds after each new one.
    private let decay = 0.995

    public init(costs: ForwardCosts, maxDraft: Int) {
        self.costs = costs
        self.maxDraft = maxDraft
        // The prior: four rounds' worth of drafts at every depth, 60% accepted at each.
        reachable = Array(repeating: 4, count: maxDraft)
        drafted = Array(repeating: 4, count: maxDraft)
        accepted = (0..<maxDraft).map { 4 * pow(0.6, Double($0 + 1)) }
    }

    /// The cap for a step decoding `sequences` sequences from contexts of about `context` positions
    /// (nil: no cap, for a sequence alone).
    public func cap(sequences n: Int, context: Int) -> Int? {
        guard n >= 2 else { return nil }
        var best = (k: 0, rate: 0.0)
        var acceptedDrafts = 0.0, draftedNodes = 0.0
        for k in 0...maxDraft {
            if k > 0 {
                acceptedDrafts += accepted[k - 1] / reachable[k - 1]
                draftedNodes += drafted[k - 1] / reachable[k - 1]
            }
            let rows = Int((Double(n) * (1 + draftedNodes)).rounded())
            let time = costs.rows(rows, context: context) + Double(n) * draftedNodes * costs.draftLevel
            let rate = Double(n) * (1 + acceptedDrafts) / time
            if rate > best.rate { best = (k, rate) }
        }
        return best.k
    }

    /// Learns from a round that was capped at `cap` drafts, drafted `nodes` and accepted `accepted`.
    public mutating func record(cap: Int, nodes: Int, accepted acceptedDrafts: Int) {
        for d in 0..<maxDraft {
            reachable[d] *= decay
            drafted[d] *= decay
            accepted[d] *= decay
            guard d < cap else { continue }
            reachable[d] += 1
            if nodes > d { drafted[d] += 1 }
            if acceptedDrafts > d { accepted[d] += 1 }
        }
    }
}
