import Foundation
import Llama
import Tensor

/// What a verification forward costs by its row count, and what one level of tree drafting costs,
/// relative to a forward over one row. The draft tree weighs each node's expected gain against them
/// (`DraftTreePlan`), so its size follows the machine: where a wide forward costs little more than a
/// narrow one (memory-bound models) trees grow wide; where every row costs its full share
/// (compute-bound ones) they shrink toward a chain.
public struct ForwardCosts: Codable, Sendable, Equatable {
    /// The context lengths measured: attention makes each row dearer as the context grows.
    public var contexts: [Int]
    /// `verify[c][n - 1]`: a forward over n rows, with their logits, from a context of `contexts[c]`
    /// positions, relative to n = 1 from the same context.
    public var verify: [[Double]]
    /// One level of tree drafting: the exit layers, the adapter and the draft head over a few rows.
    public var draftLevel: Double

    public init(contexts: [Int], verify: [[Double]], draftLevel: Double) {
        precondition(!contexts.isEmpty && contexts.count == verify.count && verify.allSatisfy { !$0.isEmpty && $0[0] > 0 })
        self.contexts = contexts
        self.verify = verify
        self.draftLevel = draftLevel
    }

    /// Every row costs as much as the first (no batching gain at all): the dearest a machine can make
    /// wide forwards, so trees stay small. Used when nothing was measured.
    public static func proportional(rows: Int = 17, draftLevel: Double = 0.1) -> ForwardCosts {
        ForwardCosts(contexts: [0], verify: [(1...rows).map(Double.init)], draftLevel: draftLevel)
    }

    /// A forward over `rows` rows from a context of `context` positions: interpolated between the
    /// contexts measured (the nearest outside them), past the table extended by its last step.
    public func rows(_ rows: Int, context: Int) -> Double {
        precondition(rows >= 1)
        func cost(_ table: [Double]) -> Double {
            if rows <= table.count { return table[rows - 1] }
            let step = table.count > 1 ? table[table.count - 1] - table[table.count - 2] : table[0]
            return table[table.count - 1] + Double(rows - table.count) * step
        }
        guard let upper = contexts.firstIndex(where: { $0 >= context }) else { return cost(verify[verify.count - 1]) }
        guard upper > 0 else { return cost(verify[0]) }
        let weight = Double(context - contexts[upper - 1]) / Double(contexts[upper] - contexts[upper - 1])
        return (1 - weight) * cost(verify[upper - 1]) + weight * cost(verify[upper])
    }

    /// Times forwards over 1…`maxRows` rows from warm caches of each of `contexts` positions, the sizes
    /// taking turns (medians of `repeats`), and a draft level: the first `exitLayer` layers plus one
    /// more (the adapter's attention and feed-forward are about a layer) over three rows, with a tenth
    /// of the output head (draft vocabularies are a fraction of the full one). A few seconds.
    public static func measure(model: LlamaModel, exitLayer: Int, contexts: [Int] = [64, 512, 2048], maxRows: Int = 17,
                               repeats: Int = 5, pool: ThreadPool = .shared) throws -> ForwardCosts {
        let c = model.config, longest = min(contexts.max()!, c.contextLength - maxRows)
        let contexts = contexts.map { min($0, longest) }
        let scratch = ForwardScratch(config: c, tokens: max(64, maxRows), contextCapacity: longest + maxRows, pool: pool)
        let hidden = FloatMatrix(capacity: longest + maxRows, columns: c.hiddenSize)
        let logits = FloatMatrix(capacity: maxRows, columns: c.vocabularySize)
        let tokens = (0..<(longest + maxRows)).map { Int32(($0 * 7919) % c.vocabularySize) }
        let clock = ContinuousClock()
        var verify: [[Double]] = [], draftLevel = 0.0
        for context in contexts {
            let cache = KVCache(config: c, capacity: context + maxRows)
            model.embed(tokens[0..<context], into: hidden)
            try model.forward(layers: 0..<c.layerCount, hidden: hidden, cache: cache, scratch: scratch)
            func time(rows: Int, layers: Int, headRows: Int) throws -> Double {
                model.embed(tokens[context..<(context + rows)], into: hidden)
                let start = clock.now
                try model.forward(layers: 0..<layers, hidden: hidden, cache: cache, scratch: scratch)
                if headRows > 0 { model.logits(hidden, rows: 0..<headRows, into: logits, scratch: scratch) }
                let seconds = (clock.now - start).seconds
                cache.truncate(to: context)
                return seconds
            }
            let shallow = min(exitLayer + 1, c.layerCount)
            var samples = [[Double]](repeating: [], count: maxRows + 2)
            for _ in 0..<(repeats + 1) {
                for rows in 1...maxRows { samples[rows - 1].append(try time(rows: rows, layers: c.layerCount, headRows: rows)) }
                samples[maxRows].append(try time(rows: 3, layers: shallow, headRows: 0))
                samples[maxRows + 1].append(try time(rows: 3, layers: 0, headRows: 3))
            }
            // The first pass warms caches and pages; the median of the others.
            let medians = samples.map { s in s.dropFirst().sorted()[(s.count - 1) / 2] }
            // A row never makes a forward cheaper: what looks so is the machine's noise.
            var table: [Double] = []
            for rows in 0..<maxRows { table.append(max(table.last ?? 0, medians[rows] / medians[0])) }
            verify.append(table)
            if context == contexts[0] { draftLevel = (medians[maxRows] + medians[maxRows + 1] / 10) / medians[0] }
        }
        return ForwardCosts(contexts: contexts, verify: verify, draftLevel: draftLevel)
    }

    /// The costs measured for `model` on this machine with `threads` threads by this build, from
    /// `folder` when an earlier run measured them there, else measured now (a few seconds, said on
    /// stderr) and saved (a file of about 1 KiB per model and build). A new build re-measures because
    /// its kernels may weigh rows differently.
    public static func cached(for model: LlamaModel, exitLayer: Int, in folder: URL, pool: ThreadPool = .shared) throws -> ForwardCosts {
        let key = "\(model.gguf.fingerprint)-exit\(exitLayer)-threads\(pool.threads)"
        let directory = folder.appendingPathComponent("forward-costs", isDirectory: true)
        let file = directory.appendingPathComponent("\(key)-build\(buildStamp).json")
        if let data = try? Data(contentsOf: file), let costs = try? JSONDecoder().decode(ForwardCosts.self, from: data) {
            return costs
        }
        FileHandle.standardError.write(Data("Measuring what wider forwards cost on this machine, for the draft tree's size (once per build; saved in \(file.path))\n".utf8))
        let costs = try measure(model: model, exitLayer: exitLayer, pool: pool)
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try? encoder.encode(costs).write(to: file, options: .atomic)
        return costs
    }

    /// This build, as the running executable's size and modification time.
    private static let buildStamp: String = {
        let path = Bundle.main.executablePath ?? CommandLine.arguments[0]
        let attributes = (try? FileManager.default.attributesOfItem(atPath: path)) ?? [:]
        let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        let time = Int64((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)
        return String(size, radix: 16) + "-" + String(time, radix: 16)
    }()
}
