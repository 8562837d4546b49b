import Decoding
import Foundation
import Llama
import ModelStore
import Tokenizer

/// The decoders this package offers, by the names the command line and the server use.
public enum DecoderKind: String, CaseIterable, Sendable {
    /// One full forward pass per token.
    case plain
    /// Kangaroo: the shallow layers and a trained adapter draft, the remaining layers verify.
    case kangaroo
    /// The shallow layers and the model's own head draft (no training).
    case layerskip
    /// Prompt lookup: the tokens that followed an earlier occurrence of the last n-gram are drafted.
    case lookup
    /// ReDrafter: a trained recurrent head drafts beams from the full model's last final state.
    case redrafter
    /// SpecDec: a block drafter (the adapter with learned block queries) drafts several positions in
    /// one pass from the shallow layers' states.
    case specdec

    /// Whether `SpeculativeOptions.treeBudget` and `treeWidth` apply: the drafters that grow trees
    /// from the exit layer's states.
    public var draftsTrees: Bool { self == .kangaroo || self == .layerskip }

    /// The settings this decoder uses unless told otherwise: `SpeculativeOptions`' defaults, except
    /// that Kangaroo's tree and η follow the decoding mode (a tree of up to 12 nodes at η 0.3 when
    /// greedy, a chain at η 0.6 when sampling), that layer skip drafts alone (no copy
    /// drafts) unless asked, and that SpecDec drafts its whole block (γ 5 = the shipped drafter's 4
    /// queries + 1) down to η 0.5 (by `bench suite`; see docs/measurements.md).
    public var defaultOptions: SpeculativeOptions {
        var options = SpeculativeOptions()
        if self == .kangaroo {
            options.treeBudget = nil
            options.threshold = nil
        }
        if self == .layerskip { options.copyNgram = 0 }
        if self == .specdec {
            options.copyNgram = 0
            options.maxDraft = 5
            options.threshold = 0.5
        }
        return options
    }
}

public enum DecoderCatalogError: Error, CustomStringConvertible, Equatable {
    case adapterRequired
    case redrafterHeadRequired
    case blockDrafterRequired
    case unknownDecoder(String)
    /// The KV caches would take more than half of the machine's memory.
    case contextTooLarge(positions: Int, sequences: Int, bytes: Int, memory: Int)

    public var description: String {
        switch self {
        case .adapterRequired: "the kangaroo decoder needs an adapter for this model"
        case .redrafterHeadRequired: "the redrafter decoder needs a trained head for this model (none ships for it; train one with kangaroo train-redrafter and pass --redrafter-head DIR)"
        case .blockDrafterRequired: "the specdec decoder needs a trained block drafter for this model (none ships for it; train one with kangaroo train-specdec and pass --specdec-drafter DIR)"
        case let .unknownDecoder(name): "there is no decoder '\(name)' (\(DecoderKind.allCases.map(\.rawValue).joined(separator: ", ")))"
        case let .contextTooLarge(positions, sequences, bytes, memory):
            "a context of \(positions) positions for \(sequences) sequence(s) needs \(bytes >> 20) MiB of KV cache, more than half of this machine's \(memory >> 20) MiB"
        }
    }
}

/// Builds every decoder: the one place the command line, the server and the benchmarks get them from.
public enum DecoderCatalog {
    /// A decoder of `kind` for `model` with `options`; Kangaroo drafts with `adapter` (at its own exit
    /// layer) and needs one. Draft trees size themselves by `costs` (nil: measured on this machine).
    public static func make(_ kind: DecoderKind, model: LlamaModel, options: SpeculativeOptions? = nil,
                            adapter: KangarooAdapter? = nil, redrafterHead: RecurrentDraftHead? = nil,
                            blockDrafter: KangarooAdapter? = nil, contextCapacity: Int? = nil, costs: ForwardCosts? = nil,
                            acceptance: AcceptanceRule = SpeculativeSamplingRule(), name: String? = nil) throws -> SpeculativeDecoder {
        let capacity = model.config.context(contextCapacity)
        try checkMemory(model, capacity: capacity, sequences: 1)
        let drafter = try makeDrafter(kind, model: model, options: options, adapter: adapter, redrafterHead: redrafterHead,
                                      blockDrafter: blockDrafter, contextCapacity: capacity, costs: costs)
        return SpeculativeDecoder(model: model, drafter: drafter, name: name ?? kind.rawValue, contextCapacity: capacity,
                                  acceptance: acceptance)
    }

    /// Throws when the caches for `sequences` contexts of `capacity` positions would not fit in memory.
    static func checkMemory(_ model: LlamaModel, capacity: Int, sequences: Int) throws {
        let bytes = model.config.cacheBytes(capacity: capacity) * sequences, memory = Int(ProcessInfo.processInfo.physicalMemory)
        guard bytes <= memory / 2 else {
            throw DecoderCatalogError.contextTooLarge(positions: capacity, sequences: sequences, bytes: bytes, memory: memory)
        }
    }

    /// A continuous batch of up to `slots` sequences at once, each with a context of `contextCapacity`
    /// (nil: `LlamaConfig.defaultContext`, at most the model's), decoding as each request's decoder
    /// name says with the settings `options` gives its kind (Kangaroo with `adapter`).
    public static func makeBatch(model: LlamaModel, tokenizer: Tokenizer, slots: Int,
                                 options: @escaping (DecoderKind) -> SpeculativeOptions = { $0.defaultOptions },
                                 adapter: KangarooAdapter? = nil, redrafterHead: RecurrentDraftHead? = nil,
                                 blockDrafter: KangarooAdapter? = nil, contextCapacity: Int? = nil, prefillChunk: Int = 64,
                                 acceptance: AcceptanceRule = SpeculativeSamplingRule()) throws -> ContinuousBatch {
        let capacity = model.config.context(contextCapacity)
        try checkMemory(model, capacity: capacity, sequences: slots)
        let decoder = BatchDecoder(model: model, slots: slots, contextCapacity: capacity, acceptance: acceptance)
        // Several sequences: drafts are capped by what wider forwards cost here.
        let exitLayer = adapter?.config.exitLayer ?? options(.layerskip).exitLayer
        let policy = slots > 1
            ? BatchDraftPolicy(costs: try ForwardCosts.cached(for: model, exitLayer: min(exitLayer, model.config.layerCount), in: PyPIFile.cacheDirectory),
                               maxDraft: decoder.maxDrafts)
            : nil
        return ContinuousBatch(decoder: decoder, tokenizer: tokenizer, prefillChunk: prefillChunk, policy: policy) { name in
            guard let kind = DecoderKind(rawValue: name) else { throw DecoderCatalogError.unknownDecoder(name) }
            return try makeDrafter(kind, model: model, options: options(kind), adapter: adapter, redrafterHead: redrafterHead,
                                   blockDrafter: blockDrafter, contextCapacity: capacity)
        }
    }

    /// The drafter of one sequence for `kind` (nil: plain decoding). ReDrafter drafts with
    /// `redrafterHead`, SpecDec with `blockDrafter`, else with the one shipped for the model. Draft
    /// trees size themselves by `costs` (nil: measured on this machine).
    public static func makeDrafter(_ kind: DecoderKind, model: LlamaModel, options: SpeculativeOptions?, adapter: KangarooAdapter?,
                                   redrafterHead: RecurrentDraftHead? = nil, blockDrafter: KangarooAdapter? = nil,
                                   contextCapacity: Int, costs: ForwardCosts? = nil) throws -> (any Drafter)? {
        var options = options ?? kind.defaultOptions
        switch kind {
        case .plain:
            return nil
        case .lookup:
            return try LookupDrafter(ngram: options.copyNgram, maxDraft: options.maxDraft)
        case .layerskip:
            return try ExitLayerDrafter(model: model, draftModel: LayerSkipHead(model: model), options: options,
                                        costs: try costs ?? measuredCosts(for: model, options: options))
        case .redrafter:
            guard let head = try redrafterHead ?? RecurrentDraftHead.shipped(for: model) else {
                throw DecoderCatalogError.redrafterHeadRequired
            }
            return try ReDrafter(head: head, model: model, beamWidth: options.beamWidth, beamLength: options.beamLength)
        case .specdec:
            guard let drafter = try blockDrafter ?? KangarooAdapter.shipped(for: model, name: KangarooAdapter.blockDrafterName),
                  drafter.blockSize > 0 else {
                throw DecoderCatalogError.blockDrafterRequired
            }
            return try BlockDrafter(drafter: drafter, model: model, options: options, contextCapacity: contextCapacity)
        case .kangaroo:
            guard let adapter else { throw DecoderCatalogError.adapterRequired }
            options.exitLayer = adapter.config.exitLayer
            let runner = AdapterRunner(adapter: adapter, model: model, contextCapacity: contextCapacity, chunk: 64)
            return try ExitLayerDrafter(model: model, draftModel: runner, options: options,
                                        costs: try costs ?? measuredCosts(for: model, options: options))
        }
    }

    /// What wider forwards cost on this machine, for draft trees: measured once per model, exit layer
    /// and thread count and kept in the cache folder (`$KANGAROO_HOME`, else `~/.cache/kangaroo`).
    static func measuredCosts(for model: LlamaModel, options: SpeculativeOptions) throws -> ForwardCosts {
        guard options.treeBudget(sampling: false) > 0, options.invalidSetting == nil, options.exitLayer <= model.config.layerCount else {
            return .proportional()
        }
        return try ForwardCosts.cached(for: model, exitLayer: options.exitLayer, in: PyPIFile.cacheDirectory)
    }
}
