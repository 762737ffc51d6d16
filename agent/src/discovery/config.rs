//! The daemon's YAML configuration: a strict serde struct (unknown keys are errors), then
//! validated into [`Settings`] in one step, so a typo fails at start, never silently.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::selector::{Selection, SelectorConfig, SelectorError};

/// The configuration file as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// A process matching any of these is traced.
    #[serde(default)]
    pub selectors: Vec<SelectorConfig>,
    /// A process matching any of these is never traced.
    #[serde(default)]
    pub exclude: Vec<SelectorConfig>,
    /// Never trace the node's own daemons (systemd, containerd, kubelet, sshd, …).
    #[serde(default = "yes")]
    pub exclude_defaults: bool,
    /// Where spans go (as `attach`'s flags; the `OTEL_EXPORTER_OTLP_*` variables apply when
    /// no endpoint is set here or on the command line).
    #[serde(default)]
    pub export: ExportConfig,
    /// Write `traceparent` into outgoing requests (needs CAP_NET_ADMIN).
    #[serde(default)]
    pub propagate: bool,
    /// `auto`, `symbols` or `sockets`, as `attach --capture`.
    #[serde(default)]
    pub capture: Option<String>,
    /// Health, readiness and metrics endpoint.
    #[serde(default)]
    pub health: HealthConfig,
    /// How new processes are noticed.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// Pod metadata from the Kubernetes API server.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// Kubernetes pod metadata: on when set so, or by default when running in a pod.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// `true`, `false`, or unset: on when `KUBERNETES_SERVICE_HOST` is set (in a pod).
    pub enabled: Option<bool>,
    /// A kubeconfig file (default: the pod's service account, else `$KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (default: `$NODE_NAME` or `$K8S_NODE_NAME`, which the DaemonSet
    /// sets from `spec.nodeName`, else the host name).
    pub node_name: Option<String>,
    /// How long to wait at start for the first list of pods, in seconds.
    pub sync_timeout_secs: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            kubeconfig: None,
            node_name: None,
            sync_timeout_secs: 15,
        }
    }
}

impl KubernetesConfig {
    /// Whether metadata is wanted, given `$KUBERNETES_SERVICE_HOST`.
    pub fn wanted(&self, in_cluster: bool) -> bool {
        self.enabled.unwrap_or(in_cluster)
    }
}

fn yes() -> bool {
    true
}

/// Exporters.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// OTLP endpoint, e.g. `http://collector:4317`.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub otlp_protocol: Option<String>,
    /// OTLP/JSON lines file.
    pub output_file: Option<PathBuf>,
    /// Print traces to standard output.
    #[serde(default)]
    pub console: bool,
}

/// The HTTP endpoint serving `/healthz`, `/readyz` and `/metrics`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Address to listen on, e.g. `0.0.0.0:9464`; none: no endpoint.
    pub listen: Option<String>,
}

/// Discovery settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// `events` (exec/exit tracepoints, falling back to polling if they cannot attach) or
    /// `poll` (/proc only).
    pub mode: DiscoveryMode,
    /// How often /proc is scanned in `poll` mode, in milliseconds.
    pub poll_interval_ms: u64,
    /// How often /proc is rescanned in `events` mode, as a safety net, in seconds.
    pub rescan_interval_secs: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mode: DiscoveryMode::Events,
            poll_interval_ms: 250,
            rescan_interval_secs: 30,
        }
    }
}

/// How processes are discovered.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    /// `sched_process_exec` / `sched_process_exit` tracepoints.
    Events,
    /// Scanning /proc.
    Poll,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown keys.
    #[error("{path}: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// Cause, with line and column.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A selector is invalid.
    #[error("{path}: {source}")]
    Selector {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: SelectorError,
    },
    /// No selector.
    #[error("{0}: no selectors: the daemon would trace nothing (add `selectors:`)")]
    NoSelectors(PathBuf),
    /// The health address does not parse.
    #[error("{path}: health.listen {value:?} is not an address like 0.0.0.0:9464")]
    Listen {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
    },
    /// An interval of zero.
    #[error("{0}: discovery intervals must be above zero")]
    Interval(PathBuf),
    /// A selector needs pod metadata that is turned off.
    #[error("{path}: selector {selector} uses namespace or pod labels/annotations, which need `kubernetes.enabled: true` (or running in a pod)")]
    NeedsKubernetes {
        /// The file.
        path: PathBuf,
        /// The selector.
        selector: String,
    },
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file it came from.
    pub path: PathBuf,
    /// What it says, as written.
    pub raw: DaemonConfig,
    /// Compiled selectors.
    pub selection: Selection,
    /// Health endpoint address.
    pub listen: Option<SocketAddr>,
    /// Poll period in `poll` mode.
    pub poll_interval: Duration,
    /// Rescan period in `events` mode.
    pub rescan_interval: Duration,
    /// Whether pod metadata is read from the Kubernetes API server.
    pub kubernetes: bool,
}

impl DaemonConfig {
    /// Parses YAML text.
    pub fn parse(path: PathBuf, text: &str) -> Result<Self, ConfigError> {
        serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Yaml { path, source })
    }

    /// Reads and parses a file.
    pub fn read(path: PathBuf) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates: selectors compile, addresses parse, intervals are positive.
    pub fn validate(
        self,
        path: PathBuf,
        listen: Option<&str>,
        own_pid: u32,
    ) -> Result<Settings, ConfigError> {
        if self.selectors.is_empty() {
            return Err(ConfigError::NoSelectors(path));
        }
        let selection = Selection::new(
            &self.selectors,
            &self.exclude,
            self.exclude_defaults,
            own_pid,
        )
        .map_err(|source| ConfigError::Selector {
            path: path.clone(),
            source,
        })?;
        let listen = match listen.or(self.health.listen.as_deref()) {
            Some(value) => Some(value.parse().map_err(|_| ConfigError::Listen {
                path: path.clone(),
                value: value.to_string(),
            })?),
            None => None,
        };
        if self.discovery.poll_interval_ms == 0 || self.discovery.rescan_interval_secs == 0 {
            return Err(ConfigError::Interval(path));
        }
        let kubernetes = self
            .kubernetes
            .wanted(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some());
        if let (false, Some(selector)) = (kubernetes, selection.needs_pod()) {
            return Err(ConfigError::NeedsKubernetes {
                selector: selector.to_string(),
                path,
            });
        }
        Ok(Settings {
            poll_interval: Duration::from_millis(self.discovery.poll_interval_ms),
            rescan_interval: Duration::from_secs(self.discovery.rescan_interval_secs),
            path,
            raw: self,
            selection,
            listen,
            kubernetes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<Settings, ConfigError> {
        DaemonConfig::parse("d.yaml".into(), text)?.validate("d.yaml".into(), None, 1)
    }

    #[test]
    fn a_full_configuration_reads() {
        let s = settings(
            r#"
selectors:
  - name: shop
    process_name: "shop-*"
    ports: [8080, "9000-9100"]
  - container_id: "*"
exclude:
  - cmdline: "--dry-run"
exclude_defaults: false
export:
  otlp_endpoint: http://collector:4317
  otlp_protocol: grpc
  output_file: /var/log/spans.jsonl
propagate: true
capture: symbols
health:
  listen: 0.0.0.0:9464
discovery:
  mode: poll
  poll_interval_ms: 100
kubernetes:
  enabled: true
  kubeconfig: /etc/kubeconfig
  node_name: node-a
"#,
        )
        .unwrap();
        assert_eq!(s.selection.len(), 2);
        assert_eq!(s.listen, Some("0.0.0.0:9464".parse().unwrap()));
        assert_eq!(s.poll_interval, Duration::from_millis(100));
        assert_eq!(s.rescan_interval, Duration::from_secs(30));
        assert_eq!(s.raw.discovery.mode, DiscoveryMode::Poll);
        assert_eq!(s.raw.export.otlp_protocol.as_deref(), Some("grpc"));
        assert!(s.raw.propagate && !s.raw.exclude_defaults);
        assert!(s.kubernetes);
        assert_eq!(s.raw.kubernetes.node_name.as_deref(), Some("node-a"));
        assert_eq!(s.raw.kubernetes.sync_timeout_secs, 15);
    }

    #[test]
    fn pod_selectors_need_kubernetes() {
        let s = settings(
            "selectors: [{namespace: shop, pod_labels: {tier: web}}]\nkubernetes: {enabled: true}\n",
        )
        .unwrap();
        assert_eq!(s.selection.needs_pod(), Some("selectors[0]"));
        let e = settings("selectors: [{exe: x}]\nexclude: [{name: sys, namespace: kube-system}]\nkubernetes: {enabled: false}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("selector sys uses namespace"), "{e}");
        assert!(KubernetesConfig::default().wanted(true));
        assert!(!KubernetesConfig::default().wanted(false));
    }

    #[test]
    fn defaults_are_safe() {
        let s = settings("selectors: [{exe: \"/srv/*\"}]\n").unwrap();
        assert!(s.raw.exclude_defaults);
        assert!(!s.raw.propagate);
        assert_eq!(s.raw.discovery.mode, DiscoveryMode::Events);
        assert_eq!(s.listen, None);
    }

    #[test]
    fn mistakes_fail_with_the_place() {
        let e = settings("selectors: [{exe: x}]\nexporter: {}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d.yaml") && e.contains("unknown field `exporter`"),
            "{e}"
        );
        let e = settings("selectors: []\n").unwrap_err().to_string();
        assert!(e.contains("no selectors"), "{e}");
        let e = settings("selectors: [{exe: x}]\nhealth: {listen: nowhere}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("health.listen \"nowhere\""), "{e}");
        let e = settings("selectors: [{exe: x}]\ndiscovery: {mode: inotify}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `inotify`"), "{e}");
    }
}
