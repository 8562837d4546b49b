/// One sequence's rows in a forward batch (`LlamaModel.forward(layers:hidden:batch:scratch:)`).
public struct BatchSequence {
    public let cache: KVCache
    /// Rows of the tree (or chain) already in the cache, before this forward's rows.
    public let first: Int
    /// Rows this forward processes: the tree's rows `first…`.
    public let count: Int
    /// How the rows attend to each other; nil: a chain, the plain causal case.
    public let tree: TokenTree?

    /// `count` rows that follow each other.
    public init(cache: KVCache, count: Int) {
        self.cache = cache
        first = 0
        self.count = count
        tree = nil
    }

    /// The rows of `tree` from row `first` on; its rows before `first` went through the same layers in
    /// an earlier forward (a drafter grows its tree a few rows at a time) and are the last `first`
    /// positions of the cache.
    public init(cache: KVCache, tree: TokenTree, from first: Int = 0) {
        precondition((0..<tree.count).contains(first), "a batch sequence needs at least one row")
        self.cache = cache
        self.first = first
        count = tree.count - first
        self.tree = tree.isChain ? nil : tree
    }
}

/// The sequences of the chunk of rows that a forward is processing, kept in buffers that the attention
/// threads read without touching reference counts. One per `ForwardScratch`.
final class BatchLayout {
    /// A sequence's rows inside the chunk.
    struct Segment {
        unowned(unsafe) let cache: KVCache
        /// Positions the cache held before the batch: the sequence's row `i` is stored at `base + i`.
        let base: Int
        /// The sequence's index of the segment's first row (rows of earlier chunks come before), the
        /// segment's row count, and the chunk row it starts at.
        let first: Int
        let count: Int
        let row: Int
        /// Whether each row follows the one before (rows then need no path).
        let isChain: Bool
    }

    /// A run of consecutive rows of one segment: an attention item with each kv head.
    struct Run {
        let segment: Int
        let offset: Int
        let count: Int
    }

    let capacity: Int
    let segments: UnsafeMutablePointer<Segment>
    private(set) var segmentCount = 0
    let runs: UnsafeMutablePointer<Run>
    private(set) var runCount = 0
    /// Per chunk row: its RoPE position (`base + depth`), its depth, and where its ancestors (sequence
    /// row indices, root first) start in `paths` (tree rows only).
    let positions: UnsafeMutablePointer<Int>
    let depths: UnsafeMutablePointer<Int>
    let pathStarts: UnsafeMutablePointer<Int>
    private(set) var paths: UnsafeMutablePointer<Int32>
    private var pathCapacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        segments = .allocate(capacity: capacity)
        runs = .allocate(capacity: capacity)
        positions = .allocate(capacity: capacity)
        depths = .allocate(capacity: capacity)
        pathStarts = .allocate(capacity: capacity)
        pathCapacity = 4 * capacity
        paths = .allocate(capacity: pathCapacity)
    }

    deinit {
        segments.deallocate()
        runs.deallocate()
        positions.deallocate()
        depths.deallocate()
        pathStarts.deallocate()
        paths.deallocate()
    }

    /// One chain of `count` rows after `base` positions of `cache`.
    func setChain(cache: KVCache, base: Int, count: Int) {
        precondition(count <= capacity)
        segments.initialize(to: Segment(cache: cache, base: base, first: 0, count: count, row: 0, isChain: true))
        segmentCount = 1
        for t in 0..<count {
            positions[t] = base + t
            depths[t] = t
        }
    }

    /// The segments of rows `rows` of `batch`, whose caches held `bases` positions before their trees.
    func set(_ batch: [BatchSequence], bases: [Int], rows: Range<Int>) {
        precondition(rows.count <= capacity)
        segmentCount = 0
        var sequenceStart = 0, pathCount = 0
        for (sequence, base) in zip(batch, bases) {
            defer { sequenceStart += sequence.count }
            let lower = max(rows.lowerBound, sequenceStart), upper = min(rows.upperBound, sequenceStart + sequence.count)
            guard lower < upper else { continue }
            let segment = Segment(cache: sequence.cache, base: base, first: sequence.first + lower - sequenceStart, count: upper - lower,
                                  row: lower - rows.lowerBound, isChain: sequence.tree == nil)
            (segments + segmentCount).initialize(to: segment)
            segmentCount += 1
            for i in 0..<segment.count {
                let t = segment.row + i, index = segment.first + i
                guard let tree = sequence.tree else {
                    depths[t] = index
                    positions[t] = base + index
                    continue
                }
                let ancestors = tree.ancestors[index]
                depths[t] = ancestors.count
                positions[t] = base + ancestors.count
                pathStarts[t] = pathCount
                reservePaths(pathCount + ancestors.count)
                for (k, ancestor) in ancestors.enumerated() { paths[pathCount + k] = Int32(ancestor) }
                pathCount += ancestors.count
            }
        }
    }

    /// Splits each segment into attention runs: half of its rows each (at most
    /// `AttentionJob.maxRowsPerItem`), so that one sequence's items still split evenly over two threads.
    func makeRuns() {
        runCount = 0
        for s in 0..<segmentCount {
            let count = segments[s].count, size = AttentionJob.rowsPerItem(count: count)
            for offset in stride(from: 0, to: count, by: size) {
                (runs + runCount).initialize(to: Run(segment: s, offset: offset, count: min(size, count - offset)))
                runCount += 1
            }
        }
    }

    private func reservePaths(_ count: Int) {
        guard count > pathCapacity else { return }
        let grown = UnsafeMutablePointer<Int32>.allocate(capacity: 2 * count)
        grown.update(from: paths, count: pathCapacity)
        paths.deallocate()
        paths = grown
        pathCapacity = 2 * count
    }
}
