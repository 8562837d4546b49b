import ModelFormats

/// Trainable tensors, or their gradients, as a list in a fixed order (what `AdamW` updates).
public protocol TensorList {
    associatedtype Scalar
    var tensors: [[Scalar]] { get set }
}

/// AdamW (decoupled weight decay) over a draft model's tensors, with global-norm gradient clipping.
public struct AdamW<S: BinaryFloatingPoint & Sendable>: Sendable {
    public var beta1: S = 0.9
    public var beta2: S = 0.95
    public var epsilon: S = 1e-8
    public var weightDecay: S = 0
    /// Gradients are scaled down so that their global L2 norm is at most this (nil: no clipping).
    public var clipNorm: S? = 1
    /// Moment estimates per tensor (saved with checkpoints so training can resume).
    public var first: [[S]] = []
    public var second: [[S]] = []
    public var step = 0

    public init(weightDecay: S = 0, clipNorm: S? = 1) {
        self.weightDecay = weightDecay
        self.clipNorm = clipNorm
    }

    /// Updates `parameters` in place with `gradients` at learning rate `rate` (times `rateScales[t]`
    /// for tensor t, when given); returns the gradients' global norm before clipping.
    @discardableResult
    public mutating func update<T: TensorList>(_ parameters: inout T, gradients: T, rate: S, rateScales: [S]? = nil) -> S where T.Scalar == S {
        var p = parameters.tensors
        let g = gradients.tensors
        if first.isEmpty {
            first = g.map { Array(repeating: 0, count: $0.count) }
            second = first
        }
        var squared: S = 0
        for tensor in g { for x in tensor { squared += x * x } }
        let norm = squared.squareRoot()
        let clip = clipNorm.map { norm > $0 ? $0 / norm : 1 } ?? 1
        step += 1
        let correction1 = 1 - pow(beta1, step), correction2 = 1 - pow(beta2, step)
        for t in p.indices {
            let rate = rate * (rateScales?[t] ?? 1)
            for i in p[t].indices {
                let grad = g[t][i] * clip
                first[t][i] = beta1 * first[t][i] + (1 - beta1) * grad
                second[t][i] = beta2 * second[t][i] + (1 - beta2) * grad * grad
                let mHat = first[t][i] / correction1, vHat = second[t][i] / correction2
                p[t][i] -= rate * (mHat / (vHat.squareRoot() + epsilon) + weightDecay * p[t][i])
            }
        }
        parameters.tensors = p
        return norm
    }

    private func pow(_ base: S, _ exponent: Int) -> S {
        var result: S = 1
        for _ in 0..<exponent { result *= base }
        return result
    }
}

extension AdamW where S == Float {
    /// Saves the moments and the step count as `folder`/optimizer.safetensors (a checkpoint's half
    /// beside the weights).
    public func save(to folder: String) throws {
        var tensors: [String: SafeTensors.Tensor] = [:]
        for (i, m) in first.enumerated() { tensors["first.\(i)"] = .init(floats: m, shape: [m.count]) }
        for (i, v) in second.enumerated() { tensors["second.\(i)"] = .init(floats: v, shape: [v.count]) }
        try SafeTensors.write(SafeTensors.File(tensors: tensors, metadata: ["step": String(step)]), to: folder + "/optimizer.safetensors")
    }

    /// Restores what `save` wrote, for `tensors` tensors.
    public mutating func restore(from folder: String, tensors: Int) throws {
        let state = try SafeTensors.read(path: folder + "/optimizer.safetensors")
        first = (0..<tensors).map { state.tensors["first.\($0)"]?.floats() ?? [] }
        second = (0..<tensors).map { state.tensors["second.\($0)"]?.floats() ?? [] }
        step = Int(state.metadata["step"] ?? "0") ?? 0
    }
}

/// Learning rate with linear warm-up then cosine decay to `floor × peak`.
public struct LearningRateSchedule: Sendable {
    public var peak: Double
    public var warmup: Int
    public var total: Int
    public var floor: Double

    public init(peak: Double, warmup: Int, total: Int, floor: Double = 0.1) {
        self.peak = peak
        self.warmup = warmup
        self.total = total
        self.floor = floor
    }

    public func rate(at step: Int) -> Double {
        if step < warmup { return peak * Double(step + 1) / Double(warmup) }
        let progress = min(1, Double(step - warmup) / Double(max(1, total - warmup)))
        return peak * (floor + (1 - floor) * 0.5 * (1 + cos(Double.pi * progress)))
    }
}

import Foundation
