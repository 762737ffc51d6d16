//! The watch that keeps [`PodIndex`] current: one `watch` on this node's pods
//! (`fieldSelector=spec.nodeName=NODE`) through kube's watcher, which lists, watches, and
//! lists again after a lost watch, with backoff. Spans and selectors read the index; nothing
//! asks the API server per span or per process. The owner chain (a ReplicaSet's Deployment, a
//! Job's CronJob) costs one metadata GET per owner, cached.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{apps::v1::ReplicaSet, batch::v1::Job, core::v1::Pod};
use kube::{
    api::{Api, PartialObjectMeta},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{watcher, WatchStreamExt},
    Client, Config,
};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    container::ContainerInfo,
    kube::{deployment_from_replicaset, owner_attribute, PodFacts, PodIndex, PodMeta, Workload},
};

/// Owners resolved at most this many times before the cache starts over.
const OWNER_CACHE: usize = 4096;

/// How to reach the API server and which node's pods to watch.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// A kubeconfig file; `None`: the in-cluster service account, else `$KUBECONFIG` or
    /// `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, as in the pods' `spec.nodeName`.
    pub node: String,
    /// How long to wait for the first list before going on without it.
    pub sync_timeout: Duration,
}

/// Why the watch cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file cannot be read or used.
    #[error("kubernetes: kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    /// Neither in-cluster configuration nor a kubeconfig was found.
    #[error("kubernetes: no API server configuration (not in a pod, no kubeconfig): {0}; set kubernetes.kubeconfig or kubernetes.enabled: false")]
    Infer(#[source] Box<kube::config::InferConfigError>),
    /// The client cannot be built from the configuration (TLS material, proxy).
    #[error("kubernetes: cannot build a client for {server}: {source}")]
    Client {
        /// The API server.
        server: String,
        /// Cause.
        #[source]
        source: Box<kube::Error>,
    },
}

/// State the watch publishes.
#[derive(Clone, Debug, Default)]
struct WatchState {
    /// Whether a complete list has been received.
    synced: bool,
    /// The last error, until the next success.
    error: Option<String>,
}

/// A running watch of this node's pods.
pub struct PodWatch {
    index: Arc<RwLock<PodIndex>>,
    state: watch::Receiver<WatchState>,
    /// The API server's address, for messages.
    pub server: String,
    /// The node whose pods are watched.
    pub node: String,
    task: JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// Connects and starts watching; waits up to `sync_timeout` for the first list, and goes
    /// on without it (with a warning naming the last error) rather than stop tracing.
    pub async fn start(settings: &KubeSettings) -> Result<Self, KubeError> {
        let config = match &settings.kubeconfig {
            Some(path) => {
                let err = |source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source: Box::new(source),
                };
                let file = Kubeconfig::read_from(path).map_err(err)?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(err)?
            }
            None => Config::infer()
                .await
                .map_err(|e| KubeError::Infer(Box::new(e)))?,
        };
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|source| KubeError::Client {
            server: server.clone(),
            source: Box::new(source),
        })?;
        let index = Arc::new(RwLock::new(PodIndex::default()));
        let (tx, mut state) = watch::channel(WatchState::default());
        let task = tokio::spawn(run(client, settings.node.clone(), index.clone(), tx));
        let synced = tokio::time::timeout(settings.sync_timeout, state.wait_for(|s| s.synced))
            .await
            .is_ok_and(|r| r.is_ok());
        let watch = Self {
            index,
            state,
            server,
            node: settings.node.clone(),
            task,
        };
        match synced {
            true => tracing::info!(
                "kubernetes: {} pods of node {} from {}, watched",
                watch.pods(),
                watch.node,
                watch.server
            ),
            false => tracing::warn!(
                "kubernetes: no list of node {}'s pods from {} after {:?} ({}); going on, pod metadata follows when the watch succeeds",
                watch.node,
                watch.server,
                settings.sync_timeout,
                watch
                    .state
                    .borrow()
                    .error
                    .clone()
                    .unwrap_or_else(|| "no answer".into())
            ),
        }
        Ok(watch)
    }

    /// What the index knows about the pod of a process in cgroup `info`.
    pub fn facts(&self, info: &ContainerInfo) -> PodFacts {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        PodFacts::of(info, &index)
    }

    /// Number of pods known.
    pub fn pods(&self) -> usize {
        self.index.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether a complete list has been received.
    pub fn synced(&self) -> bool {
        self.state.borrow().synced
    }
}

/// The watch loop: applies every event to the index, resolving owners on the way.
async fn run(
    client: Client,
    node: String,
    index: Arc<RwLock<PodIndex>>,
    state: watch::Sender<WatchState>,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(pods, config).default_backoff().boxed();
    let mut owners = Owners::new(client);
    let mut listing: Vec<PodMeta> = Vec::new();
    let mut failing = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // The watcher retries with backoff; one warning per outage is enough.
                if !failing {
                    tracing::warn!("kubernetes: watching the pods of node {node}: {e}");
                }
                failing = true;
                state.send_modify(|s| s.error = Some(e.to_string()));
                continue;
            }
        };
        if failing {
            tracing::info!("kubernetes: watching the pods of node {node} again");
            failing = false;
            state.send_modify(|s| s.error = None);
        }
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(pod) => {
                if let Some(p) = owners.resolve(&pod).await {
                    listing.push(p);
                }
            }
            watcher::Event::InitDone => {
                let n = listing.len();
                write(&index).replace_all(std::mem::take(&mut listing));
                tracing::debug!("kubernetes: listed {n} pods of node {node}");
                state.send_modify(|s| s.synced = true);
            }
            watcher::Event::Apply(pod) => {
                if let Some(p) = owners.resolve(&pod).await {
                    write(&index).apply(p);
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    write(&index).remove(uid);
                }
            }
        }
    }
}

fn write(index: &RwLock<PodIndex>) -> std::sync::RwLockWriteGuard<'_, PodIndex> {
    index.write().unwrap_or_else(|e| e.into_inner())
}

/// An owner by (namespace, kind, name).
type OwnerKey = (String, String, String);

/// Owner chains, read once each.
struct Owners {
    client: Client,
    cache: HashMap<OwnerKey, Vec<(&'static str, String)>>,
}

impl Owners {
    fn new(client: Client) -> Self {
        Self {
            client,
            cache: HashMap::new(),
        }
    }

    /// The pod reduced to [`PodMeta`], with its workload.
    async fn resolve(&mut self, pod: &Pod) -> Option<PodMeta> {
        let mut meta = PodMeta::from_pod(pod)?;
        if let Some((kind, name)) = meta.owner.clone() {
            let key = (meta.namespace.clone(), kind, name);
            let chain = match self.cache.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = self.chain(&key.0, &key.1, &key.2, &meta).await;
                    if self.cache.len() >= OWNER_CACHE {
                        self.cache.clear();
                    }
                    self.cache.insert(key, c.clone());
                    c
                }
            };
            meta.workload = Workload { chain };
        }
        Some(meta)
    }

    async fn chain(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        pod: &PodMeta,
    ) -> Vec<(&'static str, String)> {
        let Some(attribute) = owner_attribute(kind) else {
            return Vec::new();
        };
        let mut chain = vec![(attribute, name.to_string())];
        let parent = match kind {
            "ReplicaSet" => {
                let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
                match api.get_metadata_opt(name).await {
                    Ok(meta) => controller(meta),
                    Err(e) => {
                        // Without `get` on replicasets the Deployment controller's naming
                        // rule still names the Deployment.
                        tracing::debug!("kubernetes: replicaset {namespace}/{name}: {e}");
                        deployment_from_replicaset(name, &pod.labels)
                            .map(|d| ("Deployment".to_string(), d))
                    }
                }
            }
            "Job" => {
                let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
                match api.get_metadata_opt(name).await {
                    Ok(meta) => controller(meta),
                    Err(e) => {
                        tracing::debug!("kubernetes: job {namespace}/{name}: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some((kind, name)) = parent {
            if let Some(attribute) = owner_attribute(&kind) {
                chain.push((attribute, name));
            }
        }
        chain
    }
}

/// The controller owner of an object read with `get_metadata_opt`.
fn controller<K>(meta: Option<PartialObjectMeta<K>>) -> Option<(String, String)> {
    let owners = meta?.metadata.owner_references?;
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()))
}
