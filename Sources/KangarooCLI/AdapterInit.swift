import Adapter
import ArgumentParser
import Foundation

/// Writes an untrained adapter: the paper's initialisation (a copy of the exit layer's attention) or
/// random weights (a baseline that drafts badly).
struct AdapterInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adapter-init",
        abstract: "Write an untrained Kangaroo adapter (copy of a layer's attention, or random) to a folder.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Layers 0..<N feed the adapter.")
    var exitLayer = 2

    @Option(help: "Random weights with this seed instead of a copy of layer --exit-layer's attention.")
    var random: UInt64?

    @Option(help: "Folder to write adapter.json and adapter.safetensors into.")
    var output: String

    func run() throws {
        let (model, _) = try modelOptions.load()
        guard (1...model.config.layerCount).contains(exitLayer) else {
            throw ValidationError("--exit-layer must be between 1 and \(model.config.layerCount)")
        }
        let adapter = random.map { KangarooAdapter.random(for: model, exitLayer: exitLayer, seed: $0) }
            ?? KangarooAdapter.copyingLayer(of: model, exitLayer: exitLayer)
        try adapter.save(to: output)
        writeOut("wrote \(output)/\(KangarooAdapter.adapterName).safetensors (\(adapter.config.origin))\n")
    }
}
