import KernelsC

/// The input of a matrix product: `count` rows of `columns` floats, plus their int8 block quantisation
/// (see KernelsC.h), computed once on first use and shared by every matrix that reads the same input
/// (the query, key and value projections, for instance).
public final class ActivationBatch: @unchecked Sendable {
    public let capacity: Int
    public private(set) var floats: UnsafePointer<Float>
    public private(set) var count = 0
    public private(set) var columns = 0
    /// Whether `quantized`, `scales`, `scaledSums` and `halfSums` hold the current input (`multiplySwiGLU`
    /// writes them).
    fileprivate var quantizedIsCurrent = false
    private var quantized16IsCurrent = false
    let quantized: UnsafeMutablePointer<Int8>
    let scales: UnsafeMutablePointer<Float>
    let scaledSums: UnsafeMutablePointer<Float>
    let halfSums: UnsafeMutablePointer<Int32>
    /// The int16 quantisation, for the output head (`WeightMatrix.forLogits()`).
    let quantized16: UnsafeMutablePointer<Int16>
    let scales16: UnsafeMutablePointer<Float>
    /// The job objects every product of this batch reuses (so products allocate nothing).
    private(set) lazy var productJob = MatrixProductJob()
    private(set) lazy var swiGLUJob = SwiGLUProductJob()

    /// Room for `capacity` floats in all (tokens × columns).
    public init(capacity: Int) {
        self.capacity = capacity
        quantized = .allocate(capacity: capacity)
        scales = .allocate(capacity: capacity / 32 + 1)
        scaledSums = .allocate(capacity: capacity / 32 + 1)
        halfSums = .allocate(capacity: capacity / 16 + 2)
        quantized16 = .allocate(capacity: capacity)
        scales16 = .allocate(capacity: capacity / 32 + 1)
        floats = UnsafePointer(quantized.withMemoryRebound(to: Float.self, capacity: 0) { $0 })
    }

    deinit {
        quantized.deallocate()
        scales.deallocate()
        scaledSums.deallocate()
        halfSums.deallocate()
        quantized16.deallocate()
        scales16.deallocate()
    }

    /// Points the batch at new input; the floats must stay unchanged while the batch is used.
    public func set(_ floats: UnsafePointer<Float>, count: Int, columns: Int) {
        precondition(count * columns <= capacity, "activation batch too small")
        self.floats = floats
        self.count = count
        self.columns = columns
        quantizedIsCurrent = false
        quantized16IsCurrent = false
    }

    /// The current input's buffers as plain pointers, for the pool's threads (`MatrixKernel`).
    var view: ActivationView {
        ActivationView(floats: floats, count: count, columns: columns, quantized: quantized, scales: scales,
                       scaledSums: scaledSums, halfSums: halfSums, quantized16: quantized16, scales16: scales16)
    }

    /// Quantises the floats unless already done for the current input.
    func quantize() {
        guard !quantizedIsCurrent else { return }
        precondition(columns % 32 == 0, "quantised kernels need rows of whole 32-element blocks")
        kq_quantize(floats, Int32(columns), Int32(count), quantized, scales, scaledSums, halfSums)
        quantizedIsCurrent = true
    }

    /// Quantises the floats to int16 unless already done for the current input.
    func quantize16() {
        guard !quantized16IsCurrent else { return }
        precondition(columns % 32 == 0, "quantised kernels need rows of whole 32-element blocks")
        kq_quantize16(floats, Int32(columns), Int32(count), quantized16, scales16)
        quantized16IsCurrent = true
    }
}

/// An `ActivationBatch`'s current input and its quantisations as plain pointers (see `MatrixKernel`).
struct ActivationView {
    let floats: UnsafePointer<Float>
    let count: Int
    let columns: Int
    let quantized: UnsafePointer<Int8>
    let scales: UnsafePointer<Float>
    let scaledSums: UnsafePointer<Float>
    let halfSums: UnsafePointer<Int32>
    let quantized16: UnsafePointer<Int16>
    let scales16: UnsafePointer<Float>
}

extension ActivationBatch {
    /// `WeightMatrix.multiply` for two or three matrices that read this input (query, key and value;
    /// gate and up), run as one parallel job: one wake-up of the pool instead of one per matrix. Each
    /// product's bits are those of its own `multiply`.
    public func multiply(_ a: WeightMatrix, into ya: UnsafeMutablePointer<Float>,
                         _ b: WeightMatrix? = nil, into yb: UnsafeMutablePointer<Float>? = nil,
                         _ c: WeightMatrix? = nil, into yc: UnsafeMutablePointer<Float>? = nil,
                         pool: ThreadPool = .shared) {
        a.prepare(self)
        b?.prepare(self)
        c?.prepare(self)
        let job = productJob
        job.first = a.kernel(input: self, into: ya)
        job.second = b?.kernel(input: self, into: yb!)
        job.third = c?.kernel(input: self, into: yc!)
        pool.run(job, count: job.units, grain: 1)
    }
}

extension ActivationBatch {
    /// SwiGLU of two products of this input, `silu(gate · x) · (up · x)`, into `gateOutput` (`upOutput`
    /// receives the up product); `next` is then set to it as the input of `nextMatrix`, already
    /// quantised if that matrix reads int8. One parallel job in which each thread computes whole blocks
    /// of 32 features of both products and finishes them itself (SwiGLU, then each token's int8 block),
    /// so that the features do not move between the cores before the next product: the calling thread
    /// used to read the other core's half of both products for SwiGLU, then quantise all of it while the
    /// other core waited. Same bits as `multiply(gate, up)`, `VectorOps.swiglu` and `next`'s own
    /// quantisation (blocks are quantised independently).
    public func multiplySwiGLU(_ gate: WeightMatrix, _ up: WeightMatrix, into gateOutput: UnsafeMutablePointer<Float>,
                               up upOutput: UnsafeMutablePointer<Float>, next: ActivationBatch, for nextMatrix: WeightMatrix,
                               pool: ThreadPool = .shared) {
        precondition(gate.rows == up.rows, "gate has \(gate.rows) rows, up \(up.rows)")
        precondition(next !== self, "SwiGLU's output needs a batch of its own: this one is read while it is written")
        gate.prepare(self)
        up.prepare(self)
        next.set(gateOutput, count: count, columns: gate.rows)
        let quantizes = nextMatrix.usesIntegerKernel
        if quantizes { precondition(gate.rows % 32 == 0, "quantised kernels need rows of whole 32-element blocks") }
        let job = swiGLUJob
        job.gate = gate.kernel(input: self, into: gateOutput)
        job.up = up.kernel(input: self, into: upOutput)
        job.quantized = quantizes ? (next.quantized, next.scales, next.scaledSums, next.halfSums) : nil
        pool.run(job, count: (gate.rows + 31) / 32, grain: 1)
        if quantizes { next.quantizedIsCurrent = true }
    }
}

/// Which kernel implementation runs on this CPU.
public enum KernelInfo {
    public static var levelName: String {
        switch kq_instruction_level() {
        case 2: "AVX-512 VNNI"
        case 1: "AVX2"
        default: "portable C"
        }
    }
}
