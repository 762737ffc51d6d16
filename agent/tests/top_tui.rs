//! `spanhook top` as a user sees it: the real binary in a real terminal (tmux, 80×24), real
//! uprobes on real Go servers, real HTTP traffic; keys are typed into the terminal and the
//! assertions read the screen.

mod support;

use std::{collections::BTreeMap, path::Path, time::Duration};

use support::{
    collector::Collector,
    go_fixture, newest_go,
    otlp::{spans_in_file, spans_of_request, Span},
    require_bpf, spanhook_bin, temp_dir,
    tmux::Terminal,
    traffic::{send, Req},
    Agent, GoServer,
};

const WAIT: Duration = Duration::from_secs(20);

/// One row of the operations table, as read off the screen.
#[derive(Clone, Debug, PartialEq)]
struct OpRow {
    service: String,
    kind: String,
    operation: String,
    count: u64,
    errors: String,
    p99: String,
}

/// The rows between a pane's title line (starting with `title`) and the next pane or the end.
fn pane<'a>(screen: &'a [String], title: &str) -> Vec<&'a str> {
    let Some(start) = screen
        .iter()
        .position(|l| l.trim_start().starts_with(title))
    else {
        return Vec::new();
    };
    screen[start + 2..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with("Recent traces") && !l.is_empty())
        .map(String::as_str)
        .collect()
}

/// The operations table on the screen, top to bottom.
fn operations(screen: &[String]) -> Vec<OpRow> {
    pane(screen, "Operations")
        .into_iter()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            // SERVICE KIND OPERATION… COUNT RATE ERR% P50 P95 P99
            if words.len() < 9 {
                return None;
            }
            let n = words.len();
            Some(OpRow {
                service: words[0].into(),
                kind: words[1].into(),
                operation: words[2..n - 6].join(" "),
                count: words[n - 6].parse().ok()?,
                errors: words[n - 4].into(),
                p99: words[n - 1].into(),
            })
        })
        .collect()
}

fn op_names(rows: &[OpRow]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{} {}", r.service, r.operation))
        .collect()
}

/// The table's counts by (service, operation).
fn counts(rows: &[OpRow]) -> BTreeMap<String, u64> {
    rows.iter()
        .map(|r| (format!("{} {}", r.service, r.operation), r.count))
        .collect()
}

fn expect_counts(want: &[(&str, u64)]) -> BTreeMap<String, u64> {
    want.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The recent traces list: (trace id prefix, root span, spans) per row, top to bottom.
fn trace_rows(screen: &[String]) -> Vec<(String, String, u64)> {
    let Some(start) = screen
        .iter()
        .position(|l| l.trim_start().starts_with("Recent traces"))
    else {
        return Vec::new();
    };
    screen[start + 2..screen.len() - 2]
        .iter()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            // START TRACE ROOT… SERVICES SPANS DURATION STATUS
            if words.len() < 7 {
                return None;
            }
            let n = words.len();
            Some((
                words[1].to_string(),
                words[2..n - 4].join(" "),
                words[n - 3].parse().ok()?,
            ))
        })
        .collect()
}

/// Two traced services on the newest Go (spans carry `http.route`): checkout and catalog.
fn two_services() -> (GoServer, GoServer) {
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "plain");
    let checkout = GoServer::start_with_env(&fixture.path, &[("OTEL_SERVICE_NAME", "checkout")]);
    let catalog = GoServer::start_with_env(&fixture.path, &[("OTEL_SERVICE_NAME", "catalog")]);
    (checkout, catalog)
}

/// `spanhook top` on both services in an 80×24 terminal, also writing spans to `out`.
fn top(name: &str, a: &GoServer, b: &GoServer, out: &Path) -> Terminal {
    top_with(name, a, b, out, &[])
}

/// As [`top`], with more flags.
fn top_with(name: &str, a: &GoServer, b: &GoServer, out: &Path, more: &[&str]) -> Terminal {
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());
    let mut args = vec![
        "top",
        "--pid",
        &pa,
        "--pid",
        &pb,
        "--output-file",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    let term = Terminal::start(
        name,
        80,
        24,
        &spanhook_bin(),
        &args,
        &[("SPANHOOK_LOG", "info")],
    );
    term.wait_for("the view to go live", Duration::from_secs(30), |s| {
        s[0].contains("spanhook top") && s[0].contains("LIVE")
    });
    term
}

fn get(n: usize, path: &str) -> Vec<Req> {
    (0..n).map(|_| Req::get(path)).collect()
}

/// Spans written so far (whole lines only: the file is being written).
fn spans_so_far(path: &Path) -> Vec<Span> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |i| &text[..i]);
    whole
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| spans_of_request(&serde_json::from_str(l).unwrap()))
        .collect()
}

fn quit(term: &Terminal) -> String {
    term.press(&["q"]);
    let code = term.wait_exit(Duration::from_secs(30));
    let text = term.scrollback();
    assert_eq!(code, 0, "spanhook top exited with {code}:\n{text}");
    text
}

#[test]
fn the_table_shows_what_was_sent_and_sorts_and_filters() {
    require_bpf();
    let (checkout, catalog) = two_services();
    let out = temp_dir("top-table").join("spans.jsonl");
    let term = top("table", &checkout, &catalog, &out);

    send(&checkout.url(""), &get(12, "/hello"), 4);
    send(&checkout.url(""), &get(3, "/error"), 2);
    send(&checkout.url(""), &get(1, "/missing"), 1);
    let items: Vec<Req> = (0..7).map(|i| Req::get(format!("/items/{i}"))).collect();
    send(&catalog.url(""), &items, 3);
    send(&catalog.url(""), &get(2, "/slow?ms=80"), 2);

    let want = expect_counts(&[
        ("checkout GET /hello", 12),
        ("catalog GET /items/", 7),
        ("checkout GET /error", 3),
        ("catalog GET /slow", 2),
        // A 404 matches no route: the span is named by its method alone.
        ("checkout GET", 1),
    ]);
    let screen = term.wait_for("the counts that were sent", WAIT, |s| {
        counts(&operations(s)) == want
    });
    let rows = operations(&screen);
    // Sorted by rate, busiest first.
    assert_eq!(
        op_names(&rows),
        [
            "checkout GET /hello",
            "catalog GET /items/",
            "checkout GET /error",
            "catalog GET /slow",
            "checkout GET"
        ],
        "{}",
        screen.join("\n")
    );
    assert!(rows.iter().all(|r| r.kind == "server"));
    let error = rows.iter().find(|r| r.operation == "GET /error").unwrap();
    assert_eq!(error.errors, "100.0", "every /error answered 500");
    let hello = rows.iter().find(|r| r.operation == "GET /hello").unwrap();
    assert_eq!(hello.errors, "0.0");
    let slow = rows.iter().find(|r| r.operation == "GET /slow").unwrap();
    assert!(
        slow.p99.ends_with("ms") && !slow.p99.ends_with("µs"),
        "{slow:?}"
    );

    // Sort by P99 (column 9): the 80 ms requests first; `r` turns it around.
    term.press(&["9"]);
    let screen = term.wait_for("sorting by P99", WAIT, |s| {
        s.iter().any(|l| l.contains("P99▼"))
            && operations(s).first().map(|r| r.operation.as_str()) == Some("GET /slow")
    });
    assert_eq!(operations(&screen).len(), 5);
    term.press(&["r"]);
    term.wait_for("P99 ascending", WAIT, |s| {
        s.iter().any(|l| l.contains("P99▲"))
            && operations(s).last().map(|r| r.operation.as_str()) == Some("GET /slow")
    });
    // `s` moves on to the next column (it wraps to SERVICE): catalog before checkout.
    term.press(&["s"]);
    let screen = term.wait_for("sorting by service", WAIT, |s| {
        s.iter().any(|l| l.contains("SERVICE▲"))
    });
    let services: Vec<String> = operations(&screen).into_iter().map(|r| r.service).collect();
    assert_eq!(
        services,
        ["catalog", "catalog", "checkout", "checkout", "checkout"]
    );

    // Filters: what is typed after `/` decides the rows of both panes.
    let filter = |text: &str| {
        term.press(&["/"]);
        term.type_text(text);
        term.press(&["Enter"]);
    };
    filter("status=5xx");
    let screen = term.wait_for("the 5xx filter", WAIT, |s| {
        op_names(&operations(s)) == ["checkout GET /error"]
    });
    let traces = trace_rows(&screen);
    assert_eq!(traces.len(), 3, "{}", screen.join("\n"));
    assert!(traces.iter().all(|t| t.1 == "GET /error"), "{traces:?}");
    assert!(screen.iter().any(|l| l.contains("filter: status=5xx")));

    term.press(&["x"]);
    filter("service=catalog");
    term.wait_for("the service filter", WAIT, |s| {
        counts(&operations(s))
            == expect_counts(&[("catalog GET /items/", 7), ("catalog GET /slow", 2)])
    });
    term.press(&["x"]);
    filter("min=50ms");
    let screen = term.wait_for("the duration filter", WAIT, |s| {
        counts(&operations(s)) == expect_counts(&[("catalog GET /slow", 2)])
    });
    assert!(trace_rows(&screen).iter().all(|t| t.1 == "GET /slow"));
    term.press(&["x"]);
    filter("route=/items");
    term.wait_for("the route filter", WAIT, |s| {
        counts(&operations(s)) == expect_counts(&[("catalog GET /items/", 7)])
    });
    term.press(&["x"]);
    term.wait_for("all rows again", WAIT, |s| counts(&operations(s)) == want);

    // Pause: the screen holds still while spans keep coming; resuming shows them.
    term.press(&["p"]);
    term.wait_for("PAUSED", WAIT, |s| s[0].contains("PAUSED"));
    send(&checkout.url(""), &get(5, "/hello"), 2);
    std::thread::sleep(Duration::from_millis(2500));
    let screen = term.screen();
    assert_eq!(
        counts(&operations(&screen)).get("checkout GET /hello"),
        Some(&12),
        "a paused view changed:\n{}",
        screen.join("\n")
    );
    term.press(&["p"]);
    term.wait_for("the spans sent while paused", WAIT, |s| {
        counts(&operations(s)).get("checkout GET /hello") == Some(&17)
    });

    // Any size from 80×24 up: a bigger terminal still has every column and the help line.
    term.resize(120, 40);
    term.wait_for("the resized screen", WAIT, |s| {
        s.len() == 40 && s[39].contains("q quit") && s[39].contains("? help")
    });
    term.resize(80, 24);
    let screen = term.wait_for("80×24 again", WAIT, |s| {
        s.len() == 24 && s[23].contains("q quit") && counts(&operations(s)).len() == 5
    });
    assert!(screen.iter().any(|l| l.contains("P50")));

    // Quit: the agent flushes its exporters and its log lines come back to the terminal.
    let text = quit(&term);
    assert!(text.contains("stopping (quit)"), "{text}");
    assert!(text.contains("http server traced at"), "{text}");
    assert!(text.contains("exporting to file:"), "{text}");
    // The file exporter ran beside the view and got every span.
    let spans = spans_in_file(&out);
    assert_eq!(
        spans.len(),
        12 + 3 + 1 + 7 + 2 + 5,
        "spans in {}",
        out.display()
    );
}

/// Sends `req` to `server` continuing trace `trace` under `parent`; returns the new span's id,
/// read from the file exporter that runs beside the view.
fn child_of(server: &GoServer, path: &str, trace: &str, parent: &str, out: &Path) -> String {
    let req = Req::get(path).header("traceparent", &format!("00-{trace}-{parent}-01"));
    send(&server.url(""), &[req], 1);
    let want_path = path.split('?').next().unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = spans_so_far(out).into_iter().find(|s| {
            s.trace_id == trace
                && s.parent_span_id == parent
                && s.str("url.path") == Some(want_path)
        }) {
            return s.span_id;
        }
        assert!(
            start.elapsed() < WAIT,
            "no span for {path} under {parent} in {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn selecting_a_trace_shows_its_spans_in_tree_order_across_processes() {
    require_bpf();
    let (checkout, catalog) = two_services();
    let out = temp_dir("top-tree").join("spans.jsonl");
    let term = top("tree", &checkout, &catalog, &out);
    send(&checkout.url(""), &get(3, "/hello"), 1);

    // One trace through both processes: checkout → catalog → checkout, and a second child.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let root = child_of(&checkout, "/items/root", trace, "00f067aa0ba902b7", &out);
    let hello = child_of(&catalog, "/hello", trace, &root, &out);
    let error = child_of(&checkout, "/error", trace, &hello, &out);
    let slow = child_of(&catalog, "/slow?ms=30", trace, &root, &out);
    assert_eq!([&root, &hello, &error, &slow].len(), 4);

    let screen = term.wait_for("the trace in the list with its 4 spans", WAIT, |s| {
        trace_rows(s).iter().any(|t| t.0 == trace[..8] && t.2 == 4)
    });
    let row = trace_rows(&screen)
        .iter()
        .position(|t| t.0 == trace[..8])
        .unwrap();
    assert_eq!(
        trace_rows(&screen)[row].1,
        "GET /items/ ↖",
        "the root continues a remote parent"
    );

    // Tab to the traces, go to the first row, down to ours, open it.
    term.press(&["Tab", "g"]);
    for _ in 0..row {
        term.press(&["Down"]);
    }
    term.press(&["Enter"]);
    let screen = term.wait_for("the trace's tree", WAIT, |s| {
        s.iter().any(|l| l.contains(&format!("Trace {trace}")))
    });
    let text = screen.join("\n");
    let line_of = |needle: &str| {
        screen
            .iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line starting with {needle:?}:\n{text}"))
    };
    // Parents above children, siblings by start time, indented by depth.
    let (a, b, c, d) = (
        line_of("GET /items/ "),
        line_of("├─ GET /hello "),
        line_of("│  └─ GET /error "),
        line_of("└─ GET /slow "),
    );
    assert!(a < b && b < c && c < d, "tree order:\n{text}");
    assert_eq!((b, c, d), (a + 1, a + 2, a + 3), "{text}");
    // Each span names its process: the trace crosses both.
    let (pc, pk) = (checkout.pid(), catalog.pid());
    assert!(screen[a].contains(&format!("checkout[{pc}]")), "{text}");
    assert!(screen[b].contains(&format!("catalog[{pk}]")), "{text}");
    assert!(screen[c].contains(&format!("checkout[{pc}]")), "{text}");
    assert!(screen[d].contains(&format!("catalog[{pk}]")), "{text}");
    // Bars share one time axis: each starts where its span started, in order, the root at 0.
    let bar_start = |i: usize| {
        let line = &screen[i];
        let byte = line
            .find('█')
            .unwrap_or_else(|| panic!("no bar on {line:?}:\n{text}"));
        line[..byte].chars().count()
    };
    let axis = screen
        .iter()
        .find(|l| l.starts_with("SPAN"))
        .and_then(|l| l.find(" 0 ").map(|b| l[..b].chars().count() + 1))
        .unwrap_or_else(|| panic!("no time axis:\n{text}"));
    assert_eq!(bar_start(a), axis, "the root starts the axis:\n{text}");
    assert!(
        bar_start(a) < bar_start(b) && bar_start(b) < bar_start(c) && bar_start(c) < bar_start(d),
        "bars in start order:\n{text}"
    );

    // The selected span's attributes: the root first, then down to GET /hello.
    let field = |text: &str, key: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} line:\n{text}"))
            .to_string()
    };
    assert!(field(&text, "span id").ends_with(&root), "{text}");
    assert!(
        field(&text, "parent").ends_with("00f067aa0ba902b7 (remote, not traced here)"),
        "{text}"
    );
    term.press(&["Down"]);
    let screen = term.wait_for("GET /hello selected", WAIT, |s| {
        s.iter().any(|l| l.contains("Span GET /hello"))
    });
    let text = screen.join("\n");
    assert!(text.contains(&format!("catalog / {pk}")), "{text}");
    assert!(field(&text, "span id").ends_with(&hello), "{text}");
    assert!(
        field(&text, "parent").ends_with(&format!("{root} · GET /items/ in checkout[{pc}]")),
        "the parent, in the other process:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("url.path") && l.ends_with("/hello")),
        "{text}"
    );

    // Esc goes back to the tables.
    term.press(&["Escape"]);
    term.wait_for("the tables", WAIT, |s| {
        s.iter().any(|l| l.trim_start().starts_with("Operations"))
    });
    quit(&term);
}

#[test]
fn a_propagated_call_opens_as_one_tree_across_processes() {
    require_bpf();
    let (checkout, catalog) = two_services();
    let out = temp_dir("top-call").join("spans.jsonl");
    // checkout's /call makes an HTTP request to catalog; --propagate carries the trace over.
    let term = top_with("call", &checkout, &catalog, &out, &["--propagate"]);
    let target = format!("/call?url={}", catalog.url("/slow%3Fms%3D40"));
    let resps = send(&checkout.url(""), &[Req::get(target)], 1);
    assert_eq!(resps[0].status, 200, "the call went through");

    // The table has the client span between the two servers.
    let want = expect_counts(&[
        ("checkout GET /call", 1),
        ("checkout GET", 1),
        ("catalog GET /slow", 1),
    ]);
    let screen = term.wait_for("the three operations of the call", WAIT, |s| {
        counts(&operations(s)) == want
    });
    let kinds: BTreeMap<String, String> = operations(&screen)
        .into_iter()
        .map(|r| (format!("{} {}", r.service, r.operation), r.kind))
        .collect();
    assert_eq!(kinds["checkout GET"], "client", "{}", screen.join("\n"));
    assert_eq!(kinds["catalog GET /slow"], "server");

    let screen = term.wait_for("one trace of 3 spans", WAIT, |s| {
        trace_rows(s).iter().any(|t| t.1 == "GET /call" && t.2 == 3)
    });
    assert_eq!(trace_rows(&screen).len(), 1, "{}", screen.join("\n"));
    term.press(&["Tab"]);
    term.press(&["Enter"]);
    let screen = term.wait_for("the call's tree", WAIT, |s| {
        s.iter().any(|l| l.starts_with("└─ GET "))
    });
    let text = screen.join("\n");
    let line_of = |prefix: &str| {
        screen
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{text}"))
    };
    // Server, its client call, and the server that answered it in the other process.
    let (a, b, c) = (
        line_of("GET /call "),
        line_of("└─ GET "),
        line_of("   └─ GET /slow "),
    );
    assert_eq!((b, c), (a + 1, a + 2), "{text}");
    assert!(
        screen[a].contains(&format!("checkout[{}]", checkout.pid())),
        "{text}"
    );
    assert!(
        screen[b].contains(&format!("checkout[{}]", checkout.pid())),
        "{text}"
    );
    assert!(
        screen[c].contains(&format!("catalog[{}]", catalog.pid())),
        "{text}"
    );
    term.press(&["Down"]);
    let screen = term.wait_for("the client span selected", WAIT, |s| {
        s.iter()
            .any(|l| l.starts_with("kind · duration") && l.contains("client"))
    });
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("parent") && l.contains("GET /call in checkout")),
        "{}",
        screen.join("\n")
    );
    quit(&term);
}

#[test]
fn without_a_terminal_it_prints_plain_tables_and_exports_over_otlp() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "plain");
    let server = GoServer::start_with_env(&fixture.path, &[("OTEL_SERVICE_NAME", "checkout")]);
    let collector = Collector::start();
    let endpoint = format!("http://127.0.0.1:{}", collector.grpc_port);
    let pid = server.pid().to_string();
    // Standard output is a pipe here, not a terminal.
    let agent = Agent::attach(&[
        "top",
        "--pid",
        &pid,
        "--interval",
        "1",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
    ]);
    send(&server.url(""), &get(4, "/hello"), 2);
    send(&server.url(""), &get(2, "/error"), 1);
    let line = agent
        .stdout
        .wait_for("GET /error", WAIT)
        .expect("a periodic table with GET /error");
    assert!(line.starts_with("checkout"), "{line}");
    let stdout = agent.stdout.clone();
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("exporting to otlp grpc"), "{stderr}");
    assert!(stderr.contains("stopping (interrupted)"), "{stderr}");

    let text = stdout.text();
    assert!(
        !text.contains('\u{1b}'),
        "plain text has no terminal escapes:\n{text}"
    );
    // The last block, printed as the agent stops, has everything that was sent.
    let last = text.rsplit("spanhook top ").next().unwrap();
    assert!(last.contains("6 spans seen"), "{text}");
    let row = |op: &str| -> Vec<String> {
        last.lines()
            .find(|l| l.contains(op))
            .unwrap_or_else(|| panic!("no {op} row in the last table:\n{text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // checkout server GET /hello COUNT RATE ERR% P50 P95 P99
    let hello = row("GET /hello");
    assert_eq!(
        (hello[4].as_str(), hello[6].as_str()),
        ("4", "0.0"),
        "{text}"
    );
    let error = row("GET /error");
    assert_eq!(
        (error[4].as_str(), error[6].as_str()),
        ("2", "100.0"),
        "{text}"
    );
    // The Collector got the same spans over OTLP, at the same time.
    let spans = collector.wait_spans(6, WAIT);
    assert_eq!(spans.len(), 6, "the Collector received every span");
    assert!(spans
        .iter()
        .all(|s| s.resource_str("service.name") == Some("checkout")));
}
