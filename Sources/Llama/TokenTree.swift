/// The shape of one sequence's rows in a forward batch: each row's parent row, or none when the row
/// directly follows the sequence's committed positions. A row sees the committed positions, its
/// ancestors and itself, and takes the position after its parent's (the committed length plus its
/// depth), so it gets exactly the bits a linear forward along its own path gives.
///
/// Parents come before their children, so rows are in an order a forward can process and a row's
/// ancestors have smaller indices than it. A chain (each row the parent of the next) is the plain
/// causal case.
public struct TokenTree: Sendable, Equatable {
    /// `parents[i]`: the parent row of row `i`, or nil for a root.
    public let parents: [Int?]
    /// Ancestors of each row from its root down, itself excluded: row `i`'s depth is its count.
    public let ancestors: [[Int]]
    public let isChain: Bool

    public var count: Int { parents.count }

    /// Fails when a parent does not come before its child.
    public init?(parents: [Int?]) {
        var ancestors: [[Int]] = []
        ancestors.reserveCapacity(parents.count)
        for (row, parent) in parents.enumerated() {
            guard let parent else {
                ancestors.append([])
                continue
            }
            guard (0..<row).contains(parent) else { return nil }
            ancestors.append(ancestors[parent] + [parent])
        }
        self.parents = parents
        self.ancestors = ancestors
        isChain = parents.enumerated().allSatisfy { row, parent in parent == (row == 0 ? nil : row - 1) }
    }

    /// `count` rows, each the parent of the next.
    public static func chain(_ count: Int) -> TokenTree {
        TokenTree(parents: (0..<count).map { $0 == 0 ? nil : $0 - 1 })!
    }

    public func depth(of row: Int) -> Int { ancestors[row].count }

    /// The rows from a root down to `row`, `row` included.
    public func path(to row: Int) -> [Int] { ancestors[row] + [row] }

    /// The rows whose parent is `row` (nil: the roots), in order.
    public func children(of row: Int?) -> [Int] { parents.indices.filter { parents[$0] == row } }
}
