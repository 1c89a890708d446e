//! Figures, `results.json`, `REPORT.md` and the SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// A figure over several runs: the median, with the smallest and largest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The nearest-rank percentile `p` (0–100] of `values`.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Serialize)]
pub struct LatencyResult {
    pub backend: String,
    pub objects: usize,
    pub runs: usize,
    pub samples_per_run: usize,
    pub sscsi_p50_ms: Spread,
    pub sscsi_p99_ms: Spread,
    pub direct_p50_ms: Spread,
    pub direct_p99_ms: Spread,
    /// sscsi's p50 over the direct read's p50, per run.
    pub ratio_p50: Spread,
}

/// One class's publish p50 beside the same class with a variant (through
/// `sscsi provider-server`, with built files).
#[derive(Debug, Serialize)]
pub struct PairedLatency {
    pub backend: String,
    pub variant: &'static str,
    pub objects: usize,
    pub runs: usize,
    pub samples_per_run: usize,
    pub plain_p50_ms: Spread,
    pub variant_p50_ms: Spread,
    /// The variant's p50 over the plain class's p50, per run.
    pub ratio_p50: Spread,
}

#[derive(Debug, Serialize)]
pub struct CallCount {
    pub sscsi: Spread,
    pub upstream: usize,
}

#[derive(Debug, Serialize)]
pub struct BurstResult {
    pub backend: String,
    pub volumes: usize,
    pub service_accounts: usize,
    pub secrets_per_account: usize,
    pub seconds: Spread,
    pub peak_rss_mib: Spread,
    pub calls: BTreeMap<String, CallCount>,
}

/// A burst of pods against a backend that throttles, with the node's
/// budget below its limit and without one.
#[derive(Debug, Serialize)]
pub struct ThrottledBurst {
    pub backend: String,
    pub volumes: usize,
    pub service_accounts: usize,
    pub secrets_per_account: usize,
    /// The backend answers this many calls a second, 429 to the rest.
    pub limit_per_second: u32,
    /// `--backend-calls-per-second` and `--backend-burst` of the first node.
    pub budget_per_second: u32,
    pub budget_burst: u32,
    pub with_budget: ThrottledRun,
    pub without_budget: ThrottledRun,
}

#[derive(Debug, Serialize)]
pub struct ThrottledRun {
    /// From the first NodePublishVolume sent to the last answered.
    pub seconds: Spread,
    pub mounted: Spread,
    /// Calls the backend served (its audit log).
    pub calls: Spread,
    /// The most calls it served within any one second.
    pub peak_per_second: Spread,
    /// 429s the node met (`sscsi_backend_calls_total{outcome="throttled"}`).
    pub throttled: Spread,
    /// Calls that waited for the budget (`sscsi_backend_queued_total`).
    pub queued: Spread,
}

#[derive(Debug, Serialize)]
pub struct Rotation {
    pub backend: String,
    /// `--rotation-poll-interval`, in seconds.
    pub interval_seconds: u64,
    pub volumes: usize,
    pub secrets: usize,
    pub changed_secrets: usize,
    pub affected_volumes: usize,
    pub calls: BTreeMap<String, CallCount>,
    /// Volumes whose files were written again.
    pub files_rewritten: CallCount,
    pub pass_seconds: Spread,
    /// From the change to the new bytes in every affected volume.
    pub propagation_seconds: Spread,
    pub rss_mounted_mib: Spread,
    /// After three scrapes of `/metrics` with the volumes mounted.
    pub rss_scraped_mib: Spread,
    /// The size of one `/metrics` answer then.
    pub metrics_kib: Spread,
}

#[derive(Debug, Serialize)]
pub struct SyncResult {
    pub backend: String,
    pub syncs: usize,
    pub service_accounts: usize,
    pub secrets: usize,
    pub changed_secrets: usize,
    pub affected_syncs: usize,
    /// The controller's `--rotation-poll-interval`, in seconds.
    pub interval_seconds: u64,
    /// From the first SecretSync created to every Secret written.
    pub create_seconds: Spread,
    pub create_calls: BTreeMap<String, CallCount>,
    pub pass_calls: BTreeMap<String, CallCount>,
    /// Secret writes (server-side applies) of the pass.
    pub secrets_written: CallCount,
    pub rss_mib: Spread,
}

#[derive(Debug, Serialize)]
pub struct StartupResult {
    pub ready_ms: Spread,
    pub idle_rss_mib: Spread,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub root: bool,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub mode: &'static str,
    pub date: String,
    pub commit: String,
    pub machine: Machine,
    pub servers: BTreeMap<String, String>,
    pub harness_build: &'static str,
    /// The sscsi binary measured.
    pub binary: String,
    pub run_seconds: f64,
    pub build_seconds: Option<f64>,
    pub latency: Vec<LatencyResult>,
    pub paired: Vec<PairedLatency>,
    pub burst: Vec<BurstResult>,
    pub throttled: Option<ThrottledBurst>,
    pub rotation: Vec<Rotation>,
    pub sync: Vec<SyncResult>,
    pub startup: StartupResult,
    /// Stripped binary size by provider set (`all`, or one provider).
    pub binary_mib: BTreeMap<String, f64>,
    /// Another binary measured in the same run (`--baseline`).
    pub baseline: Option<Baseline>,
}

/// The figures of `--baseline`, taken in the same run as the main ones.
#[derive(Debug, Serialize)]
pub struct Baseline {
    pub binary: String,
    pub binary_mib: f64,
    pub startup: StartupResult,
    pub latency: Vec<LatencyResult>,
}

fn num(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 100.0 || x == x.trunc() {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `median (min–max)`, or the one value when all runs agree.
fn spread(s: Spread) -> String {
    if s.min == s.max {
        num(s.median)
    } else {
        format!("{} ({}–{})", num(s.median), num(s.min), num(s.max))
    }
}

fn ratio(sscsi: f64, upstream: usize) -> String {
    match upstream {
        0 => "–".into(),
        n => format!("{:.2}×", sscsi / n as f64),
    }
}

/// A ratio's spread, as `1.05× (1.01–1.09)`.
fn ratio_spread(s: Spread) -> String {
    if s.min == s.max {
        format!("{:.2}×", s.median)
    } else {
        format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max)
    }
}

/// REPORT.md.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let m = &r.machine;
    let _ = writeln!(md, "# sscsi bench report\n");
    let _ = writeln!(
        md,
        "Generated by `cargo xtask bench{}` on {} at commit `{}`, in {:.0} s of measuring \
         (builds: {}). {} Every ratio compares two figures measured in the same run.\n",
        if r.mode == "quick" { " --quick" } else { "" },
        r.date,
        r.commit,
        r.run_seconds,
        r.build_seconds.map_or("not timed".into(), |s| format!("{s:.0} s")),
        match r.latency.first().map_or(1, |l| l.runs) {
            1 => "Each figure comes from one run.".to_owned(),
            n => format!(
                "Every figure is the median of {n} runs, with the smallest and largest in brackets."
            ),
        },
    );
    let _ = writeln!(
        md,
        "- Machine: {}, {} cores, {:.1} GiB, Linux {}.\n- Mounts: {}.\n- Servers: {}.\n\
         - sscsi: `{}`, driven through its CSI socket as kubelet drives it. The harness (API \
         server double, moto's counting proxy, the direct reads) is a {} build.\n",
        m.cpu,
        m.cores,
        m.memory_gib,
        m.kernel,
        if m.root { "real tmpfs (run as root)" } else { "plain directories (NOT run as root)" },
        r.servers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; "),
        r.binary,
        r.harness_build,
    );

    let _ = writeln!(md, "## 1. Publish latency\n");
    let _ = writeln!(
        md,
        "NodePublishVolume of a new pod's volume with 1, 10 and 50 objects (credentials already \
         cached, as for any pod after the first of its service account), beside the same \
         objects read directly by the same client (the AWS SDK, HTTP to OpenBao, the \
         filesystem) with a token in hand: no CSI, no files. p50/p99 in ms over {} publishes \
         per run.\n",
        r.latency.first().map_or(0, |l| l.samples_per_run)
    );
    let _ = writeln!(
        md,
        "| backend | objects | sscsi p50 | sscsi p99 | direct p50 | direct p99 | p50 ratio |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for l in &r.latency {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.2}× |",
            l.backend,
            l.objects,
            spread(l.sscsi_p50_ms),
            spread(l.sscsi_p99_ms),
            spread(l.direct_p50_ms),
            spread(l.direct_p99_ms),
            l.ratio_p50.median
        );
    }
    let _ = writeln!(
        md,
        "\nThe `local` direct read is a file read of microseconds, so its ratio is the whole fixed \
         cost of a publish: the gRPC call, the tmpfs mount, the atomic write and the pod status \
         object. Against a network backend that cost is a small share.\n"
    );
    let _ = writeln!(md, "![publish latency](latency.svg)\n");
    if !r.paired.is_empty() {
        let _ = writeln!(
            md,
            "The same class of {} objects published by the same node, alternately, as it is and \
             with a variant: through the provider API, `spec.provider` names a socket served by \
             `sscsi provider-server` (upstream's `v1alpha1` API, as the upstream driver and any \
             third-party provider speak it); with templated files, the class builds three files \
             from its objects (`sscsi.io/files`). p50 in ms over {} publishes per run.\n",
            r.paired[0].objects, r.paired[0].samples_per_run
        );
        let _ = writeln!(md, "| backend | variant | plain p50 | variant p50 | variant / plain |");
        let _ = writeln!(md, "|---|---|---:|---:|---:|");
        for l in &r.paired {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                l.backend,
                l.variant,
                spread(l.plain_p50_ms),
                spread(l.variant_p50_ms),
                ratio_spread(l.ratio_p50)
            );
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(md, "## 2. Burst of pods\n");
    for b in &r.burst {
        let _ = writeln!(
            md,
            "**{}**: {} volumes published at once ({} service accounts × {} pods, {} secrets \
             per account), on a node that has cached nothing: all mounted in {} s; peak RSS \
             {} MiB.\n",
            b.backend,
            b.volumes,
            b.service_accounts,
            b.volumes / b.service_accounts,
            b.secrets_per_account,
            spread(b.seconds),
            spread(b.peak_rss_mib)
        );
        calls_table(&mut md, &b.calls);
    }
    let _ = writeln!(
        md,
        "Upstream's calls follow its per-mount algorithm (reference/providers.md): ASCP builds \
         credentials per mount (one STS call) and reads every object; vault-csi-provider keys \
         its token cache on the pod, so each new pod logs in, then reads each path.\n"
    );
    let _ = writeln!(md, "![backend calls](calls.svg)\n");
    if let Some(t) = &r.throttled {
        throttled_section(&mut md, t);
    }

    let _ = writeln!(md, "## 3. Rotation pass\n");
    for p in &r.rotation {
        let _ = writeln!(
            md,
            "**{}**: {} mounted volumes, all due (`--rotation-poll-interval={}s`, and that long \
             since the last mount), {} of {} secrets changed ({} volumes affected), every volume \
             republished 16 at a time as kubelet does: the pass took {} s, and {} s after the \
             change every affected file held the new bytes. RSS with the volumes mounted: {} MiB.\n",
            p.backend,
            p.volumes,
            p.interval_seconds,
            p.changed_secrets,
            p.secrets,
            p.affected_volumes,
            spread(p.pass_seconds),
            spread(p.propagation_seconds),
            spread(p.rss_mounted_mib),
        );
        let mut rows: Vec<(&str, &CallCount)> =
            p.calls.iter().map(|(k, v)| (k.as_str(), v)).collect();
        rows.push(("volumes rewritten", &p.files_rewritten));
        rows_table(&mut md, &rows);
    }
    let _ = writeln!(
        md,
        "Upstream: ASCP makes credentials again per mount and asks `DescribeSecret` per object, \
         reading only changed values; vault-csi-provider re-reads every path with the pod's \
         cached token. Both skip rewriting unchanged files (the atomic writer's no-op check). \
         sscsi asks a KV v2 path's metadata for its current version first (the bench's policy \
         grants `secret/metadata/*` read; with vault-csi-provider's documented policy, which \
         does not, a refresh reads the data instead, after one refused metadata read per \
         identity). \
         sscsi's refreshes of one identity share each `DescribeSecret` and read for one rotation \
         interval, so a pass costs one check per (identity, secret) and one read per changed \
         secret and identity, however many volumes hold them. In a cluster the time to new \
         bytes also includes kubelet's republish period and `--rotation-poll-interval`; this is \
         the node's part.\n"
    );

    let _ = writeln!(md, "## 4. Secrets without pods (`sscsi controller`)\n");
    for y in &r.sync {
        let _ = writeln!(
            md,
            "**{}**: {} SecretSyncs over {} service accounts sharing {} secrets (one per \
             SecretSync), created at once: every Secret written {} s after the first \
             SecretSync. After a first pass, one rotation pass (`--rotation-poll-interval={}s`) with {} of \
             the {} secrets changed ({} SecretSyncs affected). Controller RSS with {} \
             SecretSyncs: {} MiB.\n",
            y.backend,
            y.syncs,
            y.service_accounts,
            y.secrets,
            spread(y.create_seconds),
            y.interval_seconds,
            y.changed_secrets,
            y.secrets,
            y.affected_syncs,
            y.syncs,
            spread(y.rss_mib),
        );
        let _ = writeln!(md, "Creating them:\n");
        calls_table(&mut md, &y.create_calls);
        let _ = writeln!(md, "The rotation pass:\n");
        let mut rows: Vec<(&str, &CallCount)> =
            y.pass_calls.iter().map(|(k, v)| (k.as_str(), v)).collect();
        rows.push(("Secrets written", &y.secrets_written));
        rows_table(&mut md, &rows);
    }
    let _ = writeln!(
        md,
        "Upstream here is the sync controller's per-SecretSync algorithm: a token and a \
         provider Mount per SecretSync and pass, each Mount making its credentials and reading \
         its object (the provider gets no object versions from it). Its code caches tokens per \
         service account and audience, as sscsi does; the column counts one per SecretSync, \
         as the algorithm states it. It has no rotation of its own: its poll re-runs that \
         algorithm. sscsi shares each (identity, secret) read across SecretSyncs, checks \
         versions on the pass, and writes only the Secrets whose bytes changed.\n"
    );

    let _ = writeln!(md, "## 5. Footprint\n");
    let _ = writeln!(md, "| what | value |\n|---|---:|");
    let _ = writeln!(
        md,
        "| start → `/readyz` 200 (20 classes listed) | {} ms |",
        spread(r.startup.ready_ms)
    );
    let _ = writeln!(md, "| RSS idle | {} MiB |", spread(r.startup.idle_rss_mib));
    for b in &r.burst {
        let _ = writeln!(
            md,
            "| peak RSS, burst of {} ({}) | {} MiB |",
            b.volumes,
            b.backend,
            spread(b.peak_rss_mib)
        );
    }
    for p in &r.rotation {
        let _ = writeln!(
            md,
            "| RSS, {} volumes mounted ({}) | {} MiB |",
            p.volumes,
            p.backend,
            spread(p.rss_mounted_mib)
        );
        let _ = writeln!(
            md,
            "| RSS after 3 scrapes of `/metrics` ({} KiB each), {} volumes ({}) | {} MiB |",
            spread(p.metrics_kib),
            p.volumes,
            p.backend,
            spread(p.rss_scraped_mib)
        );
    }
    for y in &r.sync {
        let _ = writeln!(
            md,
            "| RSS, controller with {} SecretSyncs ({}) | {} MiB |",
            y.syncs,
            y.backend,
            spread(y.rss_mib)
        );
    }
    for (set, size) in &r.binary_mib {
        let what = match set.as_str() {
            "all" => "every provider".to_owned(),
            one => format!("`--no-default-features --features {one}`"),
        };
        let _ = writeln!(md, "| stripped binary (`dist` profile), {what} | {size:.1} MiB |");
    }
    if r.binary_mib.len() == 1 {
        let _ = writeln!(md, "\nSingle-provider binaries are built by the full run only.");
    }
    if let Some(b) = &r.baseline {
        baseline_section(&mut md, r, b);
    }
    md
}

/// Section 2's burst against a backend that throttles.
fn throttled_section(md: &mut String, t: &ThrottledBurst) {
    let _ = writeln!(md, "### Against a backend that throttles\n");
    let _ = writeln!(
        md,
        "**{}**: the same burst of {} volumes ({} service accounts × {} pods, {} secrets per \
         account) against OpenBao with a rate-limit quota of {} requests a second (429 with \
         `Retry-After` above it): once with `--backend-calls-per-second={} --backend-burst={}`, \
         so no more than {} calls go out within any second (the server may count one more, \
         when a call's trip takes a few milliseconds longer than the next one's), and once \
         without a budget. The \
         calls served and the most served within one second come from OpenBao's audit log, \
         which a request refused by the quota never reaches; the 429s and the queued calls \
         from the node's `/metrics`.\n",
        t.backend,
        t.volumes,
        t.service_accounts,
        t.volumes / t.service_accounts,
        t.secrets_per_account,
        t.limit_per_second,
        t.budget_per_second,
        t.budget_burst,
        t.budget_per_second + t.budget_burst,
    );
    let _ = writeln!(md, "| | with the budget | without |\n|---|---:|---:|");
    let (a, b) = (&t.with_budget, &t.without_budget);
    let rows: [(&str, Spread, Spread); 6] = [
        ("volumes mounted", a.mounted, b.mounted),
        ("seconds to the last answer", a.seconds, b.seconds),
        ("calls served", a.calls, b.calls),
        ("most served within one second", a.peak_per_second, b.peak_per_second),
        ("429s met (`throttled`)", a.throttled, b.throttled),
        ("calls that waited their turn", a.queued, b.queued),
    ];
    for (what, with, without) in rows {
        let _ = writeln!(md, "| {what} | {} | {} |", spread(with), spread(without));
    }
    let _ = writeln!(
        md,
        "\nWithout a budget the node retries each 429 after its `Retry-After`, but the calls \
         of every pod retry together and meet the quota again: a mount whose calls spend \
         every attempt fails, and kubelet retries it with its own backoff, calling again. \
         With the budget the calls wait their turn in the node instead, the backend never \
         says no, and every pod mounts at the first try. (OpenBao's quota counts per \
         interval, not over every sliding second, so without a budget more than its rate \
         may be served within one second.)\n"
    );
}

/// Section 6: the `--baseline` binary beside this one, every figure from the same run.
fn baseline_section(md: &mut String, r: &Results, b: &Baseline) {
    let _ = writeln!(
        md,
        "\n## 6. Against `{}`\n\nThe same scenarios, servers and harness, in the same run: \
         this binary (`{}`) beside the baseline.\n",
        b.binary, r.binary
    );
    let _ = writeln!(md, "| what | baseline | this | this / baseline |\n|---|---:|---:|---:|");
    let mut row = |what: String, before: Spread, after: Spread| {
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {:.2}× |",
            spread(before),
            spread(after),
            after.median / before.median
        );
    };
    let one = |x: f64| Spread { median: x, min: x, max: x };
    let all = r.binary_mib.get("all").copied().unwrap_or(f64::NAN);
    row("binary, MiB".into(), one(b.binary_mib), one(all));
    row("RSS idle, MiB".into(), b.startup.idle_rss_mib, r.startup.idle_rss_mib);
    row("start → `/readyz`, ms".into(), b.startup.ready_ms, r.startup.ready_ms);
    for after in &r.latency {
        let Some(before) =
            b.latency.iter().find(|l| l.backend == after.backend && l.objects == after.objects)
        else {
            continue;
        };
        let (backend, objects) = (&after.backend, after.objects);
        row(
            format!("publish p50, {backend}, {objects} objects, ms"),
            before.sscsi_p50_ms,
            after.sscsi_p50_ms,
        );
        row(
            format!("publish p50 / direct p50, {backend}, {objects}"),
            before.ratio_p50,
            after.ratio_p50,
        );
    }
}

fn calls_table(md: &mut String, calls: &BTreeMap<String, CallCount>) {
    let rows: Vec<(&str, &CallCount)> = calls.iter().map(|(k, v)| (k.as_str(), v)).collect();
    rows_table(md, &rows);
}

fn rows_table(md: &mut String, rows: &[(&str, &CallCount)]) {
    let _ = writeln!(md, "| calls | sscsi | upstream | sscsi / upstream |\n|---|---:|---:|---:|");
    for (kind, c) in rows {
        let _ = writeln!(
            md,
            "| {kind} | {} | {} | {} |",
            spread(c.sscsi),
            c.upstream,
            ratio(c.sscsi.median, c.upstream)
        );
    }
    let _ = writeln!(md);
}

/// One bar: its value and, when it has one, its min–max whisker.
pub struct Bar {
    pub series: usize,
    pub value: f64,
    pub range: Option<(f64, f64)>,
}

/// A grouped bar chart on a log scale, as SVG.
pub fn bar_chart(
    title: &str,
    unit: &str,
    series: &[&str],
    groups: &[(String, Vec<Bar>)],
) -> String {
    const COLORS: [&str; 3] = ["#2b6cb0", "#c05621", "#718096"];
    let (width, height, left, top, bottom) = (960.0, 460.0, 70.0, 70.0, 80.0);
    let plot_w = width - left - 20.0;
    let plot_h = height - top - bottom;
    let positive = groups.iter().flat_map(|(_, bars)| bars).flat_map(|b| {
        [Some(b.value), b.range.map(|r| r.0), b.range.map(|r| r.1)].into_iter().flatten()
    });
    let positive: Vec<f64> = positive.filter(|v| *v > 0.0 && v.is_finite()).collect();
    // Room below the smallest bar and above the tallest, so both show; one
    // decade when nothing is above zero (a run with no backend calls).
    let (lo, hi) = match positive.is_empty() {
        true => (0.0, 1.0),
        false => {
            let lo = (positive.iter().copied().fold(f64::INFINITY, f64::min) / 2.0).log10().floor();
            let hi = (positive.iter().copied().fold(0.0, f64::max) * 2.0).log10().ceil();
            (lo, hi.max(lo + 1.0))
        }
    };
    let y = |v: f64| top + plot_h * (1.0 - (v.log10() - lo) / (hi - lo));
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{left}" y="24" font-size="16">{}</text>"#, escape(title));
    let mut decade = lo;
    while decade <= hi {
        let v = 10f64.powf(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y(v) + 4.0,
            num(v),
            y = y(v)
        );
        decade += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        escape(unit)
    );
    let group_w = plot_w / groups.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    for (g, (label, bars)) in groups.iter().enumerate() {
        let x0 = left + group_w * g as f64 + group_w * 0.1;
        for bar in bars {
            let x = x0 + bar_w * bar.series as f64;
            let color = COLORS[bar.series % COLORS.len()];
            if bar.value > 0.0 {
                let top_y = y(bar.value);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{top_y:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
                    bar_w - 2.0,
                    top + plot_h - top_y
                );
            }
            if let Some((min, max)) = bar.range.filter(|(a, b)| a != b && *a > 0.0) {
                let cx = x + bar_w / 2.0 - 1.0;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#,
                    y(min),
                    y(max)
                );
            }
            let label_y = if bar.value > 0.0 { y(bar.value) - 4.0 } else { top + plot_h - 4.0 };
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{label_y:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                x + bar_w / 2.0 - 1.0,
                num(bar.value)
            );
        }
        for (i, line) in label.lines().enumerate() {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
                x0 + group_w * 0.4,
                top + plot_h + 18.0 + 14.0 * i as f64,
                escape(line)
            );
        }
    }
    // Legend at the top right, wide enough for the longest name (~7 px a character).
    let legend_w = 24.0 + 7.0 * series.iter().map(|s| s.chars().count()).max().unwrap_or(0) as f64;
    for (i, name) in series.iter().enumerate() {
        let x = width - 10.0 - legend_w;
        let y = 10.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 18.0,
            y + 10.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The latency plot: sscsi's p50 beside the direct read's.
pub fn latency_svg(results: &[LatencyResult]) -> String {
    let groups: Vec<(String, Vec<Bar>)> = results
        .iter()
        .map(|l| {
            let bar =
                |series, s: Spread| Bar { series, value: s.median, range: Some((s.min, s.max)) };
            (
                format!(
                    "{}\n{} object{}",
                    l.backend,
                    l.objects,
                    if l.objects == 1 { "" } else { "s" }
                ),
                vec![bar(0, l.sscsi_p50_ms), bar(1, l.direct_p50_ms)],
            )
        })
        .collect();
    bar_chart(
        "Publish latency, p50 (median of runs, whiskers min–max)",
        "milliseconds (log scale)",
        &["sscsi NodePublishVolume", "same objects read directly"],
        &groups,
    )
}

/// The calls plot: sscsi beside upstream, burst and rotation.
pub fn calls_svg(burst: &[BurstResult], rotation: &[Rotation]) -> String {
    let mut groups = Vec::new();
    let mut add = |scenario: &str, backend: &str, calls: &BTreeMap<String, CallCount>| {
        for (kind, c) in calls {
            if c.upstream == 0 && c.sscsi.median == 0.0 {
                continue;
            }
            let call = match kind.as_str() {
                super::backend::STS_LOGIN => "STS",
                super::backend::GET_SECRET => "GetSecretValue",
                super::backend::DESCRIBE_SECRET => "DescribeSecret",
                super::backend::VAULT_LOGIN => "login",
                super::backend::VAULT_READ => "read",
                other => other,
            };
            let label = format!("{scenario}\n{backend}\n{call}");
            groups.push((
                label,
                vec![
                    Bar {
                        series: 0,
                        value: c.sscsi.median,
                        range: Some((c.sscsi.min, c.sscsi.max)),
                    },
                    Bar { series: 1, value: c.upstream as f64, range: None },
                ],
            ));
        }
    };
    for b in burst {
        add("burst", &b.backend, &b.calls);
    }
    for p in rotation {
        add("rotation", &p.backend, &p.calls);
    }
    bar_chart(
        "Backend calls: burst of pods, rotation pass",
        "calls (log scale)",
        &["sscsi", "upstream (per-mount algorithm)"],
        &groups,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_of_odd_and_even_counts() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Spread { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]), Spread { median: 2.5, min: 1.0, max: 4.0 });
        assert!(Spread::of(&[]).median.is_nan());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[7.0, 9.0], 50.0), 7.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    /// A `--backends local` run has no calls to plot: one decade of grid, not
    /// a loop that never ends (it once filled the machine's memory).
    #[test]
    fn a_chart_with_nothing_above_zero_has_one_decade() {
        let zero = vec![Bar { series: 0, value: 0.0, range: None }];
        for groups in [vec![], vec![("none".to_owned(), zero)]] {
            let svg = bar_chart("t", "u", &["a"], &groups);
            assert_eq!(svg.matches("stroke=\"#ddd\"").count(), 2, "{svg}");
        }
        assert!(calls_svg(&[], &[]).ends_with("</svg>\n"));
    }

    #[test]
    fn a_chart_has_a_bar_per_positive_value_and_a_label_for_zero() {
        let groups = vec![
            ("a".to_owned(), vec![Bar { series: 0, value: 20.0, range: Some((18.0, 25.0)) }]),
            ("b".to_owned(), vec![Bar { series: 1, value: 0.0, range: None }]),
        ];
        let svg = bar_chart("t <1>", "u", &["x", "y"], &groups);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;1&gt;"));
        // Two legend swatches and one bar; one whisker.
        assert_eq!(svg.matches("<rect").count(), 1 + 2 + 1);
        assert_eq!(svg.matches(r#"stroke="black""#).count(), 1);
        assert!(svg.contains(">20</text>") && svg.contains(">0</text>"));
    }
}
