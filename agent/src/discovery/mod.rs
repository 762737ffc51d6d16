//! Daemon mode: which processes on the node to trace, and noticing them come and go.
//!
//! `config` reads the YAML file into validated settings; `selector` decides for one process
//! from what `procfs` reads about it (executable, name, command line, environment, cgroup,
//! listening ports), and `container` reads the container and pod from the cgroup path.
//! `kube` keeps this node's pods (namespace, labels, owner) matched to processes by that
//! container id, and `kube_watch` keeps it current from the API server. All of it is pure,
//! reads /proc, or talks to the API server only: the kernel side (the `sched` exec/exit
//! tracepoints) is in `attach::lifecycle`, and the run loop that ties them to attach is
//! `cli::daemon`.

pub mod config;
pub mod container;
pub mod kube;
pub mod kube_watch;
pub mod procfs;
pub mod selector;

pub use config::{ConfigError, DaemonConfig, Settings};
pub use container::ContainerInfo;
pub use procfs::ProcessFacts;
pub use selector::{Selection, Verdict};
