//! Which processes to trace: selectors and exclusions, compiled from the configuration and
//! matched against a process's facts. Pure: tested without any process.
//!
//! The fields of one selector must all match (AND); a process is selected when any selector
//! matches (OR) and no exclusion does. The daemon's own process is never selected.

use std::{collections::BTreeMap, ops::RangeInclusive};

use glob::{MatchOptions, Pattern};
use regex::Regex;
use serde::Deserialize;

use super::{kube::PodFacts, procfs::ProcessFacts};

/// One selector (or exclusion) as written in the configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// A name for logs and the `spanhook.selector` attribute (default: its position).
    pub name: Option<String>,
    /// Glob on the executable's path, e.g. `/srv/*/bin/*`.
    pub exe: Option<String>,
    /// Glob on the process name: `/proc/PID/comm` or the executable's file name.
    pub process_name: Option<String>,
    /// Listening TCP ports: numbers or `FIRST-LAST` ranges; any one must be open.
    pub ports: Option<Vec<PortSpec>>,
    /// Regular expression searched in the command line (arguments joined by spaces).
    pub cmdline: Option<String>,
    /// Environment variables and a glob on their value (`"*"`: set to anything).
    pub env: Option<BTreeMap<String, String>>,
    /// Glob on the container id (`"*"`: in any container).
    pub container_id: Option<String>,
    /// Glob on the cgroup path, e.g. `/kubepods.slice/*`.
    pub cgroup: Option<String>,
    /// Glob on the Kubernetes namespace of the process's pod.
    pub namespace: Option<String>,
    /// Pod labels and a glob on their value (`"*"`: set to anything).
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Pod annotations and a glob on their value.
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

/// A port or a range of ports.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PortSpec {
    /// One port.
    Port(u16),
    /// `"8080"` or `"9000-9100"`.
    Text(String),
}

/// Why a configuration's selector is invalid.
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    /// No field is set.
    #[error("selector {0} has no criteria (write `exe: \"*\"` to select every process)")]
    Empty(String),
    /// A glob does not parse.
    #[error("selector {selector}: {field} glob {glob:?}: {source}")]
    Glob {
        /// The selector.
        selector: String,
        /// The field.
        field: &'static str,
        /// The glob.
        glob: String,
        /// Cause.
        #[source]
        source: glob::PatternError,
    },
    /// The regex does not parse.
    #[error("selector {selector}: cmdline regex: {source}")]
    Regex {
        /// The selector.
        selector: String,
        /// Cause.
        #[source]
        source: Box<regex::Error>,
    },
    /// A port or range does not parse.
    #[error("selector {selector}: {spec:?} is not a port (1-65535) or a FIRST-LAST range")]
    Port {
        /// The selector.
        selector: String,
        /// What was written.
        spec: String,
    },
}

/// A compiled selector.
#[derive(Clone, Debug)]
pub struct Selector {
    /// Its name.
    pub name: String,
    exe: Option<Pattern>,
    process_name: Option<Pattern>,
    ports: Vec<RangeInclusive<u16>>,
    cmdline: Option<Regex>,
    env: Vec<(String, Pattern)>,
    container_id: Option<Pattern>,
    cgroup: Option<Pattern>,
    namespace: Option<Pattern>,
    pod_labels: Vec<(String, Pattern)>,
    pod_annotations: Vec<(String, Pattern)>,
}

/// How one selector relates to one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Every field matches.
    Yes,
    /// A field other than the ports does not match: it never will for this program.
    No,
    /// Everything matches but no selected port is listening yet.
    NotListening,
    /// The process runs in a container whose pod the Kubernetes watch does not know yet.
    PodUnknown,
}

const GLOB: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl Selector {
    /// Validates and compiles `c`; `index` names it when it has no name.
    pub fn compile(c: &SelectorConfig, index: usize, kind: &str) -> Result<Self, SelectorError> {
        let name = c.name.clone().unwrap_or_else(|| format!("{kind}[{index}]"));
        let glob = |field: &'static str, g: &Option<String>| {
            g.as_ref()
                .map(|g| {
                    Pattern::new(g).map_err(|source| SelectorError::Glob {
                        selector: name.clone(),
                        field,
                        glob: g.clone(),
                        source,
                    })
                })
                .transpose()
        };
        let exe = glob("exe", &c.exe)?;
        let process_name = glob("process_name", &c.process_name)?;
        let container_id = glob("container_id", &c.container_id)?;
        let cgroup = glob("cgroup", &c.cgroup)?;
        let cmdline = c
            .cmdline
            .as_ref()
            .map(|r| {
                Regex::new(r).map_err(|source| SelectorError::Regex {
                    selector: name.clone(),
                    source: Box::new(source),
                })
            })
            .transpose()?;
        let pairs = |field: &'static str, m: &Option<BTreeMap<String, String>>| {
            m.iter()
                .flatten()
                .map(|(k, v)| {
                    let g = Pattern::new(v).map_err(|source| SelectorError::Glob {
                        selector: name.clone(),
                        field,
                        glob: v.clone(),
                        source,
                    })?;
                    Ok((k.clone(), g))
                })
                .collect::<Result<Vec<_>, SelectorError>>()
        };
        let env = pairs("env", &c.env)?;
        let namespace = glob("namespace", &c.namespace)?;
        let pod_labels = pairs("pod_labels", &c.pod_labels)?;
        let pod_annotations = pairs("pod_annotations", &c.pod_annotations)?;
        let mut ports = Vec::new();
        for spec in c.ports.iter().flatten() {
            ports.push(parse_ports(spec).ok_or_else(|| SelectorError::Port {
                selector: name.clone(),
                spec: match spec {
                    PortSpec::Port(p) => p.to_string(),
                    PortSpec::Text(t) => t.clone(),
                },
            })?);
        }
        let empty = exe.is_none()
            && process_name.is_none()
            && container_id.is_none()
            && cgroup.is_none()
            && cmdline.is_none()
            && env.is_empty()
            && ports.is_empty()
            && namespace.is_none()
            && pod_labels.is_empty()
            && pod_annotations.is_empty();
        if empty {
            return Err(SelectorError::Empty(name));
        }
        Ok(Self {
            name,
            exe,
            process_name,
            ports,
            cmdline,
            env,
            container_id,
            cgroup,
            namespace,
            pod_labels,
            pod_annotations,
        })
    }

    /// Whether the selector looks at Kubernetes pod metadata.
    pub fn needs_pod(&self) -> bool {
        self.namespace.is_some() || !self.pod_labels.is_empty() || !self.pod_annotations.is_empty()
    }

    /// How the pod criteria relate to `p`; `Yes` when there are none.
    fn pod_fit(&self, p: &ProcessFacts) -> Fit {
        if !self.needs_pod() {
            return Fit::Yes;
        }
        let pod = match &p.pod {
            PodFacts::None => return Fit::No,
            PodFacts::Unknown => return Fit::PodUnknown,
            PodFacts::Known(m) => &m.pod,
        };
        let pairs = |want: &[(String, Pattern)], have: &BTreeMap<String, String>| {
            want.iter()
                .all(|(k, g)| have.get(k).is_some_and(|v| g.matches_with(v, GLOB)))
        };
        let fits = self
            .namespace
            .as_ref()
            .is_none_or(|g| g.matches_with(&pod.namespace, GLOB))
            && pairs(&self.pod_labels, &pod.labels)
            && pairs(&self.pod_annotations, &pod.annotations);
        if fits {
            Fit::Yes
        } else {
            Fit::No
        }
    }

    /// Whether the selector only matches processes that listen on a port.
    pub fn needs_ports(&self) -> bool {
        !self.ports.is_empty()
    }

    /// How this selector relates to `p`. Ports are read last, and only when needed.
    pub fn fit(&self, p: &ProcessFacts) -> Fit {
        let exe = p.exe.to_string_lossy();
        let static_match = self.exe.as_ref().is_none_or(|g| g.matches_with(&exe, GLOB))
            && self.process_name.as_ref().is_none_or(|g| {
                g.matches_with(&p.comm, GLOB) || g.matches_with(&p.exe_name(), GLOB)
            })
            && self
                .cmdline
                .as_ref()
                .is_none_or(|r| r.is_match(&p.cmdline.join(" ")))
            && self
                .env
                .iter()
                .all(|(k, g)| p.env(k).is_some_and(|v| g.matches_with(v, GLOB)))
            && self.container_id.as_ref().is_none_or(|g| {
                p.container
                    .container_id
                    .as_deref()
                    .is_some_and(|id| g.matches_with(id, GLOB))
            })
            && self
                .cgroup
                .as_ref()
                .is_none_or(|g| g.matches_with(&p.container.cgroup, GLOB));
        if !static_match {
            return Fit::No;
        }
        match self.pod_fit(p) {
            Fit::Yes => {}
            other => return other,
        }
        if self.ports.is_empty() {
            return Fit::Yes;
        }
        let open = p.ports();
        if self
            .ports
            .iter()
            .any(|r| open.iter().any(|port| r.contains(port)))
        {
            Fit::Yes
        } else {
            Fit::NotListening
        }
    }
}

fn parse_ports(spec: &PortSpec) -> Option<RangeInclusive<u16>> {
    let (first, last) = match spec {
        PortSpec::Port(p) => (*p, *p),
        PortSpec::Text(t) => match t.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let p = t.trim().parse().ok()?;
                (p, p)
            }
        },
    };
    (first >= 1 && first <= last).then_some(first..=last)
}

/// Process names of the node's own daemons, never traced unless `exclude_defaults: false`.
pub const SYSTEM_DAEMONS: &[&str] = &[
    "systemd",
    "systemd-*",
    "(sd-pam)",
    "init",
    "containerd",
    "containerd-shim*",
    "dockerd",
    "docker-proxy",
    "runc",
    "crun",
    "conmon",
    "crio",
    "kubelet",
    "kube-proxy",
    "sshd",
    "dbus-daemon",
    "dbus-broker*",
    "spanhook",
];

/// The outcome for one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Trace it; the selector that matched.
    Trace(String),
    /// A selector would match once the process listens on one of its ports: ask again later.
    Pending,
    /// No selector matches.
    NotSelected,
    /// An exclusion matches (its name), or it is the daemon itself.
    Excluded(String),
}

/// Selectors, exclusions and the daemon's own identity.
#[derive(Clone, Debug)]
pub struct Selection {
    include: Vec<Selector>,
    exclude: Vec<Selector>,
    own_pid: u32,
}

impl Selection {
    /// Compiles the configuration's selectors; `defaults` adds [`SYSTEM_DAEMONS`].
    pub fn new(
        include: &[SelectorConfig],
        exclude: &[SelectorConfig],
        defaults: bool,
        own_pid: u32,
    ) -> Result<Self, SelectorError> {
        let include = include
            .iter()
            .enumerate()
            .map(|(i, c)| Selector::compile(c, i, "selectors"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut exclude = exclude
            .iter()
            .enumerate()
            .map(|(i, c)| Selector::compile(c, i, "exclude"))
            .collect::<Result<Vec<_>, _>>()?;
        if defaults {
            for name in SYSTEM_DAEMONS {
                exclude.push(Selector::compile(
                    &SelectorConfig {
                        name: Some(format!("system daemon {name}")),
                        process_name: Some((*name).to_string()),
                        ..Default::default()
                    },
                    0,
                    "exclude",
                )?);
            }
        }
        Ok(Self {
            include,
            exclude,
            own_pid,
        })
    }

    /// Number of selectors (exclusions not counted).
    pub fn len(&self) -> usize {
        self.include.len()
    }

    /// Whether there is no selector at all.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty()
    }

    /// The first selector or exclusion that needs Kubernetes pod metadata, by name.
    pub fn needs_pod(&self) -> Option<&str> {
        self.include
            .iter()
            .chain(&self.exclude)
            .find(|s| s.needs_pod())
            .map(|s| s.name.as_str())
    }

    /// Decides for `p`.
    pub fn verdict(&self, p: &ProcessFacts) -> Verdict {
        if p.pid == self.own_pid {
            return Verdict::Excluded("spanhook itself".into());
        }
        let mut pending = false;
        let mut selected = None;
        for s in &self.include {
            match s.fit(p) {
                Fit::Yes => {
                    selected = Some(s.name.clone());
                    break;
                }
                Fit::NotListening | Fit::PodUnknown => pending = true,
                Fit::No => {}
            }
        }
        let Some(selected) = selected else {
            return if pending {
                Verdict::Pending
            } else {
                Verdict::NotSelected
            };
        };
        let mut undecided = false;
        for s in &self.exclude {
            match s.fit(p) {
                Fit::Yes => return Verdict::Excluded(s.name.clone()),
                // An exclusion by namespace or label may still apply: wait for the pod.
                Fit::PodUnknown => undecided = true,
                Fit::No | Fit::NotListening => {}
            }
        }
        if undecided {
            return Verdict::Pending;
        }
        Verdict::Trace(selected)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::discovery::container::ContainerInfo;

    fn facts(pid: u32, exe: &str, args: &[&str], env: &[(&str, &str)]) -> ProcessFacts {
        ProcessFacts {
            pid,
            exe: PathBuf::from(exe),
            comm: PathBuf::from(exe)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .chars()
                .take(15)
                .collect(),
            cmdline: std::iter::once(exe)
                .chain(args.iter().copied())
                .map(String::from)
                .collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            container: ContainerInfo::default(),
            ..Default::default()
        }
    }

    fn yaml(text: &str) -> Vec<SelectorConfig> {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn fields_of_one_selector_combine() {
        let s = yaml(
            r#"
- name: web
  exe: "/srv/*/server"
  cmdline: "--mode=(web|api)"
  env: { TIER: "front*" }
"#,
        );
        let sel = Selection::new(&s, &[], false, 1).unwrap();
        let good = facts(
            10,
            "/srv/a/server",
            &["--mode=api"],
            &[("TIER", "frontend")],
        );
        assert_eq!(sel.verdict(&good), Verdict::Trace("web".into()));
        let wrong_env = facts(11, "/srv/a/server", &["--mode=api"], &[("TIER", "back")]);
        assert_eq!(sel.verdict(&wrong_env), Verdict::NotSelected);
        let no_env = facts(12, "/srv/a/server", &["--mode=api"], &[]);
        assert_eq!(sel.verdict(&no_env), Verdict::NotSelected);
        let wrong_args = facts(13, "/srv/a/server", &["--mode=batch"], &[("TIER", "front")]);
        assert_eq!(sel.verdict(&wrong_args), Verdict::NotSelected);
        let wrong_path = facts(14, "/opt/server", &["--mode=web"], &[("TIER", "front")]);
        assert_eq!(sel.verdict(&wrong_path), Verdict::NotSelected);
    }

    #[test]
    fn ports_and_ranges_wait_for_the_listener() {
        let s = yaml("- ports: [8080, \"9000-9100\"]\n  process_name: \"svc-*\"\n");
        let sel = Selection::new(&s, &[], false, 1).unwrap();
        let p = || facts(20, "/bin/svc-a", &[], &[]);
        assert_eq!(sel.verdict(&p().with_ports(vec![])), Verdict::Pending);
        assert_eq!(
            sel.verdict(&p().with_ports(vec![22, 9100])),
            Verdict::Trace("selectors[0]".into())
        );
        assert_eq!(
            sel.verdict(&p().with_ports(vec![8080])),
            Verdict::Trace("selectors[0]".into())
        );
        assert_eq!(sel.verdict(&p().with_ports(vec![9101])), Verdict::Pending);
        // A process the other fields rule out is never pending.
        let other = facts(21, "/bin/db", &[], &[]).with_ports(vec![]);
        assert_eq!(sel.verdict(&other), Verdict::NotSelected);
    }

    #[test]
    fn exclusions_defaults_and_the_daemon_itself() {
        let s = yaml("- exe: \"*\"\n");
        let ex = yaml("- name: no-batch\n  cmdline: \"--batch\"\n");
        let sel = Selection::new(&s, &ex, true, 99).unwrap();
        assert_eq!(
            sel.verdict(&facts(5, "/usr/bin/app", &["--batch"], &[])),
            Verdict::Excluded("no-batch".into())
        );
        assert_eq!(
            sel.verdict(&facts(6, "/usr/lib/systemd/systemd-journald", &[], &[])),
            Verdict::Excluded("system daemon systemd-*".into())
        );
        assert_eq!(
            sel.verdict(&facts(7, "/usr/local/bin/spanhook", &["daemon"], &[])),
            Verdict::Excluded("system daemon spanhook".into())
        );
        assert_eq!(
            sel.verdict(&facts(99, "/renamed/agent", &[], &[])),
            Verdict::Excluded("spanhook itself".into())
        );
        assert_eq!(
            sel.verdict(&facts(8, "/usr/bin/app", &[], &[])),
            Verdict::Trace("selectors[0]".into())
        );
        // Without the defaults only the daemon itself stays out.
        let sel = Selection::new(&s, &[], false, 99).unwrap();
        assert_eq!(
            sel.verdict(&facts(6, "/usr/lib/systemd/systemd-journald", &[], &[])),
            Verdict::Trace("selectors[0]".into())
        );
    }

    #[test]
    fn containers_and_cgroups() {
        let id = "ab".repeat(32);
        let s = yaml(&format!(
            "- container_id: \"{}*\"\n- name: pods\n  cgroup: \"/kubepods*\"\n",
            &id[..8]
        ));
        let sel = Selection::new(&s, &[], false, 1).unwrap();
        let mut p = facts(30, "/app", &[], &[]);
        assert_eq!(sel.verdict(&p), Verdict::NotSelected);
        p.container.container_id = Some(id.clone());
        assert_eq!(sel.verdict(&p), Verdict::Trace("selectors[0]".into()));
        p.container.container_id = None;
        p.container.cgroup = "/kubepods.slice/x".into();
        assert_eq!(sel.verdict(&p), Verdict::Trace("pods".into()));
    }

    #[test]
    fn namespaces_labels_and_annotations_of_the_pod() {
        use std::sync::Arc;

        use crate::discovery::kube::{PodMatch, PodMeta};
        let s = yaml(
            "- name: shop-web\n  namespace: \"shop*\"\n  pod_labels: {tier: web}\n  pod_annotations: {trace: \"*\"}\n",
        );
        let ex = yaml("- name: canary\n  pod_labels: {track: canary}\n");
        let sel = Selection::new(&s, &ex, false, 1).unwrap();
        let pod = |ns: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]| {
            let map = |kv: &[(&str, &str)]| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            PodFacts::Known(PodMatch {
                pod: Arc::new(PodMeta {
                    namespace: ns.into(),
                    labels: map(labels),
                    annotations: map(annotations),
                    ..Default::default()
                }),
                container: None,
            })
        };
        let mut p = facts(40, "/app", &[], &[]);
        p.pod = pod("shop-eu", &[("tier", "web")], &[("trace", "yes")]);
        assert_eq!(sel.verdict(&p), Verdict::Trace("shop-web".into()));
        p.pod = pod(
            "shop-eu",
            &[("tier", "web"), ("track", "canary")],
            &[("trace", "1")],
        );
        assert_eq!(sel.verdict(&p), Verdict::Excluded("canary".into()));
        p.pod = pod("default", &[("tier", "web")], &[("trace", "yes")]);
        assert_eq!(sel.verdict(&p), Verdict::NotSelected);
        p.pod = pod("shop", &[("tier", "db")], &[("trace", "yes")]);
        assert_eq!(sel.verdict(&p), Verdict::NotSelected);
        p.pod = pod("shop", &[("tier", "web")], &[]);
        assert_eq!(sel.verdict(&p), Verdict::NotSelected);
        // In a container the watch has not seen yet: asked again later.
        p.pod = PodFacts::Unknown;
        assert_eq!(sel.verdict(&p), Verdict::Pending);
        // On the host: never in a namespace.
        p.pod = PodFacts::None;
        assert_eq!(sel.verdict(&p), Verdict::NotSelected);
        // An exclusion by label waits for the pod too, rather than trace it meanwhile.
        let any = yaml("- exe: \"*\"\n");
        let sel = Selection::new(&any, &ex, false, 1).unwrap();
        p.pod = PodFacts::Unknown;
        assert_eq!(sel.verdict(&p), Verdict::Pending);
        assert_eq!(sel.needs_pod(), Some("canary"));
    }

    #[test]
    fn invalid_selectors_are_named() {
        let err = |text: &str| {
            Selection::new(&yaml(text), &[], false, 1)
                .unwrap_err()
                .to_string()
        };
        assert!(err("- name: x\n").contains("selector x has no criteria"));
        assert!(err("- cmdline: \"(\"\n").contains("selectors[0]: cmdline regex"));
        assert!(err("- ports: [\"9-1\"]\n").contains("\"9-1\" is not a port"));
        assert!(err("- ports: [0]\n").contains("\"0\" is not a port"));
        assert!(err("- exe: \"[\"\n").contains("exe glob"));
        assert!(serde_yaml_ng::from_str::<Vec<SelectorConfig>>("- exe_path: x\n").is_err());
    }
}
