import Dispatch

/// Splits loops across a fixed number of threads.
///
/// `threads == 1` runs inline. Work is cut into one contiguous range per thread, so which thread
/// computes an element never changes the arithmetic that produces it.
public final class ThreadPool: @unchecked Sendable {
    public let threads: Int

    public init(threads: Int) {
        precondition(threads >= 1, "a thread pool needs at least one thread")
        self.threads = threads
    }

    /// The pool the kernels use unless told otherwise; `setShared` changes its size (CLI `--threads`).
    public private(set) nonisolated(unsafe) static var shared = ThreadPool(threads: defaultThreadCount)

    public static var defaultThreadCount: Int { max(1, min(ProcessInfoCores.count, 8)) }

    public static func setShared(threads: Int) { shared = ThreadPool(threads: threads) }

    /// Calls `body(range, worker)` on disjoint ranges covering `0..<count`, in parallel when there is
    /// enough work (at least `grain` items per thread). `worker` is in `0..<threads` and distinct for
    /// ranges that run at the same time, so it can index per-thread scratch space.
    public func parallelFor(_ count: Int, grain: Int, _ body: (Range<Int>, Int) -> Void) {
        let parts = min(threads, max(1, count / max(grain, 1)))
        if parts <= 1 {
            body(0..<count, 0)
            return
        }
        withoutActuallyEscaping(body) { body in
            // The ranges are disjoint; callers guarantee that what `body` writes does not overlap.
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                body(part * count / parts ..< (part + 1) * count / parts, part)
            }
        }
    }
}

enum ProcessInfoCores {
    static var count: Int {
        #if canImport(Glibc)
        return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #else
        return 1
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#endif
