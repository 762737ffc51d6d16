//! OTLP exporter settings per signal: command-line flags first, then the standard
//! `OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,}*` variables (the per-signal variable wins over the
//! general one), then the specification's defaults.

use std::{path::PathBuf, time::Duration};

use super::{otlp::OtlpProtocol, ExportError};

/// The signal an OTLP client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Spans, to `/v1/traces` or `TraceService/Export`.
    Traces,
    /// Metrics, to `/v1/metrics` or `MetricsService/Export`.
    Metrics,
}

impl Signal {
    /// The infix of the per-signal variables (`TRACES`, `METRICS`).
    pub fn env_name(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    /// The OTLP/HTTP path of the signal.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }

    /// Lowercase name for logs and labels.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }
}

/// Files of the TLS set-up, all PEM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) trusted for the server (`*_CERTIFICATE`); the system roots when unset.
    pub ca: Option<PathBuf>,
    /// Client certificate chain for mutual TLS (`*_CLIENT_CERTIFICATE`).
    pub client_cert: Option<PathBuf>,
    /// Client private key for mutual TLS (`*_CLIENT_KEY`).
    pub client_key: Option<PathBuf>,
}

/// Everything an OTLP client of one signal needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Which signal.
    pub signal: Signal,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// For http/protobuf the full URL of the signal; for gRPC the server's base URL.
    pub endpoint: String,
    /// Extra request headers (gRPC metadata).
    pub headers: Vec<(String, String)>,
    /// Time allowed for one export request.
    pub timeout: Duration,
    /// Whether request bodies are gzip-compressed.
    pub gzip: bool,
    /// TLS files (used when the endpoint is `https`).
    pub tls: TlsFiles,
}

/// Default time for one export request (`OTEL_EXPORTER_OTLP_TIMEOUT`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpSettings {
    /// Settings of `signal` from the process environment.
    pub fn from_env(
        signal: Signal,
        flag_endpoint: Option<&str>,
        flag_protocol: Option<OtlpProtocol>,
    ) -> Result<Self, ExportError> {
        Self::resolve(signal, flag_endpoint, flag_protocol, &|k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// Settings of `signal` with `env` as the environment.
    pub fn resolve(
        signal: Signal,
        flag_endpoint: Option<&str>,
        flag_protocol: Option<OtlpProtocol>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ExportError> {
        let specific = |what: &str| {
            let var = format!("OTEL_EXPORTER_OTLP_{}_{what}", signal.env_name());
            env(&var).map(|v| (var, v))
        };
        let general = |what: &str| {
            let var = format!("OTEL_EXPORTER_OTLP_{what}");
            env(&var).map(|v| (var, v))
        };
        let either = |what: &str| specific(what).or_else(|| general(what));

        let protocol = match flag_protocol {
            Some(p) => p,
            None => match either("PROTOCOL") {
                Some((var, v)) => OtlpProtocol::parse(&v).ok_or_else(|| {
                    ExportError::Config(format!(
                        "{var}={v} is not supported (use grpc or http/protobuf)"
                    ))
                })?,
                None => OtlpProtocol::HttpProtobuf,
            },
        };
        let insecure = match either("INSECURE") {
            Some((var, v)) => parse_bool(&v)
                .ok_or_else(|| ExportError::Config(format!("{var}={v} is not true or false")))?,
            None => false,
        };
        let with_scheme = |url: &str| {
            if url.contains("://") {
                url.to_string()
            } else if insecure {
                format!("http://{url}")
            } else {
                format!("https://{url}")
            }
        };
        let endpoint = match (flag_endpoint, protocol) {
            (Some(base), OtlpProtocol::Grpc) => with_scheme(base),
            (Some(base), OtlpProtocol::HttpProtobuf) => signal_url(&with_scheme(base), signal),
            (None, proto) => match (specific("ENDPOINT"), proto) {
                // A per-signal endpoint is used as given (it names the full URL).
                (Some((_, url)), _) => with_scheme(&url),
                (None, proto) => match (general("ENDPOINT"), proto) {
                    (Some((_, base)), OtlpProtocol::Grpc) => with_scheme(&base),
                    (Some((_, base)), OtlpProtocol::HttpProtobuf) => {
                        signal_url(&with_scheme(&base), signal)
                    }
                    (None, OtlpProtocol::Grpc) => "http://localhost:4317".into(),
                    (None, OtlpProtocol::HttpProtobuf) => {
                        signal_url("http://localhost:4318", signal)
                    }
                },
            },
        };
        let headers = match either("HEADERS") {
            Some((var, v)) => parse_headers(&v)
                .ok_or_else(|| ExportError::Config(format!("{var} is not a list of key=value")))?,
            None => Vec::new(),
        };
        let timeout = match either("TIMEOUT") {
            Some((var, v)) => v
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| ExportError::Config(format!("{var}={v} is not milliseconds")))?,
            None => DEFAULT_TIMEOUT,
        };
        let gzip = match either("COMPRESSION") {
            Some((var, v)) => match v.trim() {
                "gzip" => true,
                "none" => false,
                _ => {
                    return Err(ExportError::Config(format!(
                        "{var}={v} is not supported (use gzip or none)"
                    )))
                }
            },
            None => false,
        };
        let tls = TlsFiles {
            ca: either("CERTIFICATE").map(|(_, v)| PathBuf::from(v)),
            client_cert: either("CLIENT_CERTIFICATE").map(|(_, v)| PathBuf::from(v)),
            client_key: either("CLIENT_KEY").map(|(_, v)| PathBuf::from(v)),
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(ExportError::Config(
                "mutual TLS needs both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY".into(),
            ));
        }
        Ok(OtlpSettings {
            signal,
            protocol,
            endpoint,
            headers,
            timeout,
            gzip,
            tls,
        })
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

/// `base` with the signal's path appended unless it already ends with it.
pub fn signal_url(base: &str, signal: Signal) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(signal.http_path()) {
        base.to_string()
    } else {
        format!("{base}{}", signal.http_path())
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// `k1=v1,k2=v2` with percent-encoded values (the W3C baggage format the spec uses).
pub fn parse_headers(v: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, val) = item.split_once('=')?;
        let k = k.trim();
        if k.is_empty() {
            return None;
        }
        out.push((k.to_ascii_lowercase(), percent_decode(val.trim())));
    }
    Some(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_follow_the_specification() {
        let s = OtlpSettings::resolve(Signal::Traces, None, None, &env(&[])).unwrap();
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert!(!s.gzip);
        let m = OtlpSettings::resolve(Signal::Metrics, None, Some(OtlpProtocol::Grpc), &env(&[]))
            .unwrap();
        assert_eq!(m.endpoint, "http://localhost:4317");
    }

    #[test]
    fn per_signal_variables_win_and_are_used_as_given() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/custom"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,B=x%20y"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "t=2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
        ];
        let t = OtlpSettings::resolve(Signal::Traces, None, None, &env(&vars)).unwrap();
        assert_eq!(t.endpoint, "http://c:4318/v1/traces");
        assert_eq!(t.headers, vec![("t".into(), "2".into())]);
        assert_eq!(t.timeout, Duration::from_millis(2500));
        assert!(!t.gzip);
        let m = OtlpSettings::resolve(Signal::Metrics, None, None, &env(&vars)).unwrap();
        assert_eq!(m.endpoint, "http://m:9/custom");
        assert_eq!(
            m.headers,
            vec![("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
        assert!(m.gzip);
    }

    #[test]
    fn flags_win_over_the_environment() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ];
        let t = OtlpSettings::resolve(
            Signal::Traces,
            Some("http://x:1"),
            Some(OtlpProtocol::HttpProtobuf),
            &env(&vars),
        )
        .unwrap();
        assert_eq!(t.endpoint, "http://x:1/v1/traces");
        assert_eq!(t.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn scheme_less_endpoints_use_tls_unless_insecure() {
        let secure = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ];
        let s = OtlpSettings::resolve(Signal::Traces, None, None, &env(&secure)).unwrap();
        assert_eq!(s.endpoint, "https://c:4317");
        assert!(s.is_tls());
        let insecure = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ];
        let s = OtlpSettings::resolve(Signal::Traces, None, None, &env(&insecure)).unwrap();
        assert_eq!(s.endpoint, "http://c:4317");
    }

    #[test]
    fn bad_values_are_named() {
        let vars = [("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")];
        let e = OtlpSettings::resolve(Signal::Traces, None, None, &env(&vars)).unwrap_err();
        assert!(e
            .to_string()
            .contains("OTEL_EXPORTER_OTLP_COMPRESSION=zstd"));
        let vars = [("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")];
        assert!(OtlpSettings::resolve(Signal::Traces, None, None, &env(&vars)).is_err());
    }
}
