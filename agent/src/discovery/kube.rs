//! Kubernetes pod metadata, kept as a small index of this node's pods and matched to local
//! processes by the container id and pod uid their cgroup path names. Pure: the watch that
//! fills it is `kube_watch`; this file is tested without any API server.
//!
//! Only what spans and selectors use is kept (names, labels, annotations without the
//! `last-applied-configuration` blob, the owner and the container ids); the rest of the pod
//! object, managed fields included, is dropped as soon as it is read.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;

use super::container::ContainerInfo;

/// The annotation `kubectl apply` writes: the whole manifest again, never useful here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The label the recommended labels use for an application's name.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";

/// The workload a pod belongs to, walked up from its controller owner reference: a pod of a
/// Deployment is owned by a ReplicaSet that the Deployment owns, a pod of a CronJob by a Job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// `(attribute, name)` from the pod's owner up, e.g. `k8s.replicaset.name` then
    /// `k8s.deployment.name`.
    pub chain: Vec<(&'static str, String)>,
}

impl Workload {
    /// The top-most owner's name (the Deployment rather than its ReplicaSet).
    pub fn name(&self) -> Option<&str> {
        self.chain.last().map(|(_, n)| n.as_str())
    }
}

/// The resource attribute of an owner kind, `None` for kinds the conventions do not name.
pub fn owner_attribute(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "ReplicaSet" => "k8s.replicaset.name",
        "Deployment" => "k8s.deployment.name",
        "StatefulSet" => "k8s.statefulset.name",
        "DaemonSet" => "k8s.daemonset.name",
        "Job" => "k8s.job.name",
        "CronJob" => "k8s.cronjob.name",
        _ => return None,
    })
}

/// A pod's controller owner reference, as `(kind, name)`.
pub type OwnerRef = (String, String);

/// What is kept of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`, without `last-applied-configuration`.
    pub annotations: BTreeMap<String, String>,
    /// The controller owner reference (`controller: true`), or the first owner.
    pub owner: Option<OwnerRef>,
    /// The owner chain, resolved by the watch (see [`Workload`]).
    pub workload: Workload,
    /// `(container id, container name)` of every container, init and ephemeral ones too,
    /// ids without their `containerd://` scheme.
    pub containers: Vec<(String, String)>,
}

impl PodMeta {
    /// Keeps what is needed of `pod`; `None` without a uid (never the case from a server).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone()?;
        let mut annotations = meta.annotations.clone().unwrap_or_default();
        annotations.remove(LAST_APPLIED);
        let owners = meta.owner_references.as_deref().unwrap_or_default();
        let owner = owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or(owners.first())
            .map(|o| (o.kind.clone(), o.name.clone()));
        let mut containers = Vec::new();
        if let Some(status) = &pod.status {
            let all = [
                &status.container_statuses,
                &status.init_container_statuses,
                &status.ephemeral_container_statuses,
            ];
            for s in all.into_iter().flatten().flatten() {
                if let Some(id) = s.container_id.as_deref().and_then(bare_container_id) {
                    containers.push((id, s.name.clone()));
                }
            }
        }
        Some(Self {
            uid,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations,
            owner,
            workload: Workload::default(),
            containers,
        })
    }

    /// `service.name` from the pod when the process does not name itself: the
    /// `app.kubernetes.io/name` label, else the workload's name, else the pod's.
    pub fn service_name(&self) -> &str {
        self.labels
            .get(APP_NAME_LABEL)
            .map(String::as_str)
            .or(self.workload.name())
            .unwrap_or(&self.name)
    }
}

/// `containerd://ID`, `cri-o://ID`, `docker://ID` → `ID` (lowercase), `None` when empty.
pub fn bare_container_id(id: &str) -> Option<String> {
    let id = id.rsplit("://").next().unwrap_or(id).trim();
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

/// A local process matched to its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMatch {
    /// The pod.
    pub pod: Arc<PodMeta>,
    /// The container's name, when the process's container id is in the pod's status.
    pub container: Option<String>,
}

impl PodMatch {
    /// Resource attributes: `k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`,
    /// `k8s.container.name`, `k8s.node.name` and the owner chain.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let p = &self.pod;
        let mut out = vec![
            ("k8s.namespace.name", p.namespace.clone()),
            ("k8s.pod.name", p.name.clone()),
            ("k8s.pod.uid", p.uid.clone()),
        ];
        if let Some(c) = &self.container {
            out.push(("k8s.container.name", c.clone()));
        }
        if let Some(n) = &p.node {
            out.push(("k8s.node.name", n.clone()));
        }
        out.extend(p.workload.chain.iter().cloned());
        out
    }
}

/// This node's pods, by uid and by container id.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: HashMap<String, Arc<PodMeta>>,
    containers: HashMap<String, (String, String)>,
}

impl PodIndex {
    /// Adds or replaces a pod.
    pub fn apply(&mut self, pod: PodMeta) {
        self.remove(&pod.uid.clone());
        for (id, name) in &pod.containers {
            self.containers
                .insert(id.clone(), (pod.uid.clone(), name.clone()));
        }
        self.pods.insert(pod.uid.clone(), Arc::new(pod));
    }

    /// Forgets a pod.
    pub fn remove(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for (id, _) in &old.containers {
                if self.containers.get(id).is_some_and(|(u, _)| u == uid) {
                    self.containers.remove(id);
                }
            }
        }
    }

    /// Replaces everything (after the watch listed the pods again).
    pub fn replace_all(&mut self, pods: Vec<PodMeta>) {
        self.pods.clear();
        self.containers.clear();
        for p in pods {
            self.apply(p);
        }
    }

    /// Number of pods.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The pod of a process, by its container id first (which also names the container),
    /// else by the pod uid of its cgroup path.
    pub fn lookup(&self, info: &ContainerInfo) -> Option<PodMatch> {
        if let Some((uid, name)) = info
            .container_id
            .as_ref()
            .and_then(|id| self.containers.get(id))
        {
            if let Some(pod) = self.pods.get(uid) {
                return Some(PodMatch {
                    pod: pod.clone(),
                    container: Some(name.clone()),
                });
            }
        }
        let pod = self.pods.get(info.pod_uid.as_ref()?)?;
        Some(PodMatch {
            pod: pod.clone(),
            container: None,
        })
    }
}

/// What is known about a process's pod, for selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PodFacts {
    /// Not in a container or pod, or Kubernetes metadata is off.
    #[default]
    None,
    /// In a container or pod that the watch does not know (yet): the kubelet writes the
    /// container id into the pod's status just after the container starts.
    Unknown,
    /// Matched.
    Known(PodMatch),
}

/// How long a process in a container may stay unknown to a synced pod watch before it is
/// taken to run outside Kubernetes (a container another runtime started on the node): the
/// kubelet records a container's id in its pod's status within seconds of starting it.
pub const POD_GRACE: Duration = Duration::from_secs(30);

impl PodFacts {
    /// `Unknown` becomes `None` once the watch has synced and the process has run for
    /// [`POD_GRACE`]: pod selectors then do not select it and pod exclusions do not exclude
    /// it, where it would otherwise wait for a pod forever.
    pub fn settle(self, age: Duration, synced: bool) -> Self {
        match self {
            Self::Unknown if synced && age >= POD_GRACE => Self::None,
            other => other,
        }
    }

    /// Looks `info` up in `index`.
    pub fn of(info: &ContainerInfo, index: &PodIndex) -> Self {
        match index.lookup(info) {
            Some(m) => Self::Known(m),
            None if info.container_id.is_some() || info.pod_uid.is_some() => Self::Unknown,
            None => Self::None,
        }
    }

    /// The pod, when known.
    pub fn pod(&self) -> Option<&PodMeta> {
        match self {
            Self::Known(m) => Some(&m.pod),
            _ => None,
        }
    }
}

/// The Deployment's name from a ReplicaSet's, when the ReplicaSet itself cannot be read: the
/// Deployment controller names it `DEPLOYMENT-HASH` with the pod's `pod-template-hash` label.
pub fn deployment_from_replicaset(
    replicaset: &str,
    labels: &BTreeMap<String, String>,
) -> Option<String> {
    let hash = labels.get("pod-template-hash")?;
    replicaset
        .strip_suffix(hash.as_str())?
        .strip_suffix('-')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0d1b4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    const UID: &str = "0b6b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e";

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn checkout() -> PodMeta {
        PodMeta::from_pod(&pod(serde_json::json!({
            "metadata": {
                "name": "checkout-7d4b9c6f5-x2x9q", "namespace": "shop", "uid": UID,
                "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d4b9c6f5"},
                "annotations": {LAST_APPLIED: "{…}", "team": "payments"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "1"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d4b9c6f5",
                     "uid": "2", "controller": true}
                ],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {
                "containerStatuses": [
                    {"name": "app", "containerID": format!("containerd://{ID}"), "image": "i",
                     "imageID": "", "ready": true, "restartCount": 0},
                    {"name": "sidecar", "image": "i", "imageID": "", "ready": false, "restartCount": 0}
                ],
                "initContainerStatuses": [
                    {"name": "init", "containerID": format!("cri-o://{}", "ab".repeat(32)),
                     "image": "i", "imageID": "", "ready": false, "restartCount": 0}
                ]
            }
        })))
        .unwrap()
    }

    #[test]
    fn a_pod_is_reduced_to_what_spans_and_selectors_use() {
        let p = checkout();
        assert_eq!(p.uid, UID);
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str()),
            ("shop", "checkout-7d4b9c6f5-x2x9q")
        );
        assert_eq!(p.node.as_deref(), Some("node-a"));
        assert_eq!(
            p.owner,
            Some(("ReplicaSet".into(), "checkout-7d4b9c6f5".into()))
        );
        assert_eq!(
            p.annotations.len(),
            1,
            "last-applied-configuration is dropped"
        );
        // The sidecar has no id yet: it has not started.
        assert_eq!(
            p.containers,
            vec![
                (ID.to_string(), "app".to_string()),
                ("ab".repeat(32), "init".to_string())
            ]
        );
        assert_eq!(p.service_name(), "checkout");
    }

    #[test]
    fn processes_match_by_container_id_then_pod_uid() {
        let mut index = PodIndex::default();
        index.apply(checkout());
        let by_container = ContainerInfo {
            container_id: Some(ID.into()),
            pod_uid: Some(UID.into()),
            ..Default::default()
        };
        let m = index.lookup(&by_container).unwrap();
        assert_eq!(m.container.as_deref(), Some("app"));
        let attrs = m.attributes();
        assert!(attrs.contains(&("k8s.container.name", "app".into())));
        assert!(attrs.contains(&("k8s.node.name", "node-a".into())));
        assert!(attrs.contains(&("k8s.pod.uid", UID.into())));
        // A container the status does not list yet still finds its pod by uid.
        let new_container = ContainerInfo {
            container_id: Some("cd".repeat(32)),
            pod_uid: Some(UID.into()),
            ..Default::default()
        };
        let m = index.lookup(&new_container).unwrap();
        assert_eq!(m.container, None);
        assert_eq!(m.pod.name, "checkout-7d4b9c6f5-x2x9q");
        // Docker outside Kubernetes: a container id only, unknown to the index.
        let docker = ContainerInfo {
            container_id: Some("ef".repeat(32)),
            ..Default::default()
        };
        assert_eq!(PodFacts::of(&docker, &index), PodFacts::Unknown);
        // Still unknown after the grace with the watch synced: a container of no pod.
        let unknown = || PodFacts::of(&docker, &index);
        assert_eq!(unknown().settle(POD_GRACE, true), PodFacts::None);
        assert_eq!(
            unknown().settle(POD_GRACE - Duration::from_secs(1), true),
            PodFacts::Unknown
        );
        assert_eq!(unknown().settle(POD_GRACE * 10, false), PodFacts::Unknown);
        assert_eq!(
            PodFacts::of(&ContainerInfo::default(), &index),
            PodFacts::None
        );
        index.remove(UID);
        assert!(index.lookup(&by_container).is_none() && index.is_empty());
    }

    #[test]
    fn a_pod_update_replaces_its_containers() {
        let mut index = PodIndex::default();
        let mut p = checkout();
        index.apply(p.clone());
        p.containers = vec![("cd".repeat(32), "app".into())];
        index.apply(p);
        let old = ContainerInfo {
            container_id: Some(ID.into()),
            ..Default::default()
        };
        assert!(
            index.lookup(&old).is_none(),
            "the restarted container's old id is gone"
        );
        index.replace_all(vec![]);
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn service_name_falls_back_to_the_workload_then_the_pod() {
        let mut p = checkout();
        p.labels.remove(APP_NAME_LABEL);
        assert_eq!(p.service_name(), "checkout-7d4b9c6f5-x2x9q");
        p.workload.chain = vec![
            ("k8s.replicaset.name", "checkout-7d4b9c6f5".into()),
            ("k8s.deployment.name", "checkout".into()),
        ];
        assert_eq!(p.service_name(), "checkout");
        assert_eq!(
            deployment_from_replicaset("checkout-7d4b9c6f5", &p.labels).as_deref(),
            Some("checkout")
        );
        assert_eq!(deployment_from_replicaset("other", &p.labels), None);
        assert_eq!(owner_attribute("StatefulSet"), Some("k8s.statefulset.name"));
        assert_eq!(owner_attribute("Node"), None);
        assert_eq!(bare_container_id("docker://ABC").as_deref(), Some("abc"));
        assert_eq!(bare_container_id("containerd://"), None);
    }
}
