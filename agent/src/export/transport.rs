//! One OTLP client per signal, over HTTP/protobuf (reqwest) or gRPC (tonic), both on rustls:
//! TLS with a given CA or the system roots, mutual TLS, headers, gzip and a per-request
//! timeout. Answers are sorted into retryable and permanent as the OTLP specification lists
//! them; [`send_with_retry`] retries the retryable ones with exponential backoff and jitter.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::{
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    trace::v1::ExportTraceServiceResponse,
};
use prost::Message;
use rand::Rng;
use tonic::{
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::{
    config::{OtlpSettings, Signal, TlsFiles},
    otlp::OtlpProtocol,
    ExportError,
};

/// What one export request carries.
pub enum Payload {
    /// Spans: an `ExportTraceServiceRequest` already encoded (see [`super::encode`]).
    Traces(bytes::Bytes),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
}

impl Payload {
    fn encode(&self) -> bytes::Bytes {
        match self {
            Payload::Traces(r) => r.clone(),
            Payload::Metrics(r) => r.encode_to_vec().into(),
        }
    }
}

/// The gRPC method spans are sent to.
const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A gRPC codec that sends a message encoded beforehand and decodes the answer with prost:
/// the spans are encoded once per batch, not again for every attempt.
#[derive(Debug)]
struct PreEncoded<R>(std::marker::PhantomData<fn() -> R>);

impl<R> Default for PreEncoded<R> {
    fn default() -> Self {
        PreEncoded(std::marker::PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> tonic::codec::Codec for PreEncoded<R> {
    type Encode = bytes::Bytes;
    type Decode = R;
    type Encoder = PreEncoded<R>;
    type Decoder = PreEncoded<R>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded::default()
    }
}

impl<R> tonic::codec::Encoder for PreEncoded<R> {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl<R: Message + Default + Send + 'static> tonic::codec::Decoder for PreEncoded<R> {
    type Item = R;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<R>, tonic::Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable answer: {e}")))
    }
}

/// The receiver accepted the request; `rejected` items of it were refused (partial success).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Spans or data points the receiver says it rejected.
    pub rejected: i64,
    /// Its message about them.
    pub message: String,
}

/// Why one request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendError {
    /// Whether the specification allows sending the same request again.
    pub retryable: bool,
    /// A short, stable name for counting (`http_503`, `grpc_unavailable`, `transport`).
    pub kind: String,
    /// The whole story, for logs.
    pub message: String,
    /// How long the server asked us to wait (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

/// Whether an OTLP/HTTP status may be retried: 429, 502, 503, 504.
pub fn http_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Whether a gRPC status may be retried (the OTLP specification's list; RESOURCE_EXHAUSTED
/// too, since the Collector answers it when its queue is full and it is temporary).
pub fn grpc_retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Cancelled
            | DeadlineExceeded
            | ResourceExhausted
            | Aborted
            | OutOfRange
            | Unavailable
            | DataLoss
    )
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

enum Inner {
    Http(HttpClient),
    Grpc(Channel),
}

/// A client for one signal.
pub struct OtlpClient {
    settings: OtlpSettings,
    inner: Inner,
}

impl OtlpClient {
    /// Builds the client; gRPC connects lazily, so a receiver that is down at start is fine.
    /// Must run inside a tokio runtime.
    pub fn build(settings: OtlpSettings) -> Result<Self, ExportError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let err = |message: String| ExportError::Otlp {
            endpoint: settings.endpoint.clone(),
            message,
        };
        let inner = match settings.protocol {
            OtlpProtocol::HttpProtobuf => {
                let tls = rustls_config(&settings.tls).map_err(err)?;
                let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(settings.timeout.min(Duration::from_secs(5))));
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https);
                Inner::Http(client)
            }
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
                    .map_err(|e| err(format!("not a URL: {e}")))?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout.min(Duration::from_secs(5)));
                if settings.is_tls() {
                    endpoint = endpoint
                        .tls_config(tonic_tls(&settings.tls).map_err(err)?)
                        .map_err(|e| err(format!("tls: {e}")))?;
                }
                Inner::Grpc(endpoint.connect_lazy())
            }
        };
        Ok(Self { settings, inner })
    }

    /// The settings the client was built from.
    pub fn settings(&self) -> &OtlpSettings {
        &self.settings
    }

    /// Sends one request once.
    pub async fn send(&self, payload: &Payload) -> Result<Accepted, SendError> {
        match &self.inner {
            Inner::Http(client) => self.send_http(client, payload).await,
            Inner::Grpc(channel) => self.send_grpc(channel.clone(), payload).await,
        }
    }

    async fn send_http(
        &self,
        client: &HttpClient,
        payload: &Payload,
    ) -> Result<Accepted, SendError> {
        let transport = |kind: &str, message: String| SendError {
            retryable: true,
            kind: kind.into(),
            message,
            retry_after: None,
        };
        let mut body = payload.encode();
        let mut request = http::Request::post(&self.settings.endpoint)
            .header("content-type", "application/x-protobuf");
        if self.settings.gzip {
            body = gzip(&body).into();
            request = request.header("content-encoding", "gzip");
        }
        for (k, v) in &self.settings.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request
            .body(http_body_util::Full::new(body))
            .map_err(|e| SendError {
                retryable: false,
                kind: "invalid_request".into(),
                message: e.to_string(),
                retry_after: None,
            })?;
        let timeout = self.settings.timeout;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| {
                let (kind, message) = describe_transport_error(&e);
                transport(kind, message)
            })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, SendError>((status, retry_after, bytes))
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| transport("timeout", format!("no answer in {timeout:?}")))
            .and_then(|r| r);
        let (status, retry_after, bytes) = match answer {
            Ok(a) => a,
            Err(mut e) => {
                if e.kind == "transport" && self.settings.is_tls() {
                    if let Some(tls) = diagnose_tls(&self.settings, b"http/1.1").await {
                        e.kind = "tls".into();
                        e.message = tls;
                    }
                }
                return Err(e);
            }
        };
        if (200..300).contains(&status) {
            return Ok(partial_success(self.settings.signal, &bytes));
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        Err(SendError {
            retryable: http_retryable(status),
            kind: format!("http_{status}"),
            message: format!("HTTP {status}: {}", text.trim()),
            retry_after,
        })
    }

    async fn send_grpc(&self, channel: Channel, payload: &Payload) -> Result<Accepted, SendError> {
        let result = match payload {
            Payload::Traces(body) => {
                let mut client = tonic::client::Grpc::new(channel);
                if self.settings.gzip {
                    // A gRPC server answers in the encoding of the request (the Collector
                    // does): the client must accept gzip to read the answer.
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let sent = async {
                    client.ready().await.map_err(|e| {
                        tonic::Status::unknown(format!("Service was not ready: {e}"))
                    })?;
                    client
                        .unary(
                            self.grpc_request(body.clone()),
                            http::uri::PathAndQuery::from_static(TRACE_EXPORT_PATH),
                            PreEncoded::<ExportTraceServiceResponse>::default(),
                        )
                        .await
                };
                sent.await.map(|resp| {
                    resp.into_inner()
                        .partial_success
                        .map(|p| Accepted {
                            rejected: p.rejected_spans,
                            message: p.error_message,
                        })
                        .unwrap_or_default()
                })
            }
            Payload::Metrics(r) => {
                let mut client = MetricsServiceClient::new(channel);
                if self.settings.gzip {
                    // A gRPC server answers in the encoding of the request (the Collector
                    // does): the client must accept gzip to read the answer.
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                client
                    .export(self.grpc_request(r.clone()))
                    .await
                    .map(|resp| {
                        resp.into_inner()
                            .partial_success
                            .map(|p| Accepted {
                                rejected: p.rejected_data_points,
                                message: p.error_message,
                            })
                            .unwrap_or_default()
                    })
            }
        };
        let status = match result {
            Ok(accepted) => return Ok(accepted),
            Err(status) => status,
        };
        let Some(cause) = std::error::Error::source(&status) else {
            // The server's answer.
            return Err(SendError {
                retryable: grpc_retryable(status.code()),
                kind: format!("grpc_{}", grpc_code_name(status.code())),
                message: format!("gRPC {:?}: {}", status.code(), status.message()),
                retry_after: None,
            });
        };
        // No answer: the connection failed (refused, reset, TLS). tonic reports that as
        // UNAVAILABLE, CANCELLED or UNKNOWN depending on when it happened; all are worth a
        // retry. When the server refuses our certificate after a TLS 1.3 handshake, h2 keeps
        // only the alert's text or nothing, so a failure over TLS is diagnosed by making a
        // TLS connection with the same files.
        let (mut tls, detail) = (tls_problem(cause), error_chain(cause));
        if tls.is_none() && self.settings.is_tls() {
            tls = diagnose_tls(&self.settings, b"h2").await;
        }
        Err(match tls {
            Some(message) => SendError {
                retryable: true,
                kind: "tls".into(),
                message,
                retry_after: None,
            },
            None => SendError {
                retryable: true,
                kind: "transport".into(),
                message: format!("gRPC {:?}: {}: {detail}", status.code(), status.message()),
                retry_after: None,
            },
        })
    }

    fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.settings.timeout);
        for (k, v) in &self.settings.headers {
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(k.as_bytes()),
                MetadataValue::try_from(v.as_str()),
            ) {
                request.metadata_mut().insert(k, v);
            }
        }
        request
    }
}

/// `e` and its sources, outermost first, each said once (wrappers often repeat their cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The rustls error somewhere in `e`'s chain (an `io::Error` hides it from `source()`).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // io::Error wraps its payload without exposing it as a source, sometimes twice
        // (hyper-rustls wraps tokio-rustls's io::Error in another).
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(|e| e.get_ref()) {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        cur = err.source();
    }
    None
}

/// A TLS failure in `e`'s chain, said with what to do about it.
pub fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};
    let r = rustls_error(e)?;
    let advice = match r {
        R::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::AccessDenied
            | A::HandshakeFailure,
        ) => {
            "the server refused the TLS connection: it wants a client certificate it trusts \
             (mutual TLS: set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY \
             to a certificate signed by the CA the server trusts, and its key)"
        }
        R::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the server's certificate is not signed by a trusted CA \
             (set OTEL_EXPORTER_OTLP_CERTIFICATE to the CA certificate that signed it)"
        }
        R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate does not name the host of the endpoint"
        }
        R::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the server's certificate is expired or not valid yet",
        _ => "TLS handshake failed",
    };
    Some(format!("TLS: {advice}: {r}"))
}

/// Why a TLS connection to the endpoint of `settings` fails, if it does: one connection made
/// with the same CA and client files, which writes the HTTP/2 preface and reads the server's
/// first frame (a server checks the client certificate only once the handshake is over).
async fn diagnose_tls(settings: &OtlpSettings, alpn: &[u8]) -> Option<String> {
    let uri: http::Uri = settings.endpoint.parse().ok()?;
    let host = uri.host()?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut config = rustls_config(&settings.tls).ok()?;
    config.alpn_protocols = vec![alpn.to_vec()];
    let config = Arc::new(config);
    let probe = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let name = rustls_pki_types::ServerName::try_from(host.clone()).ok()?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()?
            .next()?;
        let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        sock.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut conn = rustls::ClientConnection::new(config, name).ok()?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let mut first = [0u8; 64];
        let outcome = tls
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .and_then(|()| tls.flush())
            .and_then(|()| tls.read(&mut first));
        tls_problem(&outcome.err()?)
    });
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()?
        .ok()
        .flatten()
}

/// The counting kind and the message of a failed HTTP exchange.
fn describe_transport_error(e: &(dyn std::error::Error + 'static)) -> (&'static str, String) {
    match tls_problem(e) {
        Some(tls) => ("tls", tls),
        None => ("transport", error_chain(e)),
    }
}

fn grpc_code_name(code: tonic::Code) -> String {
    let s = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn partial_success(signal: Signal, body: &[u8]) -> Accepted {
    if body.is_empty() {
        return Accepted::default();
    }
    match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| Accepted {
                rejected: p.rejected_spans,
                message: p.error_message,
            })
            .unwrap_or_default(),
        Signal::Metrics => {
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
                body,
            )
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| Accepted {
                rejected: p.rejected_data_points,
                message: p.error_message,
            })
            .unwrap_or_default()
        }
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn rustls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            let pem = read(ca, "CA certificate")?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let pem = read(cert, "client certificate")?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key_pem = read(key, "client key")?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn tonic_tls(files: &TlsFiles) -> Result<ClientTlsConfig, String> {
    let mut tls = ClientTlsConfig::new();
    match &files.ca {
        Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?)),
        None => tls = tls.with_native_roots(),
    }
    if let (Some(cert), Some(key)) = (&files.client_cert, &files.client_key) {
        tls = tls.identity(Identity::from_pem(
            read(cert, "client certificate")?,
            read(key, "client key")?,
        ));
    }
    Ok(tls)
}

/// Exponential backoff with jitter between attempts of one request.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait between attempts (so export resumes soon after the receiver returns).
    pub max_interval: Duration,
    /// Give up on a request after this long.
    pub max_elapsed: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max_interval: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt + 1` (0-based): `initial·2^attempt` capped at
    /// `max_interval`, times a random factor in [0.5, 1.5).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_interval);
        base.mul_f64(rand::rng().random_range(0.5..1.5))
    }
}

/// How a request with retries ended when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// A permanent answer (e.g. HTTP 400): never retried.
    Rejected(SendError),
    /// Retryable answers until the backoff's time ran out.
    RetriesExhausted {
        /// The last error.
        last: SendError,
        /// Attempts made.
        attempts: u32,
    },
    /// The shutdown deadline passed before a retry.
    Shutdown(SendError),
}

impl Failure {
    /// The drop reason a telemetry counter uses.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Rejected(_) => "rejected",
            Failure::RetriesExhausted { .. } => "retries_exhausted",
            Failure::Shutdown(_) => "shutdown",
        }
    }

    /// The last error.
    pub fn error(&self) -> &SendError {
        match self {
            Failure::Rejected(e) | Failure::Shutdown(e) => e,
            Failure::RetriesExhausted { last, .. } => last,
        }
    }
}

/// Sends `payload`, retrying the retryable failures; `deadline` (shutdown) stops retries.
/// Every failed attempt is handed to `on_error` (for the export-error counters).
pub async fn send_with_retry(
    client: &OtlpClient,
    payload: &Payload,
    backoff: &Backoff,
    deadline: &super::Deadline,
    mut on_error: impl FnMut(&SendError, bool),
) -> Result<Accepted, Failure> {
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        let error = match client.send(payload).await {
            Ok(accepted) => return Ok(accepted),
            Err(e) => e,
        };
        if !error.retryable {
            on_error(&error, false);
            return Err(Failure::Rejected(error));
        }
        let mut wait = backoff.delay(attempt);
        if let Some(after) = error.retry_after {
            wait = wait.max(after.min(backoff.max_interval * 2));
        }
        attempt += 1;
        if start.elapsed() + wait > backoff.max_elapsed {
            on_error(&error, false);
            return Err(Failure::RetriesExhausted {
                last: error,
                attempts: attempt,
            });
        }
        if deadline.passed_by(Instant::now() + wait) {
            on_error(&error, false);
            return Err(Failure::Shutdown(error));
        }
        on_error(&error, true);
        tracing::debug!(
            "{} export failed ({}), retry {attempt} in {wait:?}",
            client.settings.signal.name(),
            error.message
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_answers_follow_the_specification() {
        for s in [429, 502, 503, 504] {
            assert!(http_retryable(s), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 500] {
            assert!(!http_retryable(s), "{s}");
        }
        assert!(grpc_retryable(tonic::Code::Unavailable));
        assert!(grpc_retryable(tonic::Code::ResourceExhausted));
        assert!(!grpc_retryable(tonic::Code::InvalidArgument));
        assert!(!grpc_retryable(tonic::Code::Unauthenticated));
        assert_eq!(
            grpc_code_name(tonic::Code::DeadlineExceeded),
            "deadline_exceeded"
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let b = Backoff::default();
        for attempt in 0..20 {
            let base = (b.initial * (1 << attempt.min(16))).min(b.max_interval);
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d >= base / 2 && d < base.mul_f64(1.5), "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn tls_failures_say_what_to_set() {
        // hyper-rustls wraps tokio-rustls's io::Error, which wraps the rustls error.
        let wrapped = |e: rustls::Error| {
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        let refused = wrapped(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        let m = tls_problem(&refused).unwrap();
        assert!(m.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"), "{m}");
        let untrusted = wrapped(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let m = tls_problem(&untrusted).unwrap();
        assert!(m.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{m}");
        let refused_tcp = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_problem(&refused_tcp), None);
        let (kind, message) = describe_transport_error(&refused_tcp);
        assert_eq!(kind, "transport");
        assert!(message.contains("refused"), "{message}");
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let body = vec![7u8; 10_000];
        let z = gzip(&body);
        assert!(z.len() < 200);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
