//! The load generator: wrk (installed by `cargo xtask setup`), as fast as it can go, or paced
//! to a target rate with a per-connection delay script.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::process::Proc;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    /// Completed requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Socket errors and non-2xx responses.
    pub errors: u64,
}

/// How to drive the server.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Full URL.
    pub url: String,
    /// Open connections.
    pub connections: u32,
    /// Length of the run.
    pub duration: Duration,
    /// Milliseconds each connection waits between requests (paced load), if any.
    pub delay_ms: Option<u32>,
    /// CPU to pin wrk to.
    pub cpu: Option<usize>,
}

impl Plan {
    /// Connections and per-connection delay that approach `rate` requests per second.
    pub fn paced(url: String, rate: u32, duration: Duration, cpu: Option<usize>) -> Plan {
        // Each connection sends one request, waits for the answer, then waits `delay_ms`.
        let delay_ms = 10;
        Plan {
            url,
            connections: (rate * delay_ms / 1000).max(1),
            duration,
            delay_ms: Some(delay_ms),
            cpu,
        }
    }
}

/// Runs wrk and parses its report.
pub fn run(plan: &Plan, scratch: &Path) -> Result<Load> {
    let mut cmd = match plan.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    let secs = plan.duration.as_secs().max(1);
    cmd.args(["-t1", "--latency", "--timeout", "10s"])
        .arg(format!("-c{}", plan.connections))
        .arg(format!("-d{secs}s"));
    if let Some(delay) = plan.delay_ms {
        let script = pace_script(scratch, delay)?;
        cmd.arg("-s").arg(script);
    }
    cmd.arg(&plan.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut wrk = Proc::spawn("wrk", &mut cmd)?;
    let exit = wrk.wait(Duration::from_secs(secs + 30))?;
    let output = wrk.rest_of_output(Duration::from_secs(5)).join("\n");
    if !exit.status.success() {
        bail!("wrk failed with {}:\n{output}", exit.status);
    }
    parse(&output).with_context(|| format!("reading wrk's report:\n{output}"))
}

fn pace_script(dir: &Path, delay_ms: u32) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(format!("pace-{delay_ms}ms.lua"));
    fs::write(
        &path,
        format!("-- Each connection waits {delay_ms} ms between requests.\nfunction delay()\n  return {delay_ms}\nend\n"),
    )?;
    Ok(path)
}

/// A latency as wrk prints it ("227.00us", "1.07ms", "2.01s") in microseconds.
fn micros(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60e6)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

fn parse(text: &str) -> Result<Load> {
    let mut load = Load::default();
    let mut have = (false, false, false);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => {
                load.p50_us = micros(v).context("p50")?;
                have.0 = true;
            }
            ["99%", v] => {
                load.p99_us = micros(v).context("p99")?;
                have.1 = true;
            }
            ["Requests/sec:", v] => {
                load.rps = v.parse().context("Requests/sec")?;
                have.2 = true;
            }
            [n, "requests", "in", ..] => load.requests = n.parse().context("requests")?,
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if have != (true, true, true) {
        bail!("missing the latency distribution or the request rate");
    }
    Ok(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report() {
        let report = "Running 5s test @ http://127.0.0.1:1/hello
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.12ms   12.91ms 150.70ms   91.47%
  Latency Distribution
     50%  227.00us
     75%    8.79ms
     90%   18.12ms
     99%    1.07s
  29177 requests in 5.01s, 3.39MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   5826.74
Transfer/sec:    694.20KB";
        let load = parse(report).unwrap();
        assert_eq!(load.requests, 29177);
        assert_eq!(load.p50_us, 227.0);
        assert_eq!(load.p99_us, 1.07e6);
        assert_eq!(load.rps, 5826.74);
        assert_eq!(load.errors, 3);
    }
}
