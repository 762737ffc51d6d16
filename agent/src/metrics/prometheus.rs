//! The Prometheus text exposition format (0.0.4) of the same series, served on `GET /metrics`
//! by a minimal HTTP/1 responder (off by default; the CLI binds it to loopback unless told).

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

use super::{
    red::{Point, BOUNDS},
    telemetry::Series,
    Metrics,
};

/// `http.server.request.duration` → `http_server_request_duration`.
fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{k="v",…}`, or nothing when there are no labels.
fn labels(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", metric_name(k), escape(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The text of every series.
pub fn render(points: &[Point], telemetry: &[Series]) -> String {
    let mut out = String::new();
    let mut help: Vec<(String, &str)> = Vec::new();
    for p in points {
        let name = format!("{}_seconds", metric_name(p.instrument.name()));
        help.push((name.clone(), p.instrument.description()));
        let mut base: Vec<(String, String)> = vec![
            ("service_name".into(), p.resource.service_name.clone()),
            ("process_pid".into(), p.resource.pid.to_string()),
        ];
        base.extend(p.attrs.iter().map(|(k, v)| (k.to_string(), v.text())));
        let mut cumulative = 0;
        for (i, bound) in BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
        {
            cumulative += p.histogram.buckets[i];
            let mut l = base.clone();
            l.push(("le".into(), float(bound)));
            let _ = writeln!(out, "{name}_bucket{} {cumulative}", labels(&l));
        }
        let _ = writeln!(out, "{name}_sum{} {}", labels(&base), p.histogram.sum);
        let _ = writeln!(out, "{name}_count{} {}", labels(&base), p.histogram.count);
    }
    for s in telemetry {
        let mut name = metric_name(s.name);
        if s.counter {
            name.push_str("_total");
        }
        help.push((name.clone(), s.description));
        let l: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let _ = writeln!(out, "{name}{} {}", labels(&l), s.value);
    }
    with_headers(out, &help)
}

/// Groups the lines by metric family and puts `# HELP` (from `help`) and `# TYPE` before
/// each. As the text format (0.0.4) wants, a counter's family is named by its sample, `_total`
/// included, and a histogram's by the name before `_bucket`, `_sum` and `_count`.
fn with_headers(body: String, help: &[(String, &str)]) -> String {
    let mut families: Vec<(String, Vec<&str>)> = Vec::new();
    for line in body.lines() {
        let series = line.split(['{', ' ']).next().unwrap_or(line);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| series.strip_suffix(s))
            .filter(|f| f.ends_with("_seconds"))
            .unwrap_or(series)
            .to_string();
        match families.iter_mut().find(|(f, _)| *f == family) {
            Some((_, lines)) => lines.push(line),
            None => families.push((family, vec![line])),
        }
    }
    let mut out = String::new();
    for (family, lines) in families {
        let kind = if family.ends_with("_seconds") {
            "histogram"
        } else if family.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let text = help
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, h)| h.replace('\\', "\\\\").replace('\n', "\\n"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| family.replace('_', " "));
        let _ = writeln!(out, "# HELP {family} {text}");
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Serves `GET /metrics` on `addr`; returns the bound address and the task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut head = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        conn.read(&mut buf),
                    )
                    .await
                    {
                        Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let (status, ctype, body) = if path == "/metrics" || path.starts_with("/metrics?") {
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics.prometheus_text(),
                    )
                } else {
                    ("404 Not Found", "text/plain", "not found\n".to_string())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_grouped_with_type_lines() {
        let body = "a_seconds_bucket{le=\"1\"} 1\nx_total 2\na_seconds_sum 1\na_seconds_count 1\n";
        let text = with_headers(body.to_string(), &[("a_seconds".into(), "A.")]);
        assert_eq!(
            text,
            "# HELP a_seconds A.\n# TYPE a_seconds histogram\na_seconds_bucket{le=\"1\"} 1\na_seconds_sum 1\na_seconds_count 1\n# HELP x_total x total\n# TYPE x_total counter\nx_total 2\n"
        );
    }
}
