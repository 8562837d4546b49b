import Foundation
import Hummingbird

/// An error answered in OpenAI's format: `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?

    public init(_ status: HTTPResponse.Status, _ message: String, type: String = "invalid_request_error",
                param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    static func invalid(_ message: String, param: String? = nil) -> APIError {
        APIError(.badRequest, message, param: param)
    }

    var response: Response {
        var error: [String: Any] = ["message": message, "type": type]
        error["param"] = param ?? NSNull()
        error["code"] = code ?? NSNull()
        var response = JSONResponse.make(["error": error], status: status)
        if status == .serviceUnavailable { response.headers[.retryAfter] = "1" }
        return response
    }
}

/// JSON bodies from Foundation values.
enum JSONResponse {
    static func data(_ object: Any) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }

    static func make(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: data(object))))
    }
}
