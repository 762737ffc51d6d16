//! Which container and which Kubernetes pod a process runs in, read from its cgroup path.
//!
//! Every container runtime names the container's cgroup after its 64-hex id, with a prefix
//! and suffix of its own: `docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`,
//! `libpod-ID.scope` (systemd cgroup driver) or a bare `ID` (cgroupfs driver). The kubelet
//! puts a pod's containers under a `pod<UID>` (cgroupfs) or `kubepods-…-pod<UID>.slice`
//! (systemd, with `_` for `-`) cgroup.

/// What a cgroup path says about its process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The process's cgroup v2 path (or the first v1 path), e.g. `/system.slice/x.service`.
    pub cgroup: String,
    /// `container.id`: the 64-hex id of the container, when the process runs in one.
    pub container_id: Option<String>,
    /// `k8s.pod.uid`, when the process runs in a Kubernetes pod.
    pub pod_uid: Option<String>,
}

impl ContainerInfo {
    /// Reads the contents of `/proc/PID/cgroup`.
    pub fn from_proc_cgroup(text: &str) -> Self {
        // cgroup v2 is the "0::" line; on a v1 or hybrid host any line carries the same path
        // shape for the container.
        let mut paths = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let id = parts.next()?;
                let _controllers = parts.next()?;
                Some((id == "0", parts.next()?.to_string()))
            })
            .collect::<Vec<_>>();
        paths.sort_by_key(|(v2, _)| !v2);
        let cgroup = paths.first().map(|(_, p)| p.clone()).unwrap_or_default();
        let container_id = paths.iter().find_map(|(_, p)| container_id(p));
        let pod_uid = paths.iter().find_map(|(_, p)| pod_uid(p));
        Self {
            cgroup,
            container_id,
            pod_uid,
        }
    }
}

/// The container id in a cgroup path: the last segment that ends in 64 hex digits.
pub fn container_id(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|segment| {
        let segment = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = segment.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase())
    })
}

/// The pod uid in a cgroup path (`pod<UID>` or `…-pod<UID>.slice`).
pub fn pod_uid(path: &str) -> Option<String> {
    path.split('/').find_map(|segment| {
        let segment = segment.strip_suffix(".slice").unwrap_or(segment);
        let at = segment.rfind("pod")?;
        let uid = segment[at + 3..].replace('_', "-");
        let is_uid = uid.len() == 36
            && uid.bytes().enumerate().all(|(i, b)| {
                matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
            });
        is_uid.then_some(uid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0d1b4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    const UID: &str = "0b6b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e";

    #[test]
    fn kubernetes_with_the_systemd_driver() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            UID.replace('-', "_")
        );
        let info = ContainerInfo::from_proc_cgroup(&text);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert!(info.cgroup.starts_with("/kubepods.slice/"));
    }

    #[test]
    fn kubernetes_with_the_cgroupfs_driver_on_cgroup_v1() {
        let text = format!(
            "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n11:memory:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        let info = ContainerInfo::from_proc_cgroup(&text);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn docker_crio_and_podman() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn a_host_process_has_no_container() {
        let info = ContainerInfo::from_proc_cgroup("0::/system.slice/sshd.service\n");
        assert_eq!(info.container_id, None);
        assert_eq!(info.pod_uid, None);
        assert_eq!(info.cgroup, "/system.slice/sshd.service");
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }
}
