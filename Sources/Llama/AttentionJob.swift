import KernelsC
import Tensor

/// Attention, split across the pool; one per scratch, reused. Two ways, with the same bits for every
/// token (each score, softmax and value sum is the same operations either way, see KernelsC.h):
///
/// **Items** (phase `.items`): (run of a sequence's rows, kv head) items, for every sequence of the
/// chunk in one job. The query heads of the run's rows that share the kv head are computed together,
/// so each key and value is read once for all of them. A chain row i sees positions 0…base + i; a tree
/// row sees the committed positions 0..<base, its ancestors and itself (`BatchLayout`). The run's
/// scores are computed up to its last row's slot (a row's extra ones are never read; a tree row's
/// path is first gathered next to the committed scores, in path order); its value sums run over the
/// positions all its rows see, then each row adds its own few in order, which gives the bits of one
/// sum along its path (kq_attention_values adds in order): a row's result does not depend on the run.
///
/// **Split** (phases `.scores`, `.softmax`, `.values`, for a few new tokens over a long context): this
/// model's 3 kv heads make 3 items, which two threads share 2 : 1, and reading the cache is most of a
/// step's time at long contexts. So the scores are computed in (chunk of positions, kv head) items, the
/// softmax one vector at a time, and the value sums in (slice of the head's lanes, kv head) items: both
/// threads stream half of the cache, and each key and value is still read once for all new tokens.
/// Where each way is faster was measured (docs/measurements.md), hence `splitLength`.
final class AttentionJob: ParallelJob {
    enum Phase { case items, scores, softmax, values }

    /// Most tokens in one item (bounds the scratch).
    static let maxRowsPerItem = 16

    /// Tokens per item: half of them (at most 16), so that the items still split evenly over two
    /// threads (this model has 3 kv heads); one token or all tokens an item were slower
    /// (docs/measurements.md).
    static func rowsPerItem(count: Int) -> Int { min(max(1, (count + 1) / 2), maxRowsPerItem) }

    /// Positions of a scores item in the split way (whole key tiles).
    static let positionsPerChunk = 256

    /// The split way from this many positions on (the last new token's), by the figures above: below,
    /// its two extra rounds of the pool cost more than the balance brings.
    static func splitLength(newTokens: Int) -> Int { newTokens <= 2 ? 768 : 2048 }

    let config: LlamaConfig
    unowned(unsafe) let scratch: ForwardScratch
    unowned(unsafe) let layout: BatchLayout
    var phase = Phase.items
    var layer = 0
    /// Query heads per kv head.
    let groupSize: Int

    init(config: LlamaConfig, scratch: ForwardScratch) {
        self.config = config
        self.scratch = scratch
        layout = scratch.layout
        groupSize = config.headCount / config.kvHeadCount
    }

    func run(_ range: Range<Int>, part: Int) {
        switch phase {
        case .items: runItems(range, part: part)
        case .scores: runScores(range, part: part)
        case .softmax: runSoftmax(range)
        case .values: runValues(range, part: part)
        }
    }

    /// (run of rows, kv head) items.
    private func runItems(_ range: Range<Int>, part: Int) {
        let c = config
        let headSize = c.headSize
        let scale = 1 / Float(headSize).squareRoot()
        let stride = scratch.scores.columns
        let scores = scratch.scores.row(part * groupSize * Self.maxRowsPerItem)
        // The item's queries gathered (`rows × groupSize` vectors of headSize, contiguous) and room for its
        // value sums.
        let queries = scratch.attentionQueries.row(part), outputs = scratch.attentionOutputs.row(part)
        for item in range {
            let run = layout.runs[item / c.kvHeadCount], kvHead = item % c.kvHeadCount
            let segment = layout.segments[run.segment], cache = segment.cache
            let rows = segment.row + run.offset..<(segment.row + run.offset + run.count)
            gatherQueries(kvHead: kvHead, rows: rows, into: queries)
            // Scores up to the run's last row's slot (a row's scores past what it sees are never read).
            let longest = segment.base + segment.first + run.offset + run.count
            kq_attention_scores(queries, Int32(run.count * groupSize), cache.keyTiles(layer: layer, kvHead: kvHead),
                                Int32(longest), Int32(headSize), scale, scores, stride)
            for v in 0..<run.count * groupSize { softmax(scores + v * stride, row: rows.lowerBound + v / groupSize, segment) }
            for slice in 0..<cache.valueSlices {
                sumValues(scores, rows: rows, segment: segment, kvHead: kvHead, slice: slice, outputs: outputs)
            }
        }
    }

    /// The softmax of chunk row `row`'s scores (one query head's vector) over what the row sees. A tree
    /// row's ancestors and its own score are first brought next to the committed positions, in path
    /// order: the vector a linear forward along its path gives.
    private func softmax(_ scores: UnsafeMutablePointer<Float>, row: Int, _ segment: BatchLayout.Segment) {
        let depth = layout.depths[row]
        if !segment.isChain {
            let path = layout.paths + layout.pathStarts[row], base = segment.base
            for k in 0..<depth { scores[base + k] = scores[base + Int(path[k])] }
            scores[base + depth] = scores[base + segment.first + row - segment.row]
        }
        VectorOps.softmax(scores, count: segment.base + depth + 1)
    }

    /// The value sums of the cache's value slice `slice` of kv head `kvHead`'s query heads for chunk
    /// rows `rows` of `segment`, from their probabilities (`scores`: row r's group at rows
    /// `r · groupSize…`, `scores.columns` apart), into their rows of `scratch.attention`; `outputs` is
    /// room for them. Sums run over the positions all rows see first; then each row adds its own few in
    /// order (a chain row its later positions, a tree row its ancestors and itself): the bits of one
    /// sum along the row's path (kq_attention_values adds in order).
    private func sumValues(_ scores: UnsafePointer<Float>, rows: Range<Int>, segment: BatchLayout.Segment, kvHead: Int,
                           slice: Int, outputs: UnsafeMutablePointer<Float>) {
        let c = config, vectors = rows.count * groupSize, cache = segment.cache
        let lanes = cache.valueSliceWidth, stride = scratch.scores.columns
        let values = cache.values(layer: layer, kvHead: kvHead, slice: slice)
        let first = segment.first + rows.lowerBound - segment.row
        let common = segment.isChain ? segment.base + first + 1 : segment.base
        outputs.initialize(repeating: 0, count: vectors * lanes)
        kq_attention_values(scores, stride, Int32(vectors), values, lanes, Int32(common), Int32(lanes), outputs)
        for r in 0..<rows.count {
            let p = scores + r * groupSize * stride, out = outputs + r * groupSize * lanes
            if segment.isChain {
                guard r > 0 else { continue }
                kq_attention_values(p + common, stride, Int32(groupSize), values + common * lanes, lanes, Int32(r),
                                    Int32(lanes), out)
                continue
            }
            let row = rows.lowerBound + r, depth = layout.depths[row], path = layout.paths + layout.pathStarts[row]
            for k in 0...depth {
                let slot = segment.base + (k < depth ? Int(path[k]) : first + r)
                kq_attention_values(p + segment.base + k, stride, Int32(groupSize), values + slot * lanes, lanes, 1,
                                    Int32(lanes), out)
            }
        }
        for v in 0..<vectors {
            let row = rows.lowerBound + v / groupSize, queryHead = kvHead * groupSize + v % groupSize
            (scratch.attention.row(row) + queryHead * c.headSize + slice * lanes).update(from: outputs + v * lanes, count: lanes)
        }
    }

    /// Copies the query heads of kv head `kvHead` for chunk rows `rows` into `queries`, `headSize` floats apart.
    private func gatherQueries(kvHead: Int, rows: Range<Int>, into queries: UnsafeMutablePointer<Float>) {
        let groupWidth = groupSize * config.headSize
        for (r, t) in rows.enumerated() {
            (queries + r * groupWidth).update(from: scratch.query.row(t) + kvHead * groupWidth, count: groupWidth)
        }
    }

    /// The split way serves a chunk of one segment. Its score rows: kv head k's vectors (row r, query
    /// head g of the group) are rows `(k · count + r) · groupSize + g` of `scratch.scores`.
    private func splitScoresRow(kvHead: Int) -> UnsafeMutablePointer<Float> {
        scratch.scores.row(kvHead * layout.segments[0].count * groupSize)
    }

    /// (chunk of positions, kv head) items: the scores of every row's query heads over the chunk, up to
    /// the last row's slot.
    private func runScores(_ range: Range<Int>, part: Int) {
        let c = config, chunk = Self.positionsPerChunk, segment = layout.segments[0]
        let queries = scratch.attentionQueries.row(part), longest = segment.base + segment.first + segment.count
        for item in range {
            let kvHead = item % c.kvHeadCount, start = item / c.kvHeadCount * chunk
            gatherQueries(kvHead: kvHead, rows: 0..<segment.count, into: queries)
            kq_attention_scores(queries, Int32(segment.count * groupSize),
                                segment.cache.keyTiles(layer: layer, kvHead: kvHead) + start * c.headSize,
                                Int32(min(chunk, longest - start)), Int32(c.headSize), 1 / Float(c.headSize).squareRoot(),
                                splitScoresRow(kvHead: kvHead) + start, scratch.scores.columns)
        }
    }

    /// One item per score row: its softmax over the positions its row sees.
    private func runSoftmax(_ range: Range<Int>) {
        let segment = layout.segments[0]
        for item in range {
            softmax(scratch.scores.row(item), row: item % (segment.count * groupSize) / groupSize, segment)
        }
    }

    /// (slice of lanes, kv head) items: every row's value sums for those lanes of the group's heads.
    private func runValues(_ range: Range<Int>, part: Int) {
        let segment = layout.segments[0]
        for item in range {
            let kvHead = item % config.kvHeadCount
            sumValues(splitScoresRow(kvHead: kvHead), rows: 0..<segment.count, segment: segment, kvHead: kvHead,
                      slice: item / config.kvHeadCount, outputs: scratch.attentionOutputs.row(part))
        }
    }
}
