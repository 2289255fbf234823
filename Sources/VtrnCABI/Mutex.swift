import VtrnDevice

/// VtrnDevice's `Mutex` (the standard one, visible to ThreadSanitizer) shadows Synchronization's here.
typealias Mutex = VtrnDevice.Mutex
