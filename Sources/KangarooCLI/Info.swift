import ArgumentParser
import Foundation
import ModelFormats

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model file's metadata and tensor table.")

    @OptionGroup var modelOptions: ModelOptions

    func run() throws {
        let gguf = try modelOptions.loadGGUF()
        writeOut("\(gguf.path)\nGGUF version \(gguf.version), \(gguf.metadata.count) metadata entries, \(gguf.tensors.count) tensors\n\n")
        for key in gguf.metadataKeys {
            var value = gguf.metadata[key]!.description
            if value.count > 200 { value = String(value.prefix(200)) + "…" }
            writeOut("\(key) = \(value.replacingOccurrences(of: "\n", with: "\\n"))\n")
        }
        writeOut("\n")
        var totalBytes = 0
        for tensor in gguf.tensors {
            totalBytes += tensor.byteCount
            let shape = tensor.shape.map(String.init).joined(separator: " × ")
            writeOut("\(tensor.name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(tensor.type.description.padding(toLength: 5, withPad: " ", startingAt: 0)) \(shape)\n")
        }
        writeOut(String(format: "\n%.1f MiB of tensor data\n", Double(totalBytes) / 1_048_576))
    }
}
