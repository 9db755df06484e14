//! What a failed call into a guest becomes: one typed, one-line [`CallError`].

use super::ctx::{GuestAbort, HostRefusal, MemoryLimitExceeded};
use super::limits::Limits;
use crate::error::CallError;
use crate::text::escape;
use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

/// Classifies an error from a call (or from instantiation, which runs the start function).
pub(crate) fn classify(error: wasmtime::Error, limits: &Limits) -> CallError {
    if let Some(HostRefusal(error)) = error.downcast_ref::<HostRefusal>() {
        return error.clone();
    }
    if let Some(GuestAbort(message)) = error.downcast_ref::<GuestAbort>() {
        return CallError::Panic(message.clone());
    }
    if let Some(e) = error.downcast_ref::<MemoryLimitExceeded>() {
        let wanted = Some(e.wanted);
        return CallError::MemoryLimit {
            wanted,
            limit: e.limit,
        };
    }
    if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>() {
        return CallError::Exit(*code);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout(limits.call_timeout()),
        Some(trap) => CallError::Trap(format!("{trap}{}", place(&error))),
        // Anything else (a host function's own error): its first line, escaped.
        None => {
            let text = format!("{error:#}");
            let first = text.lines().next().unwrap_or_default();
            CallError::Trap(escape(first, crate::text::MAX_GUEST_TEXT))
        }
    }
}

/// ` in `function`` for the innermost guest frame that has a name, demangled and escaped (names
/// come from the module).
fn place(error: &wasmtime::Error) -> String {
    let name = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().iter().find_map(|f| f.func_name()));
    match name {
        Some(name) => {
            let name = format!("{:#}", rustc_demangle::demangle(name));
            format!(" in `{}`", escape(&name, 200))
        }
        None => String::new(),
    }
}
