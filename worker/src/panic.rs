//! Panic capture: a hook that records the message and location of a panic in
//! user code instead of printing it, so that the coordinator can report it.

use std::any::Any;
use std::cell::RefCell;
use std::panic;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the panic hook with one that records instead of printing.
pub fn capture_panics() {
    panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
        let text = match info.location() {
            Some(loc) => format!("{message} (at {}:{})", loc.file(), loc.line()),
            None => message.to_string(),
        };
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
    }));
}

/// The message of the panic whose payload is `payload`, with its location when
/// the hook saw it.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    LAST_PANIC
        .with(|last| last.borrow_mut().take())
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_string())
}
