//! Which probe goes at which file offset, and what the probes must know — decided from the
//! inspected binary alone, so a plan is deterministic and printable before anything is
//! attached.

pub mod catalog;
pub mod offsets;
pub mod resolve;
pub mod rust;
pub mod socket;
pub mod target;

pub use catalog::Capability;
pub use offsets::{OffsetSource, OffsetTable};
pub use resolve::{
    plan_go, CapabilityOutcome, CapabilityPlan, FieldOffset, PlanError, PlanOptions, TargetPlan,
};
pub use socket::CaptureMode;
pub use target::{plan_pid, Language, PlannedTarget, TargetError};
