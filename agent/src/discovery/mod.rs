//! Daemon mode: which processes on the node to trace, and noticing them come and go.
//!
//! `config` reads the YAML file into validated settings; `selector` decides for one process
//! from what `procfs` reads about it (executable, name, command line, environment, cgroup,
//! listening ports), and `container` reads the container and pod from the cgroup path. All
//! of it is pure or reads /proc only: the kernel side (the `sched` exec/exit tracepoints) is
//! in `attach::lifecycle`, and the run loop that ties them to attach is `cli::daemon`.

pub mod config;
pub mod container;
pub mod procfs;
pub mod selector;

pub use config::{ConfigError, DaemonConfig, Settings};
pub use container::ContainerInfo;
pub use procfs::ProcessFacts;
pub use selector::{Selection, Verdict};
