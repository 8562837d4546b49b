import Foundation
import Llama

/// The folder under `Sources/Adapter/Shipped/` whose `configFile` was made for `model`'s file (by its
/// fingerprint), or nil when none ships for it.
func shippedFolder(for model: LlamaModel, configFile: String) -> String? {
    struct Fingerprint: Decodable {
        var modelFingerprint: String
        enum CodingKeys: String, CodingKey { case modelFingerprint = "model_fingerprint" }
    }
    guard let root = Bundle.module.url(forResource: "Shipped", withExtension: nil) else { return nil }
    let folders = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
    for folder in folders.sorted() {
        let directory = root.appendingPathComponent(folder).path
        guard let data = FileManager.default.contents(atPath: directory + "/" + configFile),
              let config = try? JSONDecoder().decode(Fingerprint.self, from: data),
              config.modelFingerprint == model.gguf.fingerprint else { continue }
        return directory
    }
    return nil
}

extension KangarooAdapter {
    /// The trained adapter (or, by `name`, the block drafter) shipped with the package for `model`'s
    /// file, or nil when none ships for it.
    public static func shipped(for model: LlamaModel, name: String = adapterName) throws -> KangarooAdapter? {
        try shippedFolder(for: model, configFile: name + ".json").map { try load(from: $0, for: model, name: name) }
    }
}

extension RecurrentDraftHead {
    /// The trained ReDrafter head shipped with the package for `model`'s file, or nil when none ships for it.
    public static func shipped(for model: LlamaModel) throws -> RecurrentDraftHead? {
        try shippedFolder(for: model, configFile: configFile).map { try load(from: $0, for: model) }
    }
}
