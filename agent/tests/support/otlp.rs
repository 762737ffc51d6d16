//! Reading OTLP/JSON (the file exporter's lines, or what the Collector forwards) into spans a
//! test can check.

use std::collections::HashMap;

use serde_json::Value;

/// One span as a test sees it.
#[derive(Clone, Debug)]
pub struct Span {
    pub name: String,
    pub kind: i64,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub status_code: i64,
    pub attrs: HashMap<String, Value>,
    pub resource: HashMap<String, Value>,
    pub scope: String,
}

pub const KIND_SERVER: i64 = 2;
pub const KIND_CLIENT: i64 = 3;
pub const STATUS_ERROR: i64 = 2;

impl Span {
    /// A string attribute.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).and_then(|v| v.as_str())
    }

    /// An integer attribute (OTLP/JSON writes int64 as a string).
    pub fn int(&self, key: &str) -> Option<i64> {
        self.attrs.get(key).and_then(as_int)
    }

    /// A string resource attribute.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(|v| v.as_str())
    }

    /// A resource attribute as an integer.
    pub fn resource_int(&self, key: &str) -> Option<i64> {
        self.resource.get(key).and_then(as_int)
    }

    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        (self.end_ns.saturating_sub(self.start_ns)) as f64 / 1e6
    }
}

fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn any_value(v: &Value) -> Value {
    let obj = match v.as_object() {
        Some(o) => o,
        None => return Value::Null,
    };
    if let Some(s) = obj.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = obj.get("intValue") {
        return as_int(i).map(Value::from).unwrap_or(Value::Null);
    }
    if let Some(b) = obj.get("boolValue") {
        return b.clone();
    }
    if let Some(d) = obj.get("doubleValue") {
        return d.clone();
    }
    Value::Null
}

fn attributes(list: Option<&Value>) -> HashMap<String, Value> {
    list.and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), any_value(&kv["value"]))))
                .collect()
        })
        .unwrap_or_default()
}

fn hex_or_empty(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// Spans of one `ExportTraceServiceRequest` in OTLP/JSON.
pub fn spans_of_request(request: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in request["resourceSpans"].as_array().into_iter().flatten() {
        let resource = attributes(rs["resource"].get("attributes"));
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            let scope = ss["scope"]["name"].as_str().unwrap_or("").to_string();
            for s in ss["spans"].as_array().into_iter().flatten() {
                out.push(Span {
                    name: s["name"].as_str().unwrap_or("").to_string(),
                    kind: s["kind"].as_i64().unwrap_or(0),
                    trace_id: hex_or_empty(&s["traceId"]),
                    span_id: hex_or_empty(&s["spanId"]),
                    parent_span_id: hex_or_empty(&s["parentSpanId"]),
                    start_ns: as_int(&s["startTimeUnixNano"]).unwrap_or(0) as u64,
                    end_ns: as_int(&s["endTimeUnixNano"]).unwrap_or(0) as u64,
                    status_code: s["status"]["code"].as_i64().unwrap_or(0),
                    attrs: attributes(s.get("attributes")),
                    resource: resource.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    out
}

/// Every span in an OTLP/JSON lines file.
pub fn spans_in_file(path: &std::path::Path) -> Vec<Span> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}"));
            spans_of_request(&v)
        })
        .collect()
}
