import KernelsC

/// The input of a matrix product: `count` rows of `columns` floats, plus their int8 block quantisation
/// (see KernelsC.h), computed once on first use and shared by every matrix that reads the same input
/// (the query, key and value projections, for instance).
public final class ActivationBatch: @unchecked Sendable {
    public let capacity: Int
    public private(set) var floats: UnsafePointer<Float>
    public private(set) var count = 0
    public private(set) var columns = 0
    private var quantizedIsCurrent = false
    private var quantized16IsCurrent = false
    let quantized: UnsafeMutablePointer<Int8>
    let scales: UnsafeMutablePointer<Float>
    let scaledSums: UnsafeMutablePointer<Float>
    /// The int16 quantisation, for the output head (`WeightMatrix.forLogits()`).
    let quantized16: UnsafeMutablePointer<Int16>
    let scales16: UnsafeMutablePointer<Float>
    /// The job object every product of this batch reuses (so products allocate nothing).
    private(set) lazy var productJob = MatrixProductJob()

    /// Room for `capacity` floats in all (tokens × columns).
    public init(capacity: Int) {
        self.capacity = capacity
        quantized = .allocate(capacity: capacity)
        scales = .allocate(capacity: capacity / 32 + 1)
        scaledSums = .allocate(capacity: capacity / 32 + 1)
        quantized16 = .allocate(capacity: capacity)
        scales16 = .allocate(capacity: capacity / 32 + 1)
        floats = UnsafePointer(quantized.withMemoryRebound(to: Float.self, capacity: 0) { $0 })
    }

    deinit {
        quantized.deallocate()
        scales.deallocate()
        scaledSums.deallocate()
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
                       scaledSums: scaledSums, quantized16: quantized16, scales16: scales16)
    }

    /// Quantises the floats unless already done for the current input.
    func quantize() {
        guard !quantizedIsCurrent else { return }
        precondition(columns % 32 == 0, "quantised kernels need rows of whole 32-element blocks")
        kq_quantize(floats, Int32(columns), Int32(count), quantized, scales, scaledSums)
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
