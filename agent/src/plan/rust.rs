//! Rust programs: which functions to probe for each capability, chosen from a ranked list of
//! candidates by demangled path, and why the better candidates were not usable.
//!
//! The default release build keeps hyper's HTTP/1 role functions
//! (`<role::Server as Http1Transaction>::parse`/`encode` and the `Client` twins); they see the
//! raw heads at fixed argument positions, so they are first. Fat LTO with one codegen unit
//! inlines them into hyper's connection code; what survives there (`dispatch::Server::recv_msg`,
//! `Conn::write_head`, `dispatch::Client::recv_msg`) is probed instead, with probes that find
//! their values wherever LTO put them and key requests by task (ebpf/probes/src/rust/lto.rs),
//! so they need task linking.
//!
//! Limits: reqwest's call functions are inlined by fat LTO too; the call is then seen at
//! `http::uri::Uri::from_shared` (the URL parse it makes), and its errors only as a call
//! dropped without a response (`error.type` `timeout_or_canceled`, connection refused
//! included). hyper 1.1 copies the request target out of the head, which leaves the fat-LTO
//! server probe nothing to find the head by: refused (see [`lto_server_unsupported`]). A client
//! call links to the server span of the tokio task that awaits it; a call made from a task
//! the handler spawned starts its own trace.
//!
//! gRPC (tonic over h2): server RPCs at h2's stream functions (request HEADERS decoded, stream
//! accepted and its task spawned, trailers or a trailers-only response built on that task, or
//! the stream reset by its client), keyed by connection + stream id; client RPCs at tonic's
//! `GrpcConfig::prepare_request` (on the caller's task), h2's request write and response
//! HEADERS/trailers decode (on the connection's task, which give the call its stream) and
//! tonic's `Status::from_header_map` (back on the caller's task; the map names the stream, so
//! two calls awaited at once by one task, `join!`, stay apart); where `from_header_map` is
//! inlined, `Code::from_bytes`, keyed by the task alone, which cannot tell such calls apart
//! (they get no span). A call that fails without a `grpc-status` ends at `Status::from_error`
//! (and `try_from_error`, which fat LTO leaves where it inlines `from_error`). Fat LTO inlines
//! h2's trailer, response and stream-accept functions: their callers are the next candidates.
//! The probes read tonic's `Status` and http's `HeaderMap`, whose layouts changed in tonic 0.14
//! and http 1.6: the plan tells them which (see [`layout_flags`]), and refuses the `Status`
//! readers when the binary does not name those versions (see ebpf/probes/src/rust/grpc.rs).

use std::collections::BTreeSet;

use serde::Serialize;
use spanhook_common::TargetConfig;

use super::{catalog::Capability, CapabilityOutcome, CapabilityPlan, PlanOptions, TargetPlan};
use crate::{
    attach::UprobeSite,
    inspect::{
        elf::ElfFile,
        rust::{RustBinary, RustSymbols},
    },
};

/// A function one part of a capability can use.
#[derive(Debug)]
pub struct RustCandidate {
    /// The function's demangled path, without hash and generic arguments.
    pub path: &'static str,
    /// Kernel program at its entry.
    pub entry_program: Option<&'static str>,
    /// Kernel program at its return (a uretprobe: Rust does not move stacks).
    pub return_program: Option<&'static str>,
}

impl RustCandidate {
    const fn new(
        path: &'static str,
        entry_program: Option<&'static str>,
        return_program: Option<&'static str>,
    ) -> Self {
        Self {
            path,
            entry_program,
            return_program,
        }
    }
}

/// One part of a capability (e.g. "request head") and its candidates, best first.
#[derive(Debug)]
pub struct RustPart {
    /// What the part gives.
    pub role: &'static str,
    /// Without it the capability (or strategy) is not usable; otherwise it adds detail.
    pub required: bool,
    /// Probe every candidate the binary has, not only the best (the candidates are
    /// alternatives the program may take at run time, not substitutes).
    pub all: bool,
    /// Candidates, best first.
    pub candidates: &'static [RustCandidate],
}

impl RustPart {
    const fn one(role: &'static str, candidate: &'static [RustCandidate]) -> Self {
        Self {
            role,
            required: true,
            all: false,
            candidates: candidate,
        }
    }
}

/// A way to trace a capability: parts whose probes work together (they key their records
/// the same way), so a strategy is used whole or not at all.
#[derive(Debug)]
pub struct RustStrategy {
    /// Its name, for `inspect`.
    pub name: &'static str,
    /// Its parts.
    pub parts: &'static [RustPart],
}

/// A Rust capability: its strategies, best first, and parts that add detail to any of them.
#[derive(Debug)]
pub struct RustProbe {
    /// What it traces.
    pub capability: Capability,
    /// Strategies, best first.
    pub strategies: &'static [RustStrategy],
    /// Optional parts, used with whichever strategy was chosen.
    pub extras: &'static [RustPart],
    /// `TargetConfig` flags set when it is traced.
    pub flags: u32,
}

const SERVER_PARSE: &str =
    "<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse";
const SERVER_ENCODE: &str =
    "<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::encode";
const CLIENT_PARSE: &str =
    "<hyper::proto::h1::role::Client as hyper::proto::h1::Http1Transaction>::parse";
const CLIENT_ENCODE: &str =
    "<hyper::proto::h1::role::Client as hyper::proto::h1::Http1Transaction>::encode";
const SERVER_RECV: &str = "<hyper::proto::h1::dispatch::Server<S,hyper::body::incoming::Incoming> as hyper::proto::h1::dispatch::Dispatch>::recv_msg";
const CLIENT_RECV: &str =
    "<hyper::proto::h1::dispatch::Client<B> as hyper::proto::h1::dispatch::Dispatch>::recv_msg";
/// Survives fat LTO for both roles (one copy per connection type); the probe tells a response
/// head from a request head by its bytes.
const WRITE_HEAD: &str = "hyper::proto::h1::conn::Conn<I,B,T>::write_head";
const WRITE_HEAD_PROBES: RustCandidate = RustCandidate::new(
    WRITE_HEAD,
    Some("rust_h1_write_head"),
    Some("rust_h1_wrote_head"),
);

const TASK_POLL: &str = "tokio::runtime::task::raw::poll";
const H2_RECV_HEADERS: &str = "h2::proto::streams::recv::Recv::recv_headers";
const H2_SERVER_REQUEST: &str = "<h2::server::Peer as h2::proto::peer::Peer>::convert_poll_message";
const H2_TRAILERS: &str = "h2::frame::headers::Headers::trailers";
const H2_SERVER_RESPONSE: &str = "h2::server::Peer::convert_send_message";
const H2_NEXT_INCOMING: &str = "h2::proto::streams::recv::Recv::next_incoming";
const TASK_BIND: &str = "tokio::runtime::task::list::OwnedTasks<S>::bind_inner";
const H2_CLIENT_REQUEST: &str = "h2::client::Peer::convert_send_message";
const TONIC_PREPARE_REQUEST: &str = "tonic::client::grpc::GrpcConfig::prepare_request";
const TONIC_CODE_FROM_BYTES: &str = "tonic::status::Code::from_bytes";
// What fat LTO leaves of the server functions above: their callers.
const H2_STREAM_CLONE: &str =
    "<h2::proto::streams::streams::OpaqueStreamRef as core::clone::Clone>::clone";
const TONIC_ADD_HEADER: &str = "tonic::status::Status::add_header";
const H2_SEND_RESPONSE: &str = "h2::server::SendResponse<B>::send_response";
const H2_RECV_RESET: &str = "h2::proto::streams::recv::Recv::recv_reset";
const H2_RECV_TRAILERS: &str = "h2::proto::streams::recv::Recv::recv_trailers";
const TONIC_FROM_HEADER_MAP: &str = "tonic::status::Status::from_header_map";
const TONIC_FROM_ERROR: &str = "tonic::status::Status::from_error";
const TONIC_TRY_FROM_ERROR: &str = "tonic::status::Status::try_from_error";
const GRPC_STATUS_RECEIVED: &str = "grpc-status received";
/// The client call's start, in every client strategy.
const TONIC_CALL: RustPart = RustPart::one(
    "call (method, start, parent)",
    &[RustCandidate::new(
        TONIC_PREPARE_REQUEST,
        Some("rust_grpc_call"),
        Some("rust_grpc_call_ret"),
    )],
);
const H2_CLIENT_REQUEST_PROBE: RustCandidate =
    RustCandidate::new(H2_CLIENT_REQUEST, Some("rust_grpc_client_request"), None);

/// The strategy for builds whose role functions were inlined (fat LTO).
const LTO_STRATEGY: &str = "hyper connection functions (what fat LTO leaves)";

/// Why the fat-LTO server probe cannot work with this binary's hyper, if it cannot: it finds
/// the request head through the parsed request target, which hyper 1.1 copies out of the head
/// (verified with hyper 1.1.0; 1.12.0 points into it). Unknown versions are tried.
fn lto_server_unsupported(rust: &RustBinary) -> Option<String> {
    let hyper = rust.crate_version("hyper")?;
    (crate::inspect::rust::crates::compare_versions(hyper, "1.2.0") == std::cmp::Ordering::Less)
        .then(|| {
            format!(
                "hyper {hyper} copies the request target out of the request head, and with its role functions inlined (fat LTO) nothing else leads to the head: build without fat LTO, or with hyper 1.12 or newer"
            )
        })
}

/// Every Rust capability, in report order.
pub const RUST_PROBES: &[RustProbe] = &[
    RustProbe {
        capability: Capability::RustHttpServer,
        strategies: &[
            RustStrategy {
                name: "hyper role functions",
                parts: &[
                    RustPart::one(
                        "request head",
                        &[RustCandidate::new(
                            SERVER_PARSE,
                            Some("rust_h1_server_parse"),
                            None,
                        )],
                    ),
                    RustPart::one(
                        "response head",
                        &[RustCandidate::new(
                            SERVER_ENCODE,
                            Some("rust_h1_server_encode"),
                            Some("rust_h1_server_encoded"),
                        )],
                    ),
                ],
            },
            RustStrategy {
                name: LTO_STRATEGY,
                parts: &[
                    RustPart::one(
                        "request head",
                        &[RustCandidate::new(
                            SERVER_RECV,
                            Some("rust_h1_server_recv"),
                            None,
                        )],
                    ),
                    RustPart::one("response head", &[WRITE_HEAD_PROBES]),
                ],
            },
        ],
        extras: &[],
        flags: TargetConfig::FLAG_RUST_HTTP_SERVER,
    },
    RustProbe {
        capability: Capability::RustHttpClient,
        strategies: &[
            RustStrategy {
                name: "hyper role functions",
                parts: &[
                    RustPart::one(
                        "request head",
                        &[RustCandidate::new(
                            CLIENT_ENCODE,
                            Some("rust_h1_client_encode"),
                            Some("rust_h1_client_encoded"),
                        )],
                    ),
                    RustPart::one(
                        "response head",
                        &[RustCandidate::new(
                            CLIENT_PARSE,
                            Some("rust_h1_client_parse"),
                            None,
                        )],
                    ),
                ],
            },
            RustStrategy {
                name: LTO_STRATEGY,
                parts: &[
                    RustPart::one("request head", &[WRITE_HEAD_PROBES]),
                    RustPart::one(
                        "response head",
                        &[RustCandidate::new(
                            CLIENT_RECV,
                            Some("rust_h1_client_recv"),
                            None,
                        )],
                    ),
                ],
            },
        ],
        extras: &[
            RustPart {
                role: "reqwest call (URL, start, parent)",
                required: false,
                all: false,
                candidates: &[
                    RustCandidate::new(
                        "reqwest::into_url::try_uri",
                        Some("rust_reqwest_call_entry"),
                        Some("rust_reqwest_call"),
                    ),
                    // What fat LTO leaves of it: the `Uri` parse `try_uri` calls. Other
                    // callers parse origin-form targets (hyper's server) or proxy settings,
                    // which the probe tells apart: it files only absolute URLs.
                    RustCandidate::new(
                        "http::uri::Uri::from_shared",
                        Some("rust_reqwest_call_entry"),
                        Some("rust_reqwest_call"),
                    ),
                ],
            },
            RustPart {
                role: "reqwest errors",
                required: false,
                all: true,
                candidates: &[
                    RustCandidate::new(
                        "reqwest::error::Error::new",
                        None,
                        Some("rust_reqwest_error"),
                    ),
                    RustCandidate::new("reqwest::error::request", None, Some("rust_reqwest_error")),
                ],
            },
            RustPart {
                role: "reqwest calls dropped without a response (timeouts)",
                required: false,
                all: true,
                candidates: &[
                    RustCandidate::new(
                        "core::ptr::drop_in_place<reqwest::async_impl::client::Pending>",
                        Some("rust_reqwest_dropped"),
                        None,
                    ),
                    RustCandidate::new(
                        "core::ptr::drop_in_place<reqwest::async_impl::client::PendingRequest>",
                        Some("rust_reqwest_dropped"),
                        None,
                    ),
                ],
            },
        ],
        flags: TargetConfig::FLAG_RUST_HTTP_CLIENT,
    },
    RustProbe {
        capability: Capability::RustGrpcServer,
        strategies: &[RustStrategy {
            name: "h2 stream functions",
            parts: &[
                RustPart::one(
                    "connection of received HEADERS",
                    &[RustCandidate::new(
                        H2_RECV_HEADERS,
                        Some("rust_h2_recv_headers"),
                        None,
                    )],
                ),
                RustPart::one(
                    "request HEADERS (method, authority, traceparent)",
                    &[RustCandidate::new(
                        H2_SERVER_REQUEST,
                        Some("rust_h2_server_request"),
                        None,
                    )],
                ),
                RustPart::one(
                    "trailers (grpc-status)",
                    &[
                        RustCandidate::new(H2_TRAILERS, Some("rust_h2_trailers"), None),
                        // Fat LTO: tonic writing the status it sends, on the same (stream)
                        // task (in trailers, or a trailers-only response).
                        RustCandidate::new(
                            TONIC_ADD_HEADER,
                            Some("rust_grpc_trailers_entry"),
                            Some("rust_grpc_trailers"),
                        ),
                    ],
                ),
                RustPart::one(
                    "response HEADERS (trailers-only grpc-status)",
                    &[
                        RustCandidate::new(
                            H2_SERVER_RESPONSE,
                            Some("rust_h2_server_response"),
                            None,
                        ),
                        // Fat LTO: its caller, on the same (stream) task.
                        RustCandidate::new(H2_SEND_RESPONSE, Some("rust_h2_send_response"), None),
                    ],
                ),
                RustPart::one(
                    "accepted stream (the stream's task)",
                    &[
                        RustCandidate::new(
                            H2_NEXT_INCOMING,
                            Some("rust_h2_next_incoming_entry"),
                            Some("rust_h2_next_incoming"),
                        ),
                        // Fat LTO: the clone of the accepted stream's handle its caller makes.
                        RustCandidate::new(H2_STREAM_CLONE, Some("rust_h2_stream_clone"), None),
                    ],
                ),
                RustPart {
                    role: "task spawned for the stream",
                    required: true,
                    all: true,
                    candidates: &[RustCandidate::new(TASK_BIND, Some("rust_task_bind"), None)],
                },
            ],
        }],
        extras: &[RustPart {
            role: "stream reset by its client (a cancelled RPC)",
            required: false,
            all: false,
            candidates: &[RustCandidate::new(
                H2_RECV_RESET,
                Some("rust_h2_recv_reset"),
                None,
            )],
        }],
        flags: TargetConfig::FLAG_RUST_GRPC_SERVER,
    },
    RustProbe {
        capability: Capability::RustGrpcClient,
        strategies: &[
            RustStrategy {
                name: "tonic calls tied to their h2 streams",
                parts: &[
                    TONIC_CALL,
                    RustPart::one(
                        "request written (stream, authority)",
                        &[H2_CLIENT_REQUEST_PROBE],
                    ),
                    // Both roles' connection functions: a client's response HEADERS carry the
                    // status of a trailers-only response, its trailers every other.
                    RustPart::one(
                        "response HEADERS received (the stream of a trailers-only status)",
                        &[RustCandidate::new(
                            H2_RECV_HEADERS,
                            Some("rust_grpc_response_recv"),
                            None,
                        )],
                    ),
                    RustPart::one(
                        "trailers received (the stream of a status)",
                        &[RustCandidate::new(
                            H2_RECV_TRAILERS,
                            Some("rust_grpc_response_recv"),
                            None,
                        )],
                    ),
                    RustPart::one(
                        GRPC_STATUS_RECEIVED,
                        &[RustCandidate::new(
                            TONIC_FROM_HEADER_MAP,
                            Some("rust_grpc_status_map"),
                            None,
                        )],
                    ),
                ],
            },
            // Where `from_header_map` is inlined: the code it parses, with nothing to tell
            // which of a task's calls it ends, so calls awaited at once by one task get none.
            RustStrategy {
                name: "tonic calls by the caller's task",
                parts: &[
                    TONIC_CALL,
                    RustPart::one(
                        GRPC_STATUS_RECEIVED,
                        &[RustCandidate::new(
                            TONIC_CODE_FROM_BYTES,
                            Some("rust_grpc_status"),
                            None,
                        )],
                    ),
                    RustPart {
                        role: "request written (stream, authority)",
                        required: false,
                        all: false,
                        candidates: &[H2_CLIENT_REQUEST_PROBE],
                    },
                ],
            },
        ],
        extras: &[RustPart {
            role: "call failed without a grpc-status (refused, deadline)",
            required: false,
            // Fat LTO inlines `from_error` into some callers but not others; those call
            // `try_from_error`, which `from_error` calls too (the inner return ends the call,
            // the outer then finds it ended).
            all: true,
            candidates: &[
                RustCandidate::new(
                    TONIC_FROM_ERROR,
                    Some("rust_grpc_error_entry"),
                    Some("rust_grpc_error"),
                ),
                RustCandidate::new(
                    TONIC_TRY_FROM_ERROR,
                    Some("rust_grpc_error_entry"),
                    Some("rust_grpc_try_error"),
                ),
            ],
        }],
        flags: TargetConfig::FLAG_RUST_GRPC_CLIENT,
    },
    RustProbe {
        capability: Capability::RustTaskLinking,
        strategies: &[RustStrategy {
            name: "tokio task polls",
            parts: &[RustPart {
                role: "task polls",
                required: true,
                all: true,
                candidates: &[RustCandidate::new(TASK_POLL, Some("rust_task_poll"), None)],
            }],
        }],
        extras: &[],
        flags: TargetConfig::FLAG_RUST_TASKS,
    },
];

/// A candidate that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The candidate's path.
    pub symbol: String,
    /// Why it was not used.
    pub reason: String,
}

/// How one part of a capability was resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartChoice {
    /// The capability.
    pub capability: Capability,
    /// The part.
    pub role: &'static str,
    /// The function used (with the number of copies probed), if any.
    pub chosen: Option<String>,
    /// Better candidates that were not usable, and why.
    pub rejected: Vec<Rejected>,
}

/// The reason a stripped Rust binary cannot be traced, for `inspect` and `attach`.
pub const STRIPPED: &str = "the binary's symbol table was removed (`strip = \"symbols\"` or `strip -s`), so its functions cannot be found: build it with symbols kept (`strip = \"none\"` or `strip = \"debuginfo\"` in the Cargo profile; debug info is not needed), or trace it at the socket level (`--capture sockets`, which `--capture auto` falls back to)";

/// Plans the probes of a Rust binary; also returns how each part was resolved.
pub fn plan_rust(
    elf: &ElfFile,
    rust: &RustBinary,
    symbols: &RustSymbols,
    options: PlanOptions,
) -> (TargetPlan, Vec<PartChoice>) {
    let mut config = TargetConfig::empty();
    let mut sites = Vec::new();
    let mut capabilities = Vec::new();
    let mut choices = Vec::new();
    let mut warnings = Vec::new();
    for probe in RUST_PROBES {
        if rust.stripped() {
            capabilities.push(CapabilityPlan {
                capability: probe.capability,
                outcome: CapabilityOutcome::NotTraced {
                    reason: STRIPPED.to_string(),
                },
            });
            continue;
        }
        let mut planned = Vec::new();
        let mut names = Vec::new();
        let mut failure = None;
        // Candidates of better strategies that could not be used, by role.
        let mut passed_over: Vec<(&'static str, Rejected)> = Vec::new();
        let mut chosen = None;
        let mut chosen_strategy = "";
        for strategy in probe.strategies {
            let resolved: Vec<(PartChoice, PartResult)> = strategy
                .parts
                .iter()
                .map(|part| resolve_part(elf, rust, symbols, probe.capability, part))
                .collect();
            let missing: Vec<String> = strategy
                .parts
                .iter()
                .zip(&resolved)
                .filter_map(|(part, (_, r))| match r {
                    Err(reason) if part.required => Some(format!("{}: {reason}", part.role)),
                    _ => None,
                })
                .collect();
            if missing.is_empty() {
                chosen = Some(resolved);
                chosen_strategy = strategy.name;
                break;
            }
            let why = missing.join("; ");
            for (part, (choice, r)) in strategy.parts.iter().zip(&resolved) {
                match r {
                    Err(_) => {
                        passed_over.extend(choice.rejected.iter().cloned().map(|x| (part.role, x)))
                    }
                    Ok((label, _)) => passed_over.push((
                        part.role,
                        Rejected {
                            symbol: label.clone(),
                            reason: format!(
                                "present, but its strategy ({}) also needs {why}",
                                strategy.name
                            ),
                        },
                    )),
                }
            }
            if failure.is_none() {
                failure = Some(why);
            }
        }
        match chosen {
            Some(resolved) => {
                failure = None;
                for (mut choice, r) in resolved {
                    let mut earlier: Vec<Rejected> = passed_over
                        .iter()
                        .filter(|(role, _)| *role == choice.role)
                        .map(|(_, r)| r.clone())
                        .collect();
                    earlier.append(&mut choice.rejected);
                    choice.rejected = earlier;
                    if let Ok((label, part_sites)) = r {
                        names.push(label);
                        planned.extend(part_sites);
                    }
                    choices.push(choice);
                }
                for part in probe.extras {
                    let (choice, r) = resolve_part(elf, rust, symbols, probe.capability, part);
                    match r {
                        Ok((label, part_sites)) => {
                            names.push(label);
                            planned.extend(part_sites);
                        }
                        Err(reason) => warnings.push(format!(
                            "{} {}: {reason}",
                            probe.capability.name(),
                            part.role
                        )),
                    }
                    choices.push(choice);
                }
            }
            None => {
                let mut roles: Vec<&'static str> = Vec::new();
                for (role, _) in &passed_over {
                    if !roles.contains(role) {
                        roles.push(role);
                    }
                }
                for role in roles {
                    choices.push(PartChoice {
                        capability: probe.capability,
                        role,
                        chosen: None,
                        rejected: passed_over
                            .iter()
                            .filter(|(r, _)| *r == role)
                            .map(|(_, x)| x.clone())
                            .collect(),
                    });
                }
            }
        }
        if failure.is_none()
            && probe.capability == Capability::RustHttpServer
            && chosen_strategy == LTO_STRATEGY
        {
            failure = lto_server_unsupported(rust);
        }
        let nothing_to_link = probe.capability == Capability::RustTaskLinking
            && config.flags
                & (TargetConfig::FLAG_RUST_HTTP_SERVER
                    | TargetConfig::FLAG_RUST_HTTP_CLIENT
                    | TargetConfig::FLAG_RUST_GRPC_SERVER
                    | TargetConfig::FLAG_RUST_GRPC_CLIENT)
                == 0;
        if failure.is_none() && nothing_to_link {
            failure = Some(
                "no HTTP or gRPC server or client is traced, so there is nothing to link".into(),
            );
        }
        // The client's start and end are found by the caller's task.
        if failure.is_none()
            && probe.capability == Capability::RustGrpcClient
            && symbols.find(TASK_POLL).is_empty()
        {
            failure = Some(format!(
                "{TASK_POLL} is not in the symbol table: without the caller's task a call's status cannot be paired with its start"
            ));
        }
        let outcome = match failure {
            Some(reason) => CapabilityOutcome::NotTraced { reason },
            None => {
                // Two capabilities may share a function (fat LTO's `Conn::write_head` serves
                // both roles): attach each program at each place once.
                planned.retain(|p| {
                    !sites
                        .iter()
                        .any(|s: &UprobeSite| s.program == p.program && s.offset == p.offset)
                });
                let entry_offset = planned.first().map_or(0, |s: &UprobeSite| s.offset);
                let returns = planned
                    .iter()
                    .filter(|s| s.label.ends_with("(return)"))
                    .count();
                sites.extend(planned);
                config.flags |= probe.flags;
                CapabilityOutcome::Traced {
                    symbol: names.join(" + "),
                    entry_offset,
                    returns,
                }
            }
        };
        capabilities.push(CapabilityPlan {
            capability: probe.capability,
            outcome,
        });
    }
    // Propagation rides on the client's request-head probe (see ebpf/probes/src/rust/propagate.rs).
    let client = capabilities.iter().find_map(|c| match &c.outcome {
        CapabilityOutcome::Traced { entry_offset, .. }
            if c.capability == Capability::RustHttpClient =>
        {
            Some(*entry_offset)
        }
        _ => None,
    });
    let outcome = match (options.propagate, client) {
        _ if rust.stripped() => CapabilityOutcome::NotTraced {
            reason: STRIPPED.to_string(),
        },
        (false, _) => CapabilityOutcome::NotTraced {
            reason: "opt-in: pass --propagate to write traceparent into outgoing HTTP/1 requests"
                .into(),
        },
        (true, None) => CapabilityOutcome::NotTraced {
            reason: "the HTTP client is not traced".into(),
        },
        (true, Some(entry_offset)) => {
            config.flags |= TargetConfig::FLAG_PROPAGATE | TargetConfig::FLAG_RUST_PROPAGATE;
            let head = choices
                .iter()
                .find(|c| c.capability == Capability::RustHttpClient && c.role == "request head")
                .and_then(|c| c.chosen.clone())
                .unwrap_or_default();
            CapabilityOutcome::Traced {
                symbol: format!("{head} (request head → sk_msg on the socket)"),
                entry_offset,
                returns: 0,
            }
        }
    };
    capabilities.push(CapabilityPlan {
        capability: Capability::RustHttpPropagation,
        outcome,
    });
    // A binary with h2 whose gRPC could not be traced at all: say so rather than stay silent
    // (the reasons are in the capabilities).
    if !rust.stripped() && config.flags & TargetConfig::FLAG_RUST_GRPC_SERVER == 0 {
        if let Some(krate) = ["tonic", "h2"]
            .into_iter()
            .find(|k| rust.crate_version(k).is_some())
        {
            warnings.push(format!(
                "the binary contains {krate} {}, but its gRPC server functions were not found (see the grpc server capability): only its HTTP/1 traffic is traced",
                rust.crate_version(krate).unwrap_or_default()
            ));
        }
    }
    config.flags |= layout_flags(rust, config.flags);
    // The server honours incoming `traceparent` headers like the Go server.
    if config.flags & TargetConfig::FLAG_RUST_HTTP_SERVER != 0 {
        config.flags |= TargetConfig::FLAG_SERVER_TRACEPARENT;
    }
    let plan = TargetPlan {
        config,
        sites,
        capabilities,
        offsets: Vec::new(),
        warnings,
    };
    (plan, choices)
}

/// Whether the binary's `krate` is older than `than` (`None`: its version is unknown).
fn older(rust: &RustBinary, krate: &str, than: &str) -> Option<bool> {
    let v = rust.crate_version(krate)?;
    Some(crate::inspect::rust::crates::compare_versions(v, than) == std::cmp::Ordering::Less)
}

/// The flags that tell the gRPC probes the layouts they read, when gRPC is traced: tonic up to
/// 0.13 returns its `Status` by value (0.14 boxes it), and `http` 1.6 shrank `HeaderMap`.
/// An unknown version is taken to be the newest.
fn layout_flags(rust: &RustBinary, flags: u32) -> u32 {
    if flags & (TargetConfig::FLAG_RUST_GRPC_SERVER | TargetConfig::FLAG_RUST_GRPC_CLIENT) == 0 {
        return 0;
    }
    let mut out = 0;
    if older(rust, "tonic", "0.14.0") == Some(true) {
        out |= TargetConfig::FLAG_RUST_TONIC_STATUS_BY_VALUE;
    }
    if older(rust, "http", "1.6.0") != Some(true) {
        out |= TargetConfig::FLAG_RUST_HTTP_COLD_MAP;
    }
    out
}

/// Why a candidate cannot be used with this binary although its function is there: the
/// status probes read tonic's `Status`, whose layout depends on the tonic and http versions.
fn candidate_unusable(rust: &RustBinary, path: &str) -> Option<String> {
    let unknown = || {
        Some("the binary does not name its tonic and http versions, on which the layout of the `Status` it returns depends".to_string())
    };
    match path {
        TONIC_FROM_ERROR
            if rust.crate_version("tonic").is_none() || rust.crate_version("http").is_none() =>
        {
            unknown()
        }
        TONIC_TRY_FROM_ERROR => match older(rust, "tonic", "0.14.0") {
            None => unknown(),
            Some(false) => Some(format!(
                "tonic {} boxes its `Status`, and the `Result` this returns it in was not verified",
                rust.crate_version("tonic").unwrap_or_default()
            )),
            Some(true) if rust.crate_version("http").is_none() => unknown(),
            Some(true) => None,
        },
        _ => None,
    }
}

type PartResult = Result<(String, Vec<UprobeSite>), String>;

fn resolve_part(
    elf: &ElfFile,
    rust: &RustBinary,
    symbols: &RustSymbols,
    capability: Capability,
    part: &RustPart,
) -> (PartChoice, PartResult) {
    let mut rejected = Vec::new();
    let mut all_sites = Vec::new();
    let mut all_labels: Vec<String> = Vec::new();
    for c in part.candidates {
        let copies = symbols.find(c.path);
        if copies.is_empty() {
            rejected.push(Rejected {
                symbol: c.path.to_string(),
                reason: "not in the symbol table (inlined, or the program does not use it)"
                    .to_string(),
            });
            continue;
        }
        if let Some(reason) = candidate_unusable(rust, c.path) {
            rejected.push(Rejected {
                symbol: c.path.to_string(),
                reason,
            });
            continue;
        }
        let mut sites = Vec::new();
        let mut bad = None;
        let mut seen = BTreeSet::new();
        for f in copies {
            if !seen.insert(f.address) {
                continue;
            }
            let Some(offset) = elf.vaddr_to_offset(f.address) else {
                bad = Some(format!("{:#x} is not in a file-backed segment", f.address));
                break;
            };
            if let Some(program) = c.entry_program {
                sites.push(UprobeSite {
                    program,
                    offset,
                    label: format!("{} (entry)", c.path),
                    binary: None,
                });
            }
            if let Some(program) = c.return_program {
                sites.push(UprobeSite {
                    program,
                    offset,
                    label: format!("{} (return)", c.path),
                    binary: None,
                });
            }
        }
        if let Some(reason) = bad {
            rejected.push(Rejected {
                symbol: c.path.to_string(),
                reason,
            });
            continue;
        }
        let label = if seen.len() > 1 {
            format!("{} ({} copies)", c.path, seen.len())
        } else {
            c.path.to_string()
        };
        if part.all {
            all_sites.extend(sites);
            all_labels.push(label);
            continue;
        }
        let choice = PartChoice {
            capability,
            role: part.role,
            chosen: Some(label.clone()),
            rejected,
        };
        return (choice, Ok((label, sites)));
    }
    if !all_labels.is_empty() {
        let label = all_labels.join(", ");
        let choice = PartChoice {
            capability,
            role: part.role,
            chosen: Some(label.clone()),
            rejected,
        };
        return (choice, Ok((label, all_sites)));
    }
    let reason = match rejected.as_slice() {
        [] => "no candidate".to_string(),
        [only] => format!("{}: {}", only.symbol, only.reason),
        many => many
            .iter()
            .map(|r| format!("{}: {}", r.symbol, r.reason))
            .collect::<Vec<_>>()
            .join("; "),
    };
    let choice = PartChoice {
        capability,
        role: part.role,
        chosen: None,
        rejected,
    };
    (choice, Err(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::rust::{analyze, fixtures};

    fn plan_of(path: &std::path::Path) -> (RustBinary, TargetPlan, Vec<PartChoice>) {
        let elf = ElfFile::open(path).unwrap();
        let symbols = RustSymbols::read(&elf);
        let rust = analyze(&elf, &symbols).expect("a Rust binary");
        let (plan, choices) = plan_rust(&elf, &rust, &symbols, PlanOptions::default());
        (rust, plan, choices)
    }

    #[test]
    fn default_release_builds_use_the_role_functions() {
        let release: Vec<_> = fixtures::all()
            .into_iter()
            .filter(|f| f.profile == "release")
            .collect();
        assert!(!release.is_empty(), "no release fixtures built");
        for f in release {
            let (rust, plan, choices) = plan_of(&f.path);
            assert!(
                rust.crate_version("hyper").is_some(),
                "{}",
                f.path.display()
            );
            assert!(rust.rustc.is_some());
            assert!(
                plan.traces(Capability::RustHttpServer),
                "{:?}",
                plan.reasons()
            );
            let server = choices
                .iter()
                .find(|c| c.capability == Capability::RustHttpServer && c.role == "request head")
                .unwrap();
            assert_eq!(server.chosen.as_deref(), Some(SERVER_PARSE));
            assert!(server.rejected.is_empty());
            if f.program == "httpchain" {
                assert!(
                    plan.traces(Capability::RustHttpClient),
                    "{:?}",
                    plan.reasons()
                );
                assert!(plan.traces(Capability::RustTaskLinking));
            }
            // Every site is in the file, and return probes sit on function entries too.
            for s in &plan.sites {
                assert!(elf_has(&f.path, s.offset));
            }
        }
    }

    fn elf_has(path: &std::path::Path, offset: u64) -> bool {
        std::fs::metadata(path).unwrap().len() > offset
    }

    #[test]
    fn fat_lto_builds_use_what_survives_and_say_why() {
        // The HTTP fixtures (grpcchain has its own test below).
        let lto: Vec<_> = fixtures::all()
            .into_iter()
            .filter(|f| f.profile == "lto" && f.program != "grpcchain")
            .collect();
        assert!(!lto.is_empty(), "no fat-LTO fixtures built");
        for f in lto {
            let (rust, plan, choices) = plan_of(&f.path);
            let server = choices
                .iter()
                .find(|c| c.capability == Capability::RustHttpServer && c.role == "request head")
                .unwrap();
            let first = &server.rejected[0];
            assert_eq!(first.symbol, SERVER_PARSE, "{}", f.path.display());
            assert!(first.reason.contains("inlined"), "{first:?}");
            assert!(
                server
                    .chosen
                    .as_deref()
                    .is_some_and(|c| c.contains("recv_msg")),
                "{server:?}"
            );
            if lto_server_unsupported(&rust).is_some() {
                // hyper 1.1 (the oldest set): refused, with the reason.
                assert!(!plan.traces(Capability::RustHttpServer));
                assert!(
                    plan.reasons()
                        .iter()
                        .any(|r| r.contains("copies the request target")),
                    "{:?}",
                    plan.reasons()
                );
            } else {
                assert!(
                    plan.traces(Capability::RustHttpServer),
                    "{:?}",
                    plan.reasons()
                );
            }
            assert!(plan.traces(Capability::RustHttpClient));
            assert!(plan.traces(Capability::RustTaskLinking));
            // `Conn::write_head` serves both roles and is probed once.
            let mut seen = std::collections::HashSet::new();
            for s in &plan.sites {
                assert!(seen.insert((s.program, s.offset)), "{s:?} twice");
            }
        }
    }

    #[test]
    fn tonic_builds_trace_grpc_at_h2_and_tonic_functions() {
        let grpc: Vec<_> = fixtures::all()
            .into_iter()
            .filter(|f| f.program == "grpcchain" && f.profile != "stripped")
            .collect();
        // tonic's newest and oldest supported releases, each in both profiles.
        let mut seen = std::collections::BTreeSet::new();
        for f in grpc {
            let lto = f.profile == "lto";
            let (rust, plan, choices) = plan_of(&f.path);
            let tonic = rust.crate_version("tonic").expect("tonic's version");
            seen.insert((
                tonic.rsplit_once('.').unwrap().0.to_string(),
                f.profile.clone(),
            ));
            let http = rust.crate_version("http").expect("http's version");
            assert!(rust.crate_version("h2").is_some());
            for c in [
                Capability::RustGrpcServer,
                Capability::RustGrpcClient,
                Capability::RustTaskLinking,
            ] {
                assert!(plan.traces(c), "{c:?}: {:?}", plan.reasons());
            }
            let chosen = |role: &str| {
                choices
                    .iter()
                    .find(|c| c.role == role)
                    .and_then(|c| c.chosen.clone())
                    .unwrap_or_default()
            };
            assert_eq!(
                chosen("request HEADERS (method, authority, traceparent)"),
                H2_SERVER_REQUEST
            );
            assert_eq!(
                chosen("stream reset by its client (a cancelled RPC)"),
                H2_RECV_RESET
            );
            assert!(chosen("task spawned for the stream").contains("bind_inner"));
            // Fat LTO inlines h2's trailer, response and stream-accept functions: their
            // callers are probed, and `inspect` says why the better ones were passed over.
            let (trailers, response, accepted) = if lto {
                (TONIC_ADD_HEADER, H2_SEND_RESPONSE, H2_STREAM_CLONE)
            } else {
                (H2_TRAILERS, H2_SERVER_RESPONSE, H2_NEXT_INCOMING)
            };
            assert_eq!(chosen("trailers (grpc-status)"), trailers, "{f:?}");
            assert_eq!(
                chosen("response HEADERS (trailers-only grpc-status)"),
                response,
                "{f:?}"
            );
            assert_eq!(
                chosen("accepted stream (the stream's task)"),
                accepted,
                "{f:?}"
            );
            if lto {
                let part = choices
                    .iter()
                    .find(|c| c.role == "trailers (grpc-status)")
                    .unwrap();
                assert_eq!(part.rejected[0].symbol, H2_TRAILERS);
                assert!(part.rejected[0].reason.contains("inlined"));
            }
            // The client: every build keeps the functions that tie a status to its stream.
            assert_eq!(
                chosen("call (method, start, parent)"),
                TONIC_PREPARE_REQUEST
            );
            assert_eq!(
                chosen("request written (stream, authority)"),
                H2_CLIENT_REQUEST
            );
            assert_eq!(
                chosen("response HEADERS received (the stream of a trailers-only status)"),
                H2_RECV_HEADERS
            );
            assert_eq!(
                chosen("trailers received (the stream of a status)"),
                H2_RECV_TRAILERS
            );
            assert_eq!(chosen(GRPC_STATUS_RECEIVED), TONIC_FROM_HEADER_MAP, "{f:?}");
            // `try_from_error` where the status comes by value (tonic before 0.14), and said
            // why not otherwise.
            let failed = choices
                .iter()
                .find(|c| c.role == "call failed without a grpc-status (refused, deadline)")
                .unwrap();
            let chosen_failed = failed.chosen.clone().unwrap_or_default();
            assert!(chosen_failed.starts_with(TONIC_FROM_ERROR), "{failed:?}");
            let by_value = crate::inspect::rust::crates::compare_versions(tonic, "0.14.0")
                == std::cmp::Ordering::Less;
            assert_eq!(
                chosen_failed.contains(TONIC_TRY_FROM_ERROR),
                by_value,
                "{failed:?}"
            );
            if !by_value {
                assert!(
                    failed
                        .rejected
                        .iter()
                        .any(|r| r.symbol == TONIC_TRY_FROM_ERROR && r.reason.contains("boxes")),
                    "{failed:?}"
                );
            }
            // The layouts the probes are told of.
            assert_eq!(
                plan.config.flags & TargetConfig::FLAG_RUST_TONIC_STATUS_BY_VALUE != 0,
                by_value,
                "{f:?}"
            );
            let cold = crate::inspect::rust::crates::compare_versions(http, "1.6.0")
                != std::cmp::Ordering::Less;
            assert_eq!(
                plan.config.flags & TargetConfig::FLAG_RUST_HTTP_COLD_MAP != 0,
                cold,
                "{f:?}"
            );
            // gRPC is traced: no warning that it is not.
            assert!(
                !plan.warnings.iter().any(|w| w.contains("gRPC")),
                "{:?}",
                plan.warnings
            );
        }
        for tonic in ["0.12", "0.14"] {
            for profile in ["release", "lto"] {
                assert!(
                    seen.contains(&(tonic.to_string(), profile.to_string())),
                    "no grpcchain fixture with tonic {tonic} built in the {profile} profile: {seen:?}"
                );
            }
        }
    }

    #[test]
    fn stripped_builds_are_refused_with_what_to_do() {
        let stripped: Vec<_> = fixtures::all()
            .into_iter()
            .filter(|f| f.profile == "stripped")
            .collect();
        assert!(!stripped.is_empty(), "no stripped fixtures built");
        for f in stripped {
            let (rust, plan, _) = plan_of(&f.path);
            assert!(rust.stripped());
            assert!(!plan.traces_anything());
            for r in plan.reasons() {
                assert!(
                    r.contains("strip = \\\"symbols\\\"") || r.contains("strip = \"symbols\""),
                    "{r}"
                );
                assert!(r.contains("symbols kept"), "{r}");
            }
        }
    }
}
