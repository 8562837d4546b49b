import Foundation
import Llama
import Tensor

/// Decides which candidates a draft tree takes: a node whose path probability is p adds p tokens to
/// the round's expected yield (if the draft model is calibrated) and a row to its verification, so it
/// is worth its row while it raises the expected tokens per unit of cost, that is while
/// p ≥ expected × Δcost / cost. Levels of drafting add their own cost.
struct DraftTreePlan {
    let costs: ForwardCosts
    /// The context the round's rows attend to.
    let context: Int
    /// Tokens the round is expected to commit: the full model's own, plus each node's path probability.
    private(set) var expected: Double = 1
    private(set) var rows: Int
    private var levels = 0

    init(costs: ForwardCosts, context: Int, rows: Int) {
        self.costs = costs
        self.context = context
        self.rows = rows
    }

    var cost: Double { costs.rows(rows, context: context) + Double(levels) * costs.draftLevel }

    func isWorth(_ probability: Float) -> Bool {
        Double(probability) * cost >= expected * (costs.rows(rows + 1, context: context) - costs.rows(rows, context: context))
    }

    mutating func add(_ probability: Float) {
        expected += Double(probability)
        rows += 1
    }

    mutating func addLevel() { levels += 1 }
}

/// How often the tree's nodes were accepted against the path probability the draft model gave them,
/// by powers of two of that probability (1–½, ½–¼, …), recent nodes of the generation weighing most. The plan weighs a
/// node by what nodes like it delivered: a draft model sure of tokens the full model does not choose
/// (often so on text unlike its training data) then grows smaller trees. Only the tree's size
/// depends on it, decided before the round's draws, so outputs and distributions are unchanged.
struct TreeCalibration {
    private static let buckets = 8
    /// Pseudo-counts of nodes accepted as often as their probability said, before any are seen.
    private static let prior = 2.0
    /// Each record keeps this share of its bucket's history (about the last 100 nodes count).
    private static let memory = 0.99
    private var predicted = [Double](repeating: 0, count: buckets)
    private var accepted = [Double](repeating: 0, count: buckets)

    private static func bucket(_ probability: Float) -> Int {
        probability > 0 ? min(buckets - 1, Int(-log2(probability))) : buckets - 1
    }

    /// The chance that a node drafted with `probability` is accepted, by the record so far.
    func expected(_ probability: Float) -> Float {
        let b = Self.bucket(probability)
        return min(1, probability * Float((accepted[b] + Self.prior) / (predicted[b] + Self.prior)))
    }

    mutating func record(_ probability: Float, accepted wasAccepted: Bool) {
        let b = Self.bucket(probability)
        predicted[b] = predicted[b] * Self.memory + Double(probability)
        accepted[b] = accepted[b] * Self.memory + (wasAccepted ? 1 : 0)
    }
}

/// A token drawn under an expanded node of the draft tree, not yet in the round.
struct TreeCandidate {
    let token: Int32
    /// The expanded node it hangs under (nil: the pending token), and that node's index among the rows
    /// the draft model saw this round.
    let parent: Int?
    let parentSeen: Int
    /// The parent's path probability times this token's draft probability.
    let probability: Float
    /// Sampling: its place in the order its siblings were drawn, and the draft-head rows drawn before it
    /// (its distribution is the parent's without them).
    let order: Int
    let excluded: [Int]
}

/// An expanded node: its batch row, path probability, and its and its parent's index among the rows
/// the draft model saw (the pending token has no parent).
struct ExpandedNode {
    let node: Int?
    let row: Int
    let probability: Float
    let seen: Int
    let parentSeen: Int?
}

extension ExitLayerDrafter {
    /// Kangaroo with a draft tree: copies (when the text allows) form a branch under the pending token;
    /// then the draft model expands the pending token, and level by level the best candidates by path
    /// probability (those at η or above, `treeWidth` a level, while they pay for their rows) are added,
    /// run through the shallow layers together and expanded together; finally the best candidates left
    /// join as leaves while they pay. Every row of the round goes through the shallow layers once.
    func proposeTree(_ round: DraftRound, sampler: inout Sampler) throws {
        let sampling = !sampler.options.isGreedy, budget = min(roundTreeBudget, round.limit)
        seenRows.removeAll(keepingCapacity: true)
        var copies: [Int32] = []
        copyLookup?.appendChain(to: &copies, limit: budget)
        round.addCopies(copies, sampling: sampling)
        plannedProbabilities.removeAll(keepingCapacity: true)
        plannedProbabilities.append(contentsOf: repeatElement(nil, count: round.count))
        try round.runLayers(options.exitLayer)
        guard round.count < budget else { return }
        flushLagging(scratch: round.scratch)
        var plan = DraftTreePlan(costs: costs, context: round.position, rows: round.count + 1)
        var frontier = [ExpandedNode(node: nil, row: 0, probability: 1, seen: 0, parentSeen: nil)]
        try expand(frontier, parents: [nil], round: round, sampler: &sampler)
        plan.addLevel()
        var pool: [TreeCandidate] = []
        while !frontier.isEmpty {
            for (i, node) in frontier.enumerated() { pool += candidates(under: node, headRow: i, sampler: &sampler) }
            pool.sort { $0.probability > $1.probability }
            var next: [ExpandedNode] = []
            while let best = pool.first, next.count < options.treeWidth, round.count < budget,
                  best.probability >= roundThreshold, plan.isWorth(calibration.expected(best.probability)) {
                guard let node = add(best, to: round, pool: &pool, sampling: sampling) else { continue }
                plan.add(calibration.expected(best.probability))
                next.append(ExpandedNode(node: node, row: node + 1, probability: best.probability,
                                         seen: seenRows.count + next.count, parentSeen: best.parentSeen))
            }
            try round.runLayers(options.exitLayer)
            guard !next.isEmpty, round.count < budget else { break }
            try expand(next, parents: next.map(\.parentSeen), round: round, sampler: &sampler)
            plan.addLevel()
            frontier = next
        }
        // Leaves: the best candidates left, while they pay for their rows.
        pool.sort { $0.probability > $1.probability }
        while let best = pool.first, round.count < budget, plan.isWorth(calibration.expected(best.probability)) {
            if add(best, to: round, pool: &pool, sampling: sampling) != nil { plan.add(calibration.expected(best.probability)) }
        }
        try round.runLayers(options.exitLayer)
    }

    /// Runs the draft model over `nodes` (their rows already through the shallow layers): the head's
    /// logits row `i` is then `nodes[i]`'s; when sampling, its processed distribution is kept by seen index.
    private func expand(_ nodes: [ExpandedNode], parents: [Int?], round: DraftRound, sampler: inout Sampler) throws {
        let rows = nodes.map(\.row)
        draftModel.evaluateTree(round.states, rows: rows, parents: parents,
                                deepState: parents.first == .some(nil) && draftModel.takesDeepState ? deepState.pointer : nil,
                                scratch: round.scratch)
        round.draftSteps += 1
        seenRows += rows
        if !sampler.options.isGreedy {
            let head = draftModel.head
            for (i, node) in nodes.enumerated() {
                sampler.process(head.logits.row(i), count: head.rowCount, into: expandedProbabilities.row(node.seen))
            }
        }
    }

    /// Up to `treeWidth` children of an expanded node: greedy, its top tokens; sampling, tokens drawn
    /// from its draft distribution without replacement (each from what the earlier draws left).
    private func candidates(under node: ExpandedNode, headRow: Int, sampler: inout Sampler) -> [TreeCandidate] {
        let head = draftModel.head, width = options.treeWidth
        if sampler.options.isGreedy {
            return head.topDrafts(width, row: headRow).enumerated().map { order, draft in
                TreeCandidate(token: draft.token, parent: node.node, parentSeen: node.seen,
                              probability: node.probability * draft.probability, order: order, excluded: [])
            }
        }
        // Whether a drawn candidate is verified must not depend on what was drawn, or the candidates
        // verified would not follow their draft distributions: the tree is planned with the largest
        // probabilities of the distribution (the k-th draw's plan is the k-th largest), not the draws'.
        let q = expandedProbabilities.row(node.seen), remaining = drawBuffer.pointer, rows = head.rowCount
        var ranked: [Float] = []
        for r in 0..<rows where ranked.count < width || q[r] > ranked[ranked.count - 1] {
            ranked.insert(q[r], at: ranked.firstIndex { q[r] > $0 } ?? ranked.count)
            if ranked.count > width { ranked.removeLast() }
        }
        remaining.update(from: q, count: rows)
        var excluded: [Int] = [], left: Float = 1, result: [TreeCandidate] = []
        for order in 0..<ranked.count where left > 1e-6 && ranked[order] > 0 {
            let row = Int(sampler.draw(remaining, count: rows))
            result.append(TreeCandidate(token: head.tokenID(row: row), parent: node.node, parentSeen: node.seen,
                                        probability: node.probability * ranked[order], order: order, excluded: excluded))
            excluded.append(row)
            left -= q[row]
            remaining[row] = 0
        }
        return result
    }

    /// Takes `candidate` out of the pool, with the siblings drawn before it when sampling (they could no
    /// longer be verified in their order), and adds it to the round with its draft distribution; nil
    /// when greedy and its parent already has a child with its token (a copy).
    private func add(_ candidate: TreeCandidate, to round: DraftRound, pool: inout [TreeCandidate], sampling: Bool) -> Int? {
        pool.removeAll { $0.parentSeen == candidate.parentSeen && ($0.order == candidate.order || (sampling && $0.order < candidate.order)) }
        // Greedy, a token its parent already has (a copy) is not verified twice. (Sampling cannot skip
        // a draw for what it drew; the verifier rejects the duplicate.)
        if !sampling, round.parents.indices.contains(where: { round.parents[$0] == candidate.parent && round.tokens[$0] == candidate.token }) {
            return nil
        }
        let node = round.add(candidate.token, parent: candidate.parent)
        plannedProbabilities.append(candidate.probability)
        if sampling {
            let head = draftModel.head, q = expandedProbabilities.row(candidate.parentSeen)
            let dense = round.probabilities.row(node)
            dense.initialize(repeating: 0, count: round.probabilities.columns)
            var left: Float = 1
            for row in candidate.excluded { left -= q[row] }
            for row in 0..<head.rowCount { dense[Int(head.tokenID(row: row))] = q[row] / left }
            for row in candidate.excluded { dense[Int(head.tokenID(row: row))] = 0 }
        }
        return node
    }

    /// After a tree round: the draft model keeps the accepted path's rows it saw (a prefix of the path),
    /// and the rest of the path's exit states wait to be fed.
    func acceptTree(_ round: DraftRound, path: [Int]) {
        for (node, probability) in plannedProbabilities.enumerated() {
            if let probability { calibration.record(probability, accepted: path.contains(node)) }
        }
        plannedProbabilities.removeAll(keepingCapacity: true)
        guard draftModel.keepsCache else { return }
        let rows = [0] + path.map { $0 + 1 }
        var seen: [Int] = []
        for row in rows {
            guard let index = seenRows.firstIndex(of: row) else { break }
            seen.append(index)
        }
        if !seenRows.isEmpty { draftModel.keepPath(seen, base: round.position) }
        for row in rows[seen.count...] { lag(round.states, row: row, scratch: round.scratch) }
    }
}
