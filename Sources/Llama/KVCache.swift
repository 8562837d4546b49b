import Tensor

/// Keys and values of every layer for up to `capacity` positions, preallocated.
///
/// Layout:
/// - keys (after RoPE, floats) in tiles of 16 positions, `keys[layer][kvHead][position / 16][headSize][16]`,
///   so attention scores 16 positions at once with vertical multiply-adds (no per-position horizontal
///   sum); lanes past a layer's length hold stale values that attention computes but never reads;
/// - values as IEEE half floats, `values[layer][position][kvHead × headSize]`. At long contexts
///   decoding is bound by reading the cache; half values read a quarter less of it (decode at a
///   1.1–1.3k-token context 104–124 → 123–154 tokens/s, four runs each alternating). Half keys too
///   would read half, but moved the golden log-probabilities by 0.29 (bound 0.25) and swapped a
///   near-tie top token; half values moved them by 0.18 (0.21 with float values).
/// Invariant: layer `l` holds valid entries for positions `0..<lengths[l]`. Layers may have different
/// lengths (a speculative decoder runs shallow layers ahead of deep ones); rolling back is only
/// lowering a length, since entries past it are overwritten before they are read again.
public final class KVCache: @unchecked Sendable {
    public let layerCount: Int
    public let capacity: Int
    public let kvSize: Int
    public private(set) var lengths: [Int]
    let headSize: Int
    let kvHeadCount: Int
    /// Tiles of 16 positions per (layer, kv head): `capacity` rounded up.
    let tileCount: Int
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<UInt16>

    public init(config: LlamaConfig, capacity: Int, layerCount: Int? = nil) {
        self.layerCount = layerCount ?? config.layerCount
        self.capacity = capacity
        kvSize = config.kvSize
        headSize = config.headSize
        kvHeadCount = config.kvHeadCount
        tileCount = (capacity + 15) / 16
        lengths = Array(repeating: 0, count: self.layerCount)
        // Untouched pages of these large buffers are never read before written, so they stay
        // unmapped until used.
        keys = .allocate(capacity: self.layerCount * kvHeadCount * tileCount * 16 * headSize)
        values = .allocate(capacity: self.layerCount * capacity * kvSize)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    public func length(of layer: Int) -> Int { lengths[layer] }

    /// The key tiles of one kv head of a layer: tile `i` (positions 16i…16i+15) starts `16 · headSize`
    /// floats after tile 0; element `d` of position `16i + j`'s key is at `16 · d + j` in it.
    func keyTiles(layer: Int, kvHead: Int) -> UnsafePointer<Float> {
        UnsafePointer(keys + (layer * kvHeadCount + kvHead) * tileCount * 16 * headSize)
    }

    /// Stores the key of one position (`kvHeads × headSize` floats, after RoPE) into its tiles.
    func storeKey(_ key: UnsafePointer<Float>, layer: Int, position: Int) {
        for head in 0..<kvHeadCount {
            let tile = keys + ((layer * kvHeadCount + head) * tileCount + position / 16) * 16 * headSize + position % 16
            let source = key + head * headSize
            for d in 0..<headSize { tile[16 * d] = source[d] }
        }
    }

    /// Stores the value of one position (`kvHeads × headSize` floats).
    func storeValue(_ value: UnsafePointer<Float>, layer: Int, position: Int) {
        let row = values + (layer * capacity + position) * kvSize
        for i in 0..<kvSize { row[i] = Float16(value[i]).bitPattern }
    }

    /// The values of a layer: a row of `kvSize` halves per position.
    func values(layer: Int) -> UnsafePointer<UInt16> { UnsafePointer(values + layer * capacity * kvSize) }

    func setLength(_ length: Int, layer: Int) { lengths[layer] = length }

    /// Forgets every position from `length` on in `layers` (all layers by default).
    public func truncate(to length: Int, layers: Range<Int>? = nil) {
        for layer in layers ?? 0..<layerCount where lengths[layer] > length {
            lengths[layer] = length
        }
    }

    public func reset() { truncate(to: 0) }
}
