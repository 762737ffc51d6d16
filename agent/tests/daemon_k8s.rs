//! `spanhook daemon` with Kubernetes pod metadata from a real API server (root, real eBPF).
//!
//! kube-apiserver (built from k8s.io/kubernetes by `cargo xtask test`, see xtask/src/kube.rs)
//! runs on etcd the way envtest runs them: no controllers, no kubelet, no scheduler. The test
//! creates namespaces, a ReplicaSet owned by a Deployment, and pods bound to this node whose
//! `status.containerStatuses[].containerID` names a cgroup it creates; each Go fixture is
//! started inside one of those cgroups, as a container runtime would. The daemon watches the
//! pods with the least privilege of deploy/kubernetes/rbac.yaml and must put the right `k8s.*`
//! attributes and `service.name` on every span, and select processes by namespace, pod label
//! and annotation.

mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use support::native::free_port;

use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{Namespace, Pod},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    api::{Api, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};
use serde_json::json;
use support::{
    collector::Collector, go_fixture, newest_go, otlp::Span, require_bpf, temp_dir, uprobes, Agent,
    GoServer,
};

const NODE: &str = "spanhook-test-node";
const ADMIN_TOKEN: &str = "admin-token-for-the-test";
const DAEMON_TOKEN: &str = "spanhook-daemon-token";
const ATTACH_WAIT: Duration = Duration::from_secs(30);

fn tool(var: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: this test needs {what}; run it through `cargo xtask test`, which builds it (xtask/src/kube.rs)")
    });
    assert!(path.is_file(), "{var}={} does not exist", path.display());
    path
}

/// etcd and kube-apiserver, stopped on drop.
struct ApiServer {
    etcd: Child,
    apiserver: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ApiServer {
    fn start(dir: &Path) -> ApiServer {
        let etcd_bin = tool("SPANHOOK_ETCD", "etcd");
        let apiserver_bin = tool("SPANHOOK_KUBE_APISERVER", "kube-apiserver");
        let (client, peer, port) = (free_port(), free_port(), free_port());
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let etcd = Command::new(etcd_bin)
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            .stdout(Stdio::null())
            .stderr(log("etcd.log"))
            .spawn()
            .expect("start etcd");
        // The service-account signing key, made here as envtest does.
        let key = dir.join("sa.key");
        let out = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!(
                "{ADMIN_TOKEN},admin,admin,\"system:masters\"\n{DAEMON_TOKEN},system:serviceaccount:spanhook:spanhook,spanhook,\"system:serviceaccounts,system:serviceaccounts:spanhook\"\n"
            ),
        )
        .unwrap();
        let apiserver = Command::new(apiserver_bin)
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--cert-dir")
            .arg(dir.join("certs"))
            .arg(format!("--service-account-key-file={}", key.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                key.display()
            ))
            .arg("--service-account-issuer=https://spanhook.test")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--authorization-mode=RBAC")
            .arg(format!("--token-auth-file={}", tokens.display()))
            // No controller manager runs to create each namespace's default ServiceAccount.
            .arg("--disable-admission-plugins=ServiceAccount")
            .stdout(Stdio::null())
            .stderr(log("kube-apiserver.log"))
            .spawn()
            .expect("start kube-apiserver");
        ApiServer {
            etcd,
            apiserver,
            url: format!("https://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
        }
    }

    fn logs(&self) -> String {
        let read = |n: &str| {
            let t = std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
            let tail: Vec<&str> = t.lines().rev().take(30).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!(
            "--- etcd\n{}\n--- kube-apiserver\n{}",
            read("etcd.log"),
            read("kube-apiserver.log")
        )
    }

    /// A kubeconfig with `token`. The serving certificate is the API server's own
    /// self-signed one, so verification is skipped: only the transport is under test here.
    fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: u\ncurrent-context: test\n",
            url = self.url
        )
    }

    async fn client(&self, token: &str) -> Client {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig(token)).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    /// Waits until the API server answers and serves pods.
    async fn ready(&self, client: &Client) {
        let started = Instant::now();
        loop {
            let pods: Api<Pod> = Api::all(client.clone());
            match pods.list(&Default::default()).await {
                Ok(_) => return,
                Err(e) if started.elapsed() > Duration::from_secs(90) => {
                    panic!("kube-apiserver not ready after 90 s: {e}\n{}", self.logs())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
}

/// A container's cgroup (cgroup v2, systemd driver naming), removed on drop.
struct ContainerCgroup {
    leaf: PathBuf,
    pod: PathBuf,
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified` (hybrid).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(at))
        })
        .expect("no cgroup v2 hierarchy mounted; the kubelet's cgroups need one")
}

impl ContainerCgroup {
    fn create(pod_uid: &str, container_id: &str) -> ContainerCgroup {
        let pod = cgroup2_root()
            .join("kubepods.slice")
            .join(format!("kubepods-pod{}.slice", pod_uid.replace('-', "_")));
        let leaf = pod.join(format!("cri-containerd-{container_id}.scope"));
        std::fs::create_dir_all(&leaf)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", leaf.display()));
        ContainerCgroup { leaf, pod }
    }

    /// Starts the Go fixture inside this cgroup, moved there before it execs.
    fn start(&self, binary: &Path, env: &[(&str, &str)]) -> GoServer {
        let mut cmd = Command::new(binary);
        cmd.args(["-addr", "127.0.0.1:0"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let procs = self.leaf.join("cgroup.procs");
        // SAFETY: the closure only writes a file between fork and exec, in a test.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, "0"));
        }
        GoServer::start_command(cmd)
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // The processes are killed first (GoServers drop before); a cgroup empties
        // asynchronously after its last process is reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.leaf).is_ok() || !self.leaf.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir(&self.pod);
        let _ = std::fs::remove_dir(self.pod.parent().unwrap());
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // One write: a request split over several segments races the server's single read.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A pod on this node whose one container `app` runs as `container_id`.
#[allow(clippy::too_many_arguments)]
fn pod_json(
    namespace: &str,
    name: &str,
    labels: serde_json::Value,
    annotations: serde_json::Value,
    owner: Option<(&str, &str, &str, &str)>,
) -> Pod {
    let owners = owner
        .map(|(api, kind, name, uid)| {
            json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": true}])
        })
        .unwrap_or(json!([]));
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace, "labels": labels,
            "annotations": annotations, "ownerReferences": owners
        },
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "example.com/app:1"}]
        }
    }))
    .unwrap()
}

/// Creates the pod, then writes the container id into its status as the kubelet would.
async fn create_pod(client: &Client, pod: Pod, container_id: &str) -> String {
    let ns = pod.metadata.namespace.clone().unwrap();
    let name = pod.metadata.name.clone().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {
        "phase": "Running",
        "containerStatuses": [{
            "name": "app", "image": "example.com/app:1", "imageID": "", "ready": true,
            "restartCount": 0, "containerID": format!("containerd://{container_id}"),
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        }]
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("status of pod {ns}/{name}: {e}"));
    created.metadata.uid.unwrap()
}

/// The ClusterRole and binding of deploy/kubernetes/rbac.yaml, applied as written.
async fn apply_rbac(client: &Client) {
    let path = support::root().join("deploy/kubernetes/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        match value["kind"].as_str() {
            Some("ClusterRole") => {
                let role: ClusterRole = serde_json::from_value(value).unwrap();
                Api::<ClusterRole>::all(client.clone())
                    .create(&PostParams::default(), &role)
                    .await
                    .unwrap();
            }
            Some("ClusterRoleBinding") => {
                let binding: ClusterRoleBinding = serde_json::from_value(value).unwrap();
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&PostParams::default(), &binding)
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
}

fn hex_id(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

/// The cluster, the service binaries, the containers' cgroups and the daemon's configuration.
struct Scene {
    offsets: Vec<u64>,
    ids: [String; 4],
    uids: Vec<String>,
    bins: [PathBuf; 5],
    cgroups: Vec<ContainerCgroup>,
    collector: Collector,
    config: PathBuf,
    _api: ApiServer,
}

fn scene(name: &str) -> Scene {
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let offsets = uprobes::planned_offsets(&fixture.path);
    let dir = temp_dir(name);
    let api = ApiServer::start(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(api.client(ADMIN_TOKEN));
    rt.block_on(api.ready(&admin));

    // The cluster as a kubelet and the workload controllers would have left it.
    let ids = [hex_id(0xa1), hex_id(0xb2), hex_id(0xc3), hex_id(0xd4)];
    let uids: Vec<String> = rt.block_on(async {
        apply_rbac(&admin).await;
        for ns in ["shop", "batch", "spanhook"] {
            let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
            Api::<Namespace>::all(admin.clone())
                .create(&PostParams::default(), &n)
                .await
                .unwrap();
        }
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {
                "name": "checkout-5d8f7c9b6", "namespace": "shop",
                "labels": {"pod-template-hash": "5d8f7c9b6", "app": "checkout"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": "checkout", "uid": "6a3e2f3c-1111-4c1e-9d7a-000000000001",
                    "controller": true}]
            },
            "spec": {
                "selector": {"matchLabels": {"app": "checkout"}},
                "template": {
                    "metadata": {"labels": {"app": "checkout"}},
                    "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}
                }
            }
        }))
        .unwrap();
        let rs = Api::<ReplicaSet>::namespaced(admin.clone(), "shop")
            .create(&PostParams::default(), &rs)
            .await
            .unwrap();
        let rs_uid = rs.metadata.uid.unwrap();
        let mut uids = Vec::new();
        uids.push(
            create_pod(
                &admin,
                pod_json(
                    "shop",
                    "checkout-5d8f7c9b6-x7k2p",
                    json!({"app": "checkout", "pod-template-hash": "5d8f7c9b6", "tier": "web"}),
                    json!({"spanhook.io/trace": "true"}),
                    Some(("apps/v1", "ReplicaSet", "checkout-5d8f7c9b6", &rs_uid)),
                ),
                &ids[0],
            )
            .await,
        );
        uids.push(
            create_pod(
                &admin,
                pod_json(
                    "shop",
                    "cart-0",
                    json!({"app.kubernetes.io/name": "cart", "tier": "web"}),
                    json!({"spanhook.io/trace": "true"}),
                    Some((
                        "apps/v1",
                        "StatefulSet",
                        "cart",
                        "6a3e2f3c-2222-4c1e-9d7a-000000000002",
                    )),
                ),
                &ids[1],
            )
            .await,
        );
        // Selected by namespace and label, but excluded by its annotation.
        uids.push(
            create_pod(
                &admin,
                pod_json(
                    "shop",
                    "legacy",
                    json!({"tier": "web"}),
                    json!({"spanhook.io/trace": "false"}),
                    None,
                ),
                &ids[2],
            )
            .await,
        );
        // Another namespace: not selected.
        uids.push(
            create_pod(
                &admin,
                pod_json("batch", "report", json!({"tier": "web"}), json!({}), None),
                &ids[3],
            )
            .await,
        );
        uids
    });

    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let copy = |name: &str| {
        let p = bin.join(name);
        std::fs::copy(&fixture.path, &p).unwrap();
        p
    };
    let (checkout_bin, cart_bin, legacy_bin, report_bin, host_bin) = (
        copy("checkout"),
        copy("cart"),
        copy("legacy"),
        copy("report"),
        copy("host-service"),
    );
    let cgroups: Vec<ContainerCgroup> = uids
        .iter()
        .zip(&ids)
        .map(|(uid, id)| ContainerCgroup::create(uid, id))
        .collect();

    let collector = Collector::start();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig(DAEMON_TOKEN)).unwrap();
    let config = dir.join("daemon.yaml");
    std::fs::write(
        &config,
        format!(
            r#"selectors:
  - name: shop-web
    namespace: shop
    pod_labels: {{ tier: web }}
  - name: host
    exe: "{bin}/host-*"
exclude:
  - name: opted-out
    pod_annotations: {{ spanhook.io/trace: "false" }}
kubernetes:
  enabled: true
  kubeconfig: {kubeconfig}
  node_name: {NODE}
export:
  otlp_endpoint: http://127.0.0.1:{grpc}
  otlp_protocol: grpc
"#,
            bin = bin.display(),
            kubeconfig = kubeconfig.display(),
            grpc = collector.grpc_port,
        ),
    )
    .unwrap();

    Scene {
        offsets,
        ids,
        uids,
        bins: [checkout_bin, cart_bin, legacy_bin, report_bin, host_bin],
        cgroups,
        collector,
        config,
        _api: api,
    }
}

#[test]
fn selectors_see_namespaces_labels_and_annotations_of_a_real_api_server() {
    // Root for the cgroups; no BPF: --dry-run only decides.
    require_bpf();
    let s = scene("daemon-k8s-dry");
    let [checkout_bin, cart_bin, legacy_bin, report_bin, host_bin] = &s.bins;
    let checkout = s.cgroups[0].start(checkout_bin, &[]);
    let cart = s.cgroups[1].start(cart_bin, &[]);
    let legacy = s.cgroups[2].start(legacy_bin, &[]);
    let report = s.cgroups[3].start(report_bin, &[]);
    let host = GoServer::start_command({
        let mut c = Command::new(host_bin);
        c.args(["-addr", "127.0.0.1:0"]);
        c
    });
    let out = support::run_spanhook(&[
        "daemon",
        "--config",
        s.config.to_str().unwrap(),
        "--dry-run",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("kubernetes: 4 pods of node"), "{stderr}");
    let verdict = |pid: u32| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
    };
    assert!(
        verdict(checkout.pid())
            .unwrap_or_default()
            .starts_with("trace (shop-web)"),
        "{stdout}"
    );
    assert!(
        verdict(cart.pid())
            .unwrap_or_default()
            .starts_with("trace (shop-web)"),
        "{stdout}"
    );
    assert!(
        verdict(legacy.pid())
            .unwrap_or_default()
            .starts_with("excluded (opted-out)"),
        "{stdout}"
    );
    assert_eq!(
        verdict(report.pid()),
        None,
        "another namespace: not selected\n{stdout}"
    );
    assert!(
        verdict(host.pid())
            .unwrap_or_default()
            .starts_with("trace (host)"),
        "{stdout}"
    );
    drop((checkout, cart, legacy, report, host));
}

#[test]
fn spans_carry_the_pod_of_their_process_from_a_real_api_server() {
    require_bpf();
    let Scene {
        offsets,
        ids,
        uids,
        bins: [checkout_bin, cart_bin, legacy_bin, report_bin, host_bin],
        cgroups,
        collector,
        config,
        _api: api,
    } = scene("daemon-k8s");
    // One process starts before the daemon (initial scan), the others after (exec events).
    let checkout = cgroups[0].start(&checkout_bin, &[]);
    let agent = Agent::attach(&["daemon", "--config", config.to_str().unwrap()]);
    let cart = cgroups[1].start(&cart_bin, &[]);
    let cart_named = cgroups[1].start(&cart_bin, &[("OTEL_SERVICE_NAME", "basket")]);
    let legacy = cgroups[2].start(&legacy_bin, &[]);
    let report = cgroups[3].start(&report_bin, &[]);
    let host = GoServer::start_command({
        let mut c = Command::new(&host_bin);
        c.args(["-addr", "127.0.0.1:0"]);
        c
    });
    let stderr = agent
        .stderr
        .wait_for("kubernetes: 4 pods of node", ATTACH_WAIT)
        .map(|_| ());
    assert!(
        stderr.is_some(),
        "the pod watch did not list 4 pods:\n{}\n{}",
        agent.stderr.text(),
        api.logs()
    );
    let traced = [&checkout, &cart, &cart_named, &host];
    for s in traced {
        if agent
            .stderr
            .wait_for(&format!("pid {} attached", s.pid()), ATTACH_WAIT)
            .is_none()
        {
            panic!("pid {} not attached:\n{}", s.pid(), agent.stderr.text());
        }
    }
    let mut sent: HashMap<u32, usize> = HashMap::new();
    for s in traced {
        for i in 0..6 {
            let r = http_get(s.port, &format!("/items/{i}"));
            assert!(r.starts_with("HTTP/1.0 200"), "{r}");
        }
        sent.insert(s.pid(), 6);
    }
    for s in [&legacy, &report] {
        for _ in 0..4 {
            http_get(s.port, "/hello");
        }
    }
    uprobes::assert_clean(legacy.pid(), &legacy_bin, &offsets);
    uprobes::assert_clean(report.pid(), &report_bin, &offsets);
    let expected: usize = sent.values().sum();
    collector.wait_spans(expected, Duration::from_secs(20));
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let spans = collector.wait_spans(expected, Duration::from_secs(5));
    let mut by_pid: HashMap<i64, Vec<Span>> = HashMap::new();
    for s in &spans {
        by_pid
            .entry(s.resource_int("process.pid").unwrap_or(-1))
            .or_default()
            .push(s.clone());
    }
    for pid in [legacy.pid(), report.pid()] {
        assert!(
            !by_pid.contains_key(&(pid as i64)),
            "pid {pid} traced:\n{stderr}"
        );
    }
    let one = |pid: u32| -> Span {
        let got = by_pid.get(&(pid as i64)).cloned().unwrap_or_default();
        assert_eq!(got.len(), sent[&pid], "spans of pid {pid}:\n{stderr}");
        got[0].clone()
    };
    let s = one(checkout.pid());
    let r = |s: &Span, k: &str| s.resource_str(k).map(str::to_string);
    assert_eq!(r(&s, "service.name").as_deref(), Some("checkout"));
    assert_eq!(r(&s, "k8s.namespace.name").as_deref(), Some("shop"));
    assert_eq!(
        r(&s, "k8s.pod.name").as_deref(),
        Some("checkout-5d8f7c9b6-x7k2p")
    );
    assert_eq!(r(&s, "k8s.pod.uid"), Some(uids[0].clone()));
    assert_eq!(r(&s, "k8s.container.name").as_deref(), Some("app"));
    assert_eq!(r(&s, "k8s.node.name").as_deref(), Some(NODE));
    assert_eq!(
        r(&s, "k8s.replicaset.name").as_deref(),
        Some("checkout-5d8f7c9b6")
    );
    assert_eq!(r(&s, "k8s.deployment.name").as_deref(), Some("checkout"));
    assert_eq!(r(&s, "container.id"), Some(ids[0].clone()));

    let s = one(cart.pid());
    assert_eq!(
        r(&s, "service.name").as_deref(),
        Some("cart"),
        "the app.kubernetes.io/name label"
    );
    assert_eq!(r(&s, "k8s.statefulset.name").as_deref(), Some("cart"));
    assert_eq!(r(&s, "k8s.pod.name").as_deref(), Some("cart-0"));
    assert_eq!(r(&s, "k8s.deployment.name"), None);
    let s = one(cart_named.pid());
    assert_eq!(
        r(&s, "service.name").as_deref(),
        Some("basket"),
        "OTEL_SERVICE_NAME wins"
    );
    assert_eq!(r(&s, "k8s.pod.name").as_deref(), Some("cart-0"));

    let s = one(host.pid());
    assert_eq!(r(&s, "service.name").as_deref(), Some("host-service"));
    assert_eq!(r(&s, "k8s.pod.name"), None);
    assert_eq!(spans.len(), expected);
    drop((checkout, cart, cart_named, legacy, report, host));
    drop(cgroups);
}
