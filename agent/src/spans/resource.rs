//! The resource of a traced process: who emitted the spans.

use std::path::{Path, PathBuf};

use opentelemetry::KeyValue;

/// Name reported as `telemetry.distro.name`.
pub const DISTRO_NAME: &str = "spanhook";

/// Resource attributes of one traced process, built once when it is attached.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessResource {
    /// Process id.
    pub pid: u32,
    /// `service.name`.
    pub service_name: String,
    /// Every attribute, `service.name` included.
    pub attributes: Vec<KeyValue>,
}

/// The language runtime of a traced process, for `process.runtime.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// `process.runtime.name`, e.g. "go".
    pub name: &'static str,
    /// `process.runtime.version`, e.g. "go1.22.12".
    pub version: String,
}

impl ProcessResource {
    /// Reads `/proc/PID` for the executable and the target's own `OTEL_SERVICE_NAME` and
    /// `OTEL_RESOURCE_ATTRIBUTES`; `extra` (the agent's `OTEL_RESOURCE_ATTRIBUTES`) fills in
    /// what the target does not set.
    pub fn from_proc(pid: u32, runtime: Option<Runtime>, extra: &[(String, String)]) -> Self {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let exe = std::fs::read_link(proc.join("exe")).unwrap_or_default();
        let environ = std::fs::read(proc.join("environ")).unwrap_or_default();
        let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
        Self::from_parts(pid, &exe, &environ, &cmdline, runtime, extra)
    }

    /// Builds the resource from already-read process facts.
    pub fn from_parts(
        pid: u32,
        exe: &Path,
        environ: &[u8],
        cmdline: &[u8],
        runtime: Option<Runtime>,
        extra: &[(String, String)],
    ) -> Self {
        let env = |key: &str| -> Option<String> {
            environ.split(|&b| b == 0).find_map(|entry| {
                let entry = std::str::from_utf8(entry).ok()?;
                let (k, v) = entry.split_once('=')?;
                (k == key).then(|| v.to_string())
            })
        };
        let mut from_target = env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|s| parse_resource_attributes(&s))
            .unwrap_or_default();
        // An exe whose file was replaced reads as "path (deleted)".
        let exe_path = exe
            .to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string();
        let exe_name = Path::new(&exe_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .or_else(|| {
                let first = cmdline.split(|&b| b == 0).next()?;
                Path::new(std::str::from_utf8(first).ok()?)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| format!("pid-{pid}"));
        let service_name = env("OTEL_SERVICE_NAME")
            .filter(|s| !s.is_empty())
            .or_else(|| {
                from_target
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| exe_name.clone());
        from_target.retain(|(k, _)| k != "service.name");

        let mut attributes = vec![
            KeyValue::new("service.name", service_name.clone()),
            KeyValue::new("process.pid", pid as i64),
            KeyValue::new("process.executable.name", exe_name),
            KeyValue::new("telemetry.distro.name", DISTRO_NAME),
            KeyValue::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
        ];
        if !exe_path.is_empty() {
            attributes.push(KeyValue::new("process.executable.path", exe_path));
        }
        if let Some(rt) = runtime {
            attributes.push(KeyValue::new("process.runtime.name", rt.name));
            attributes.push(KeyValue::new("process.runtime.version", rt.version));
            attributes.push(KeyValue::new("telemetry.sdk.language", rt.name));
        }
        for (k, v) in from_target.into_iter().chain(extra.iter().cloned()) {
            if !attributes.iter().any(|kv| kv.key.as_str() == k) {
                attributes.push(KeyValue::new(k, v));
            }
        }
        Self {
            pid,
            service_name,
            attributes,
        }
    }

    /// Adds the attributes of the process's Kubernetes pod (`k8s.*`), over any the agent's
    /// own `OTEL_RESOURCE_ATTRIBUTES` set (in a DaemonSet those describe the agent's pod) but
    /// not over the process's own, and takes `service_name` from the pod unless the process names itself
    /// (`OTEL_SERVICE_NAME` or `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`, read from
    /// `environ`).
    pub fn add_pod(
        &mut self,
        environ: &[(String, String)],
        attributes: &[(&'static str, String)],
        service_name: &str,
    ) {
        let env = |key: &str| {
            environ
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let own = env("OTEL_RESOURCE_ATTRIBUTES")
            .map(parse_resource_attributes)
            .unwrap_or_default();
        let own_key = |key: &str| own.iter().any(|(k, _)| k == key);
        let named =
            env("OTEL_SERVICE_NAME").is_some_and(|s| !s.is_empty()) || own_key("service.name");
        if !named && !service_name.is_empty() {
            self.service_name = service_name.to_string();
            for kv in &mut self.attributes {
                if kv.key.as_str() == "service.name" {
                    kv.value = service_name.to_string().into();
                }
            }
        }
        for (key, value) in attributes {
            if own_key(key) {
                continue;
            }
            match self
                .attributes
                .iter_mut()
                .find(|kv| kv.key.as_str() == *key)
            {
                Some(kv) => kv.value = value.clone().into(),
                None => self.attributes.push(KeyValue::new(*key, value.clone())),
            }
        }
    }

    /// The value of attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&opentelemetry::Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }
}

/// Parses the `OTEL_RESOURCE_ATTRIBUTES` format: `key=value` pairs separated by commas, values
/// percent-encoded. Malformed pairs are skipped, as the specification asks.
pub fn parse_resource_attributes(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            Some((k.to_string(), percent_decode(v.trim())?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(r: &ProcessResource, key: &str) -> Option<String> {
        r.attribute(key).map(|v| v.as_str().into_owned())
    }

    #[test]
    fn service_name_defaults_to_the_executable() {
        let r = ProcessResource::from_parts(
            7,
            Path::new("/srv/bin/checkout"),
            b"PATH=/bin\0",
            b"",
            None,
            &[],
        );
        assert_eq!(r.service_name, "checkout");
        assert_eq!(
            attr(&r, "process.executable.name").as_deref(),
            Some("checkout")
        );
        assert_eq!(
            attr(&r, "process.executable.path").as_deref(),
            Some("/srv/bin/checkout")
        );
        assert_eq!(
            r.attribute("process.pid"),
            Some(&opentelemetry::Value::I64(7))
        );
        assert_eq!(
            attr(&r, "telemetry.distro.name").as_deref(),
            Some("spanhook")
        );
    }

    #[test]
    fn target_environment_names_the_service() {
        let env = b"A=1\0OTEL_SERVICE_NAME=payments\0OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod,team=a%2Cb\0";
        let extra = vec![
            ("team".to_string(), "ignored".to_string()),
            ("region".to_string(), "eu".to_string()),
        ];
        let r = ProcessResource::from_parts(
            9,
            Path::new("/app (deleted)"),
            env,
            b"",
            Some(Runtime {
                name: "go",
                version: "go1.22.12".into(),
            }),
            &extra,
        );
        assert_eq!(r.service_name, "payments");
        assert_eq!(
            attr(&r, "deployment.environment.name").as_deref(),
            Some("prod")
        );
        assert_eq!(attr(&r, "team").as_deref(), Some("a,b"));
        assert_eq!(attr(&r, "region").as_deref(), Some("eu"));
        assert_eq!(attr(&r, "process.executable.path").as_deref(), Some("/app"));
        assert_eq!(
            attr(&r, "process.runtime.version").as_deref(),
            Some("go1.22.12")
        );
    }

    #[test]
    fn resource_attributes_can_name_the_service() {
        let r = ProcessResource::from_parts(
            1,
            Path::new("/x"),
            b"OTEL_RESOURCE_ATTRIBUTES=service.name=cart\0",
            b"",
            None,
            &[],
        );
        assert_eq!(r.service_name, "cart");
        assert_eq!(
            r.attributes
                .iter()
                .filter(|kv| kv.key.as_str() == "service.name")
                .count(),
            1
        );
    }

    #[test]
    fn a_pod_names_the_service_unless_the_process_does() {
        let pod = [
            ("k8s.namespace.name", "shop".to_string()),
            ("k8s.pod.name", "cart-0".to_string()),
        ];
        let mut r = ProcessResource::from_parts(3, Path::new("/app/server"), b"", b"", None, &[]);
        r.add_pod(&[], &pod, "cart");
        assert_eq!(r.service_name, "cart");
        assert_eq!(attr(&r, "service.name").as_deref(), Some("cart"));
        assert_eq!(attr(&r, "k8s.pod.name").as_deref(), Some("cart-0"));
        let env = [("OTEL_SERVICE_NAME".to_string(), "basket".to_string())];
        let mut r = ProcessResource::from_parts(
            3,
            Path::new("/app/server"),
            b"OTEL_SERVICE_NAME=basket\0",
            b"",
            None,
            &[("k8s.pod.name".into(), "the-agents-own-pod".into())],
        );
        r.add_pod(&env, &pod, "cart");
        assert_eq!(r.service_name, "basket");
        assert_eq!(attr(&r, "service.name").as_deref(), Some("basket"));
        assert_eq!(attr(&r, "k8s.pod.name").as_deref(), Some("cart-0"));
        assert_eq!(
            r.attributes
                .iter()
                .filter(|kv| kv.key.as_str() == "k8s.pod.name")
                .count(),
            1
        );
        // The process's own attributes win.
        let env = [(
            "OTEL_RESOURCE_ATTRIBUTES".to_string(),
            "service.name=bag,k8s.namespace.name=mine".to_string(),
        )];
        let mut r = ProcessResource::from_parts(
            3,
            Path::new("/app/server"),
            b"OTEL_RESOURCE_ATTRIBUTES=service.name=bag,k8s.namespace.name=mine\0",
            b"",
            None,
            &[],
        );
        r.add_pod(&env, &pod, "cart");
        assert_eq!(r.service_name, "bag");
        assert_eq!(attr(&r, "k8s.namespace.name").as_deref(), Some("mine"));
    }

    #[test]
    fn malformed_pairs_are_skipped() {
        assert_eq!(
            parse_resource_attributes("a=1,broken,=x,b=%zz,c=3"),
            vec![
                ("a".to_string(), "1".to_string()),
                ("c".to_string(), "3".to_string())
            ]
        );
    }
}
