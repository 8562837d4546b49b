import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// HTTP/1 connection rules that the server's HTTP types do not carry, so it watches the HTTP/1 parts
/// before they become HTTP types (`HTTP1ConnectionInstaller` puts it there):
/// - keep-alive: an HTTP/1.0 request without `Connection: keep-alive` (or a 1.1 request with
///   `Connection: close`) gets `Connection: close`, and the connection closes once that response is
///   written;
/// - each request must arrive whole, head to end, within the request timeout;
/// - a client that closes its side has gone: the connection closes.
final class HTTP1ConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Whether each request read and not yet answered keeps the connection open, in order.
    private var keepAlive: [Bool] = []
    /// A request must arrive whole, head to end, within this: a body trickled in byte by byte keeps
    /// the idle timer from firing, but not this one.
    private let requestTimeout: TimeAmount
    private var requestDeadline: Scheduled<Void>?

    init(requestTimeout: TimeAmount) {
        self.requestTimeout = requestTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(head):
            keepAlive.append(head.isKeepAlive)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            requestDeadline = context.eventLoop.scheduleTask(in: requestTimeout) { bound.value.close(promise: nil) }
        case .end:
            requestDeadline?.cancel()
            requestDeadline = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    /// A client that closes its side has gone (HTTP clients do not half-close and wait): the connection
    /// is closed, which cancels a generation still running for it (`ServerRequestContext`).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let closes = keepAlive.first == false
        switch unwrapOutboundIn(data) {
        case var .head(head) where closes:
            head.headers.replaceOrAdd(name: "connection", value: "close")
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            if !keepAlive.isEmpty { keepAlive.removeFirst() }
            guard closes else { return context.write(data, promise: promise) }
            let written = context.eventLoop.makePromise(of: Void.self)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
            if let promise { written.futureResult.cascade(to: promise) }
            context.writeAndFlush(data, promise: written)
        default:
            context.write(data, promise: promise)
        }
    }
}

/// Added with Hummingbird's extra handlers (which come after the HTTP/1 → HTTP types codec): puts a
/// `HTTP1ConnectionHandler` before the codec, then removes itself.
final class HTTP1ConnectionInstaller: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let requestTimeout: TimeAmount

    init(requestTimeout: TimeAmount) {
        self.requestTimeout = requestTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        if let codec = try? pipeline.handler(type: HTTP1ToHTTPServerCodec.self) {
            try? pipeline.addHandler(HTTP1ConnectionHandler(requestTimeout: requestTimeout), position: .before(codec))
        }
        pipeline.removeHandler(context: context, promise: nil)
    }
}
