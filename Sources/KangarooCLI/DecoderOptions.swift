import Adapter
import ArgumentParser
import Decoding
import Foundation
import Llama

extension DecoderKind: ExpressibleByArgument {}

/// `--decoder` and the speculative settings of `generate`.
struct DecoderOptions: ParsableArguments {
    @Option(help: "Decoding method: kangaroo (shallow layers + adapter draft, full model verifies), lookup (prompt lookup: tokens that followed an earlier occurrence of the last n-gram), layerskip (shallow layers + the model's head draft), redrafter (a trained recurrent head drafts beams from the full model's last state; needs a head: --redrafter-head, or one shipped for the model), specdec (SpecDec: a block drafter drafts several positions in one pass from the shallow layers; --specdec-drafter, or one shipped for the model) or plain (no speculation). Default: kangaroo when an adapter fits the model (--adapter, or one shipped for it), else lookup. Every one gives plain decoding's output.")
    var decoder: DecoderKind?

    @OptionGroup var speculative: SpeculativeSettings

    /// --decoder, or the automatic choice, with Kangaroo's adapter.
    func choice(for model: LlamaModel) throws -> (kind: DecoderKind, adapter: KangarooAdapter?) {
        guard let decoder else { return try speculative.automaticDecoder(for: model) }
        return (decoder, decoder == .kangaroo ? try speculative.resolveAdapter(for: model) : nil)
    }

    func makeDecoder(model: LlamaModel, context: Int?) throws -> SpeculativeDecoder {
        let (kind, adapter) = try choice(for: model)
        return try speculative.makeDecoder(kind, model: model, context: context, trained: adapter)
    }
}

/// Settings of the speculative decoders; each defaults to the decoder's own (`DecoderKind.defaultOptions`).
struct SpeculativeSettings: ParsableArguments {
    private static let defaults = SpeculativeOptions()

    @Option(help: "Kangaroo/layer-skip: layers 0..<N feed the drafter (Kangaroo: the adapter's own). Default: \(defaults.exitLayer).")
    var exitLayer: Int?

    @Option(help: "Kangaroo/layer-skip: stop drafting once a draft's probability is below this (η); with trees, candidates below it are not expanded. Default: \(SpeculativeOptions.defaultThreshold(treeBudget: 0)) for chains, \(SpeculativeOptions.defaultThreshold(treeBudget: 1)) for trees.")
    var threshold: Float?

    @Option(help: "Drafts per round at most (γ). Default: \(defaults.maxDraft).")
    var maxDraft: Int?

    @Flag(help: "Kangaroo/layer-skip: drop the draft that fell below --threshold instead of verifying it (the paper verifies it, and so does the default); saves its verification width where wider verification is dear. Output unchanged either way.")
    var dropUncertainDraft = false

    @Option(help: "Kangaroo/layer-skip: after a round whose drafts were all rejected, decode the next 1, 2, 4, … rounds (at most N) without drafting, until drafts are accepted again; 0 drafts every round, as the paper does. Output unchanged either way. Default: \(defaults.maxBackoff).")
    var maxBackoff: Int?

    @Option(help: "Copy drafts (prompt lookup): when the last N tokens occurred earlier in the prompt or output, draft the tokens that followed them there (Kangaroo/layer-skip: first, the drafter going on after them, and instead of the drafter's later in a round; 0: off). The lookup decoder's n-gram. Default: \(defaults.copyNgram) (layerskip: 0). Output unchanged.")
    var copyNgram: Int?

    @Option(help: "Kangaroo/layer-skip: draft a tree of at most N nodes (0: a chain of --max-draft). It grows from the draft model's top candidates, best path probability first, while a node's probability repays the cost its row adds to verification, measured once on this machine; candidates below --threshold are not expanded. Output unchanged. Default: Kangaroo \(SpeculativeOptions.greedyTreeBudget) when greedy and a chain when sampling (where trees cost more drafting than they gain); layer skip \(defaults.treeBudget ?? 0).")
    var treeBudget: Int?

    @Option(help: "Kangaroo/layer-skip draft trees: candidates drawn under each expanded node, and nodes expanded per level. Default: \(defaults.treeWidth).")
    var treeWidth: Int?

    @Option(help: "ReDrafter: beams its beam search keeps (greedy; they are verified together as a tree). Default: \(defaults.beamWidth).")
    var beamWidth: Int?

    @Option(help: "ReDrafter: tokens each beam drafts (sampling: the one chain's length). Default: \(defaults.beamLength).")
    var beamLength: Int?

    @Option(help: "ReDrafter: head folder (redrafter.json + redrafter.safetensors, from train-redrafter). Default: the head shipped for the model, if any.")
    var redrafterHead: String?

    /// The head --redrafter-head names (nil: the catalog uses the one shipped for the model).
    func loadRedrafterHead(for model: LlamaModel) throws -> RecurrentDraftHead? {
        try redrafterHead.map { try RecurrentDraftHead.load(from: $0, for: model) }
    }

    @Option(help: "SpecDec: block drafter folder (specdec.json + specdec.safetensors, from train-specdec). Default: the one shipped for the model, if any.")
    var specdecDrafter: String?

    /// The block drafter --specdec-drafter names (nil: the catalog uses the one shipped for the model).
    func loadBlockDrafter(for model: LlamaModel) throws -> KangarooAdapter? {
        try specdecDrafter.map { try KangarooAdapter.load(from: $0, for: model, name: KangarooAdapter.blockDrafterName) }
    }

    /// The settings for `kind`: its defaults, with what was given on the command line.
    func options(for kind: DecoderKind) -> SpeculativeOptions {
        var options = kind.defaultOptions
        if let exitLayer { options.exitLayer = exitLayer }
        if let treeBudget, kind.draftsTrees {
            options.treeBudget = treeBudget
            options.threshold = nil
        }
        if let threshold { options.threshold = threshold }
        if let maxDraft { options.maxDraft = maxDraft }
        if dropUncertainDraft { options.dropsUncertainDraft = true }
        if let maxBackoff { options.maxBackoff = maxBackoff }
        if let copyNgram { options.copyNgram = copyNgram }
        if let treeWidth { options.treeWidth = treeWidth }
        if let beamWidth { options.beamWidth = beamWidth }
        if let beamLength { options.beamLength = beamLength }
        return options
    }

    func validate() throws {
        for kind in DecoderKind.allCases {
            if let name = options(for: kind).invalidSetting { throw ValidationError(Self.flagError(name)) }
        }
    }

    /// The command-line wording of an out-of-range setting.
    static func flagError(_ setting: String) -> String {
        switch setting {
        case "exit layer": "--exit-layer must be between 1 and the model's layer count"
        case "threshold": "--threshold must be between \(SpeculativeOptions.thresholdRange.lowerBound) and \(SpeculativeOptions.thresholdRange.upperBound)"
        case "max draft": "--max-draft must be between \(SpeculativeOptions.maxDraftRange.lowerBound) and \(SpeculativeOptions.maxDraftRange.upperBound)"
        case "max back-off": "--max-backoff must be between \(SpeculativeOptions.maxBackoffRange.lowerBound) and \(SpeculativeOptions.maxBackoffRange.upperBound)"
        case "tree budget": "--tree-budget must be between \(SpeculativeOptions.treeBudgetRange.lowerBound) and \(SpeculativeOptions.treeBudgetRange.upperBound)"
        case "beam width": "--beam-width must be between \(SpeculativeOptions.beamWidthRange.lowerBound) and \(SpeculativeOptions.beamWidthRange.upperBound)"
        case "beam length": "--beam-length must be between \(SpeculativeOptions.beamLengthRange.lowerBound) and \(SpeculativeOptions.beamLengthRange.upperBound)"
        case "tree width": "--tree-width must be between \(SpeculativeOptions.treeWidthRange.lowerBound) and \(SpeculativeOptions.treeWidthRange.upperBound)"
        case "copy n-gram": "--copy-ngram must be between \(SpeculativeOptions.copyNgramRange.lowerBound) and \(SpeculativeOptions.copyNgramRange.upperBound) (the lookup decoder: at least 1)"
        default: "invalid \(setting)"
        }
    }

    @Option(help: "Kangaroo: adapter folder (adapter.json + adapter.safetensors). Default: the adapter shipped for the default model; otherwise a copy of layer --exit-layer's attention (untrained).")
    var adapter: String?

    /// A decoder of `kind`; Kangaroo drafts with `trained` when given, else with `resolveAdapter`'s choice.
    func makeDecoder(_ kind: DecoderKind, model: LlamaModel, context: Int?, trained: KangarooAdapter? = nil) throws -> SpeculativeDecoder {
        let adapter = kind == .kangaroo ? try trained ?? resolveAdapter(for: model) : nil
        do {
            return try DecoderCatalog.make(kind, model: model, options: options(for: kind), adapter: adapter,
                                           redrafterHead: kind == .redrafter ? loadRedrafterHead(for: model) : nil,
                                           blockDrafter: kind == .specdec ? loadBlockDrafter(for: model) : nil, contextCapacity: context)
        } catch let SpeculativeError.invalidSetting(name) {
            throw ValidationError(Self.flagError(name))
        }
    }

    /// The decoder when none is named: Kangaroo when an adapter fits the model (--adapter, or one
    /// shipped for it), else prompt lookup, said on standard error. Both give plain decoding's output.
    func automaticDecoder(for model: LlamaModel) throws -> (kind: DecoderKind, adapter: KangarooAdapter?) {
        if let adapter { return (.kangaroo, try KangarooAdapter.load(from: adapter, for: model)) }
        if let shipped = try KangarooAdapter.shipped(for: model) { return (.kangaroo, shipped) }
        FileHandle.standardError.write(Data("note: no Kangaroo adapter fits this model; decoding with prompt lookup (--decoder plain turns speculation off)\n".utf8))
        return (.lookup, nil)
    }

    /// --adapter if given; otherwise the adapter shipped for this model file; otherwise (with a note) an
    /// untrained copy of layer --exit-layer's attention.
    func resolveAdapter(for model: LlamaModel) throws -> KangarooAdapter {
        try chooseAdapter(path: adapter, model: model, exitLayer: exitLayer ?? Self.defaults.exitLayer)
    }
}

/// The adapter at `path` if given; otherwise the adapter shipped for this model file; otherwise (with a
/// note) an untrained copy of layer `exitLayer`'s attention.
func chooseAdapter(path: String?, model: LlamaModel, exitLayer: Int) throws -> KangarooAdapter {
    if let path { return try KangarooAdapter.load(from: path, for: model) }
    if let shipped = try KangarooAdapter.shipped(for: model) { return shipped }
    FileHandle.standardError.write(Data("note: no adapter ships for this model and none was given; using an untrained copy of layer \(exitLayer)'s attention (pass --adapter DIR)\n".utf8))
    return KangarooAdapter.copyingLayer(of: model, exitLayer: exitLayer)
}
