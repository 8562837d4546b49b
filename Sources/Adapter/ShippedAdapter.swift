import Foundation
import Llama

extension KangarooAdapter {
    /// The trained adapter shipped with the package for `model`'s file (matched by its fingerprint),
    /// or nil when none ships for it. Shipped adapters are folders under `Sources/Adapter/Shipped/`.
    public static func shipped(for model: LlamaModel) throws -> KangarooAdapter? {
        guard let root = Bundle.module.url(forResource: "Shipped", withExtension: nil) else { return nil }
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        for folder in folders.sorted() {
            let directory = root.appendingPathComponent(folder).path
            guard let data = FileManager.default.contents(atPath: directory + "/" + configFile),
                  let config = try? JSONDecoder().decode(AdapterConfig.self, from: data),
                  config.modelFingerprint == model.gguf.fingerprint else { continue }
            return try load(from: directory, for: model)
        }
        return nil
    }
}
