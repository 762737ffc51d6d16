//! Driving real HTTP traffic with a real client (reqwest over hyper).

use std::time::Duration;

/// One request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Self {
        Req {
            method: "GET",
            path: path.into(),
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn with(method: &'static str, path: impl Into<String>, body: Option<&[u8]>) -> Self {
        Req {
            method,
            path: path.into(),
            body: body.map(<[u8]>::to_vec),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    /// Headers except those that change between runs (Date).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends `reqs` to `base` with at most `concurrency` in flight; responses in request order.
pub fn send(base: &str, reqs: &[Req], concurrency: usize) -> Vec<Resp> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = Vec::new();
        for r in reqs.iter().cloned() {
            let client = client.clone();
            let url = format!("{base}{}", r.path);
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
                let mut b = client.request(method, &url);
                for (k, v) in &r.headers {
                    b = b.header(k, v);
                }
                if let Some(body) = r.body {
                    b = b.body(body);
                }
                let resp = b.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
                let status = resp.status().as_u16();
                let mut headers: Vec<(String, String)> = resp
                    .headers()
                    .iter()
                    .filter(|(k, _)| k.as_str() != "date")
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                headers.sort();
                let body = resp.bytes().await.unwrap().to_vec();
                Resp {
                    status,
                    headers,
                    body,
                }
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}
