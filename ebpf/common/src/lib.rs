//! The contract between spanhook's kernel probes and its user space.
//!
//! Every type that crosses the boundary — ring-buffer events, map keys and values, the slots
//! of struct-field offsets a probe reads — is defined here once, `#[repr(C)]` with explicit
//! padding and a size assertion, so the two sides cannot drift apart.
#![no_std]
#![deny(missing_docs)]

pub mod counter;
pub mod event;
pub mod field;
pub mod grpc;
pub mod h2;
pub mod inflight;
pub mod key;
pub mod process;
pub mod rust;
pub mod socket;
pub mod target;

pub use counter::Counter;
pub use event::{EventHeader, EventKind, HttpClientEvent, HttpServerEvent, Str, TraceIds};
pub use field::{GoField, OFFSET_ABSENT};
pub use grpc::{
    GrpcClientEvent, GrpcClientInflight, GrpcHeaderFieldsKey, GrpcRequestHeaders, GrpcServerEvent,
    GrpcServerInflight, GrpcStreamKey,
};
pub use h2::{H2ConnState, H2StreamKey};
pub use inflight::{HttpClientInflight, HttpServerInflight, PendingTraceparent};
pub use key::{ConnKey, ContextKey, GoidKey, GoroutineKey};
pub use process::{ProcessEvent, ProcessEventKind};
pub use rust::{
    RustClientInflight, RustEncodeStash, RustHttpClientEvent, RustHttpServerEvent, RustLearned,
    RustPtrKey, RustServerInflight,
};
pub use rust::{RustGrpcClientEvent, RustGrpcServerEvent, RustH2Key, RustH2Stash};
pub use socket::{IgnoredSock, SocketCall, SocketDataHeader, SocketRecordKind, SslCall, SslKey};
pub use target::{ArgSlot, TargetConfig};

/// Marks types as plain old data for aya's user-space map API.
#[cfg(feature = "user")]
macro_rules! pod {
    ($($ty:ty),* $(,)?) => {
        $(
            // SAFETY: every listed type is #[repr(C)], built only from integers and byte
            // arrays, with explicit padding, so any bit pattern is a valid value.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

#[cfg(feature = "user")]
pod!(
    TargetConfig,
    GoroutineKey,
    ContextKey,
    GoidKey,
    ConnKey,
    HttpServerInflight,
    HttpClientInflight,
    PendingTraceparent,
    TraceIds,
    RustPtrKey,
    RustEncodeStash,
    RustLearned,
    RustServerInflight,
    RustClientInflight,
    GrpcServerInflight,
    GrpcRequestHeaders,
    GrpcStreamKey,
    GrpcClientInflight,
    GrpcHeaderFieldsKey,
    H2StreamKey,
    H2ConnState,
);

#[cfg(feature = "user")]
pod!(IgnoredSock, SocketCall, SslCall, SslKey);
