//! Logging: human-readable on a terminal, one JSON object per line when
//! `log.format = "json"`. `RUST_LOG` overrides `log.level`. Metrics: a
//! Prometheus recorder rendered at `/metrics`.

use crate::config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// How often recorded histogram samples are folded into their buckets.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A counter series not updated for this long is dropped, and starts again
/// from zero if it is (Prometheus reads that as a counter reset). Without
/// it `switchyard_connection_failures_total{connection}` would keep a series
/// for every connection that ever failed, deleted ones included, until a
/// restart. A day keeps every live dashboard whole.
pub const IDLE_COUNTER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The recorder drops idle series only while it renders, so upkeep renders
/// (and discards) the page every this many runs: about once a minute, so
/// idle series go even when nobody scrapes.
const RENDER_EVERY_UPKEEPS: u64 = 12;

pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .map_err(|error| anyhow::anyhow!("invalid value for `log.level`: {error}"))?;
    // Logs go to stderr; stdout carries only the start-up lines (the
    // listening address and a generated admin token) for scripts to read.
    use std::io::IsTerminal;
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

/// Colour codes only for a person at a terminal: in a file or the journal
/// they are noise. `NO_COLOR` set to anything but empty turns them off
/// (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// The process-wide Prometheus recorder, installed on first use (metrics
/// are global in the `metrics` crate, so every server in a process shares
/// it).
pub fn metrics_handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            match recorder_builder(IDLE_COUNTER_TIMEOUT)
                .and_then(PrometheusBuilder::install_recorder)
            {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "metrics are unavailable");
                    None
                }
            }
        })
        .as_ref()
}

/// The recorder's settings: histogram buckets, and counters dropped once
/// idle for `idle_counters`. Gauges and histograms are kept: they carry no
/// per-tenant labels.
///
/// Every histogram has buckets, so none is rendered as a summary: buckets
/// add up across nodes (a PostgreSQL deployment runs several), and a
/// sample costs the upkeep a bucket lookup where a summary's quantile
/// sketch cost about 13 k instructions per sample (docs/benchmarks.md,
/// issue 13, fifteenth sitting). A histogram not named below gets
/// [`STORAGE_SECONDS_BUCKETS`].
fn recorder_builder(idle_counters: Duration) -> Result<PrometheusBuilder, BuildError> {
    let per_metric: [(&str, &[f64]); 3] = [
        (
            "switchyard_attempt_duration_seconds",
            ATTEMPT_SECONDS_BUCKETS,
        ),
        ("switchyard_write_batch_size", BATCH_SIZE_BUCKETS),
        ("switchyard_outcome_batch_size", BATCH_SIZE_BUCKETS),
    ];
    let builder = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::COUNTER, Some(idle_counters))
        .set_buckets(STORAGE_SECONDS_BUCKETS)?;
    per_metric
        .into_iter()
        .try_fold(builder, |builder, (name, buckets)| {
            builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets)
        })
}

/// The buckets of the storage latencies: a commit
/// (`switchyard_commit_seconds`) and a log sync
/// (`switchyard_wal_sync_seconds`), from 100 µs to 100 ms.
const STORAGE_SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// An attempt's duration, from 5 ms to 30 s.
const ATTEMPT_SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Jobs per write batch or outcome group.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// What the upkeep task does each run: fold histogram samples into their
/// buckets, and now and then render the page so idle series are dropped.
pub fn upkeep(handle: &'static PrometheusHandle) -> impl Fn() + Send + 'static {
    let runs = AtomicU64::new(0);
    move || {
        handle.run_upkeep();
        if runs
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(RENDER_EVERY_UPKEEPS)
        {
            drop(handle.render());
        }
    }
}

/// Adds `by` to a counter updated for every event or attempt, through this
/// thread's handle of it (see [`HotHandles`]). Label values are static
/// strings, so the handles a thread keeps are bounded by the code.
pub fn count(name: &'static str, labels: &[(&'static str, &'static str)], by: u64) {
    with_hot_handles(
        |hot, now| {
            hot.counter(name, labels, now, HOT_HANDLE_REFRESH)
                .increment(by)
        },
        || HotKey::new(name, labels).counter().increment(by),
    );
}

/// Records `value` in a histogram updated for every event, attempt or
/// write batch, through this thread's handle of it (see [`HotHandles`]).
pub fn record(name: &'static str, labels: &[(&'static str, &'static str)], value: f64) {
    with_hot_handles(
        |hot, now| {
            hot.histogram(name, labels, now, HOT_HANDLE_REFRESH)
                .record(value)
        },
        || HotKey::new(name, labels).histogram().record(value),
    );
}

/// Runs `kept` with this thread's handles, or `looked_up` on a thread whose
/// locals are being torn down.
fn with_hot_handles(kept: impl FnOnce(&mut HotHandles, Instant), looked_up: impl FnOnce()) {
    if HOT
        .try_with(|hot| kept(&mut hot.borrow_mut(), Instant::now()))
        .is_err()
    {
        looked_up();
    }
}

/// How long a thread keeps a handle before it looks it up again (see
/// [`HotHandles`]; any span well under [`IDLE_COUNTER_TIMEOUT`] would do).
const HOT_HANDLE_REFRESH: Duration = Duration::from_secs(60);

thread_local! {
    static HOT: RefCell<HotHandles> = RefCell::new(HotHandles::default());
}

/// One thread's handles of the metrics on the hot path. Looking a handle up
/// (`metrics::counter!`) builds its key, hashes it and takes the registry's
/// lock: about 1 k instructions, which at four counters and two
/// histograms per delivered event was 2–3 % of the server's
/// (docs/benchmarks.md, issue 13, seventeenth sitting).
///
/// Each handle is looked up again once it is [`HOT_HANDLE_REFRESH`] old.
/// The exporter drops a counter series not updated for
/// [`IDLE_COUNTER_TIMEOUT`], and a handle kept past that would count into
/// nothing: a counter idle that long has an old handle, looked up again
/// at its next update, so its series comes back as it would with
/// `metrics::counter!`. If that lookup races with the drop, or a thread
/// looked a handle up before the recorder was installed, the handle is
/// replaced within the refresh.
#[derive(Default)]
struct HotHandles {
    counters: Vec<Kept<metrics::Counter>>,
    histograms: Vec<Kept<metrics::Histogram>>,
}

struct Kept<H> {
    key: HotKey,
    handle: H,
    looked_up: Instant,
}

struct HotKey {
    name: &'static str,
    labels: Vec<(&'static str, &'static str)>,
}

impl HotKey {
    fn is(&self, name: &str, labels: &[(&'static str, &'static str)]) -> bool {
        self.name == name && self.labels == labels
    }

    fn new(name: &'static str, labels: &[(&'static str, &'static str)]) -> Self {
        Self {
            name,
            labels: labels.to_vec(),
        }
    }

    fn counter(&self) -> metrics::Counter {
        metrics::counter!(self.name, self.metric_labels())
    }

    fn histogram(&self) -> metrics::Histogram {
        metrics::histogram!(self.name, self.metric_labels())
    }

    fn metric_labels(&self) -> Vec<metrics::Label> {
        self.labels
            .iter()
            .map(|&(key, value)| metrics::Label::from_static_parts(key, value))
            .collect()
    }
}

impl HotHandles {
    fn counter(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        now: Instant,
        refresh: Duration,
    ) -> &metrics::Counter {
        kept(
            &mut self.counters,
            name,
            labels,
            now,
            refresh,
            HotKey::counter,
        )
    }

    fn histogram(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        now: Instant,
        refresh: Duration,
    ) -> &metrics::Histogram {
        kept(
            &mut self.histograms,
            name,
            labels,
            now,
            refresh,
            HotKey::histogram,
        )
    }
}

/// The handle kept for `name` and `labels`, looked up first if there is
/// none or it is older than `refresh`.
fn kept<'a, H>(
    handles: &'a mut Vec<Kept<H>>,
    name: &'static str,
    labels: &[(&'static str, &'static str)],
    now: Instant,
    refresh: Duration,
    look_up: impl Fn(&HotKey) -> H,
) -> &'a H {
    let at = match handles.iter().position(|kept| kept.key.is(name, labels)) {
        Some(at) => at,
        None => {
            let key = HotKey::new(name, labels);
            let handle = look_up(&key);
            handles.push(Kept {
                key,
                handle,
                looked_up: now,
            });
            handles.len() - 1
        }
    };
    let kept = &mut handles[at];
    if now.saturating_duration_since(kept.looked_up) > refresh {
        kept.handle = look_up(&kept.key);
        kept.looked_up = now;
    }
    &kept.handle
}

/// Sets `switchyard_database_bytes` to the size of the database file. Pages
/// freed by retention are re-used inside the file, so this levels off
/// rather than falling; `switchyard compact` gives the space back.
pub fn record_database_size(path: &std::path::Path) {
    match std::fs::metadata(path) {
        Ok(metadata) => metrics::gauge!("switchyard_database_bytes").set(metadata.len() as f64),
        Err(error) => {
            tracing::debug!(%error, path = %path.display(), "cannot read the database size")
        }
    }
}

/// Runs `upkeep` every `period` until `shutdown`. The Prometheus recorder
/// keeps every histogram sample until upkeep or a scrape of `/metrics` folds
/// it into the buckets; with nobody scraping, the commit histogram alone
/// would grow by tens of kilobytes a second under load.
pub async fn metrics_upkeep(period: Duration, shutdown: CancellationToken, upkeep: impl Fn()) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => upkeep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_lines(page: &str, lines: &[&str]) {
        for line in lines {
            assert!(page.contains(line), "no `{line}` in:\n{page}");
        }
    }

    /// Renders the page until `series` is no longer in it (the recorder
    /// drops idle series while it renders), calling `meanwhile` before each
    /// render; fails the test after 10 s.
    fn render_until_gone(
        handle: &PrometheusHandle,
        series: &str,
        mut meanwhile: impl FnMut(),
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            meanwhile();
            let page = handle.render();
            if !page.contains(series) {
                return page;
            }
            assert!(Instant::now() < deadline, "{series} never dropped: {page}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A recorder of our settings, not installed, and its handle.
    fn recorder_for_tests(
        idle_counters: Duration,
    ) -> (
        metrics_exporter_prometheus::PrometheusRecorder,
        PrometheusHandle,
    ) {
        let recorder = recorder_builder(idle_counters).unwrap().build_recorder();
        let handle = recorder.handle();
        (recorder, handle)
    }
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None), "a file or the journal");
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(use_colour(true, Some(OsStr::new(""))), "empty means unset");
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_upkeep_runs_every_period_until_shutdown() {
        let runs = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let counted = runs.clone();
        let task = tokio::spawn(metrics_upkeep(
            Duration::from_secs(5),
            shutdown.clone(),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        ));
        // The first tick is immediate, then one every five seconds.
        tokio::time::sleep(Duration::from_millis(10_001)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        shutdown.cancel();
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn every_histogram_is_rendered_with_buckets_never_as_a_summary() {
        let (recorder, handle) = recorder_for_tests(IDLE_COUNTER_TIMEOUT);
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("switchyard_wal_sync_seconds").record(0.0003);
            metrics::histogram!("switchyard_outcome_batch_size").record(5.0);
            metrics::histogram!("switchyard_attempt_duration_seconds", "type" => "webhook")
                .record(0.02);
            metrics::histogram!("some_future_histogram").record(1.0);
        });
        let page = handle.render();
        assert!(!page.contains("quantile="), "{page}");
        assert_lines(
            &page,
            &[
                "switchyard_wal_sync_seconds_bucket{le=\"0.0005\"} 1",
                "switchyard_wal_sync_seconds_bucket{le=\"0.00025\"} 0",
                "switchyard_outcome_batch_size_bucket{le=\"8\"} 1",
                "switchyard_outcome_batch_size_bucket{le=\"4\"} 0",
                "switchyard_attempt_duration_seconds_bucket{type=\"webhook\",le=\"0.025\"} 1",
                "some_future_histogram_bucket{le=\"+Inf\"} 1",
                "switchyard_wal_sync_seconds_count 1",
            ],
        );
    }

    #[test]
    fn idle_counter_series_are_dropped_and_other_kinds_kept() {
        let (recorder, handle) = recorder_for_tests(Duration::from_millis(200));
        let failure = |connection: &'static str| {
            metrics::with_local_recorder(&recorder, || {
                metrics::counter!("switchyard_connection_failures_total", "connection" => connection)
                    .increment(1);
            });
        };
        failure("con_gone");
        failure("con_live");
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("switchyard_queue_depth").set(3.0);
            metrics::histogram!("switchyard_commit_seconds").record(0.001);
        });
        let page = handle.render();
        assert!(page.contains("connection=\"con_gone\""), "{page}");

        // The idle series goes; the other one is kept busy meanwhile.
        let page = render_until_gone(&handle, "con_gone", || failure("con_live"));
        assert!(page.contains("connection=\"con_live\""), "{page}");
        assert!(page.contains("switchyard_queue_depth 3"), "{page}");
        assert!(page.contains("switchyard_commit_seconds_count 1"), "{page}");

        // A dropped series comes back, from zero, when it counts again.
        failure("con_gone");
        let page = handle.render();
        assert!(
            page.contains("switchyard_connection_failures_total{connection=\"con_gone\"} 1"),
            "{page}"
        );
    }

    #[test]
    fn hot_metrics_count_through_the_handles_a_thread_keeps() {
        let (recorder, handle) = recorder_for_tests(IDLE_COUNTER_TIMEOUT);
        // A thread of its own, so that its handles come from this recorder.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                metrics::with_local_recorder(&recorder, || {
                    for result in ["succeeded", "succeeded", "dead"] {
                        count(
                            "switchyard_attempts_total",
                            &[("type", "webhook"), ("result", result)],
                            1,
                        );
                    }
                    count("switchyard_events_ingested_total", &[], 5);
                    record("switchyard_write_batch_size", &[], 3.0);
                    record("switchyard_write_batch_size", &[], 6.0);
                    HOT.with_borrow(|hot| {
                        assert_eq!((hot.counters.len(), hot.histograms.len()), (3, 1));
                    });
                });
            });
        });
        assert_lines(
            &handle.render(),
            &[
                "switchyard_attempts_total{type=\"webhook\",result=\"succeeded\"} 2",
                "switchyard_attempts_total{type=\"webhook\",result=\"dead\"} 1",
                "switchyard_events_ingested_total 5",
                "switchyard_write_batch_size_count 2",
            ],
        );
    }

    /// A counter the exporter dropped as idle comes back when a thread that
    /// kept its handle counts again, as it does with `metrics::counter!`.
    #[test]
    fn a_hot_counter_dropped_as_idle_comes_back() {
        let (recorder, handle) = recorder_for_tests(Duration::from_millis(200));
        let mut hot = HotHandles::default();
        let mut bump = |name: &'static str| {
            metrics::with_local_recorder(&recorder, || {
                let refresh = Duration::from_millis(50);
                hot.counter(name, &[], Instant::now(), refresh).increment(1);
            });
        };
        bump("switchyard_events_ingested_total");
        bump("switchyard_events_ingested_total");
        assert_lines(&handle.render(), &["switchyard_events_ingested_total 2"]);

        render_until_gone(&handle, "switchyard_events_ingested_total", || {
            bump("switchyard_deliveries_suppressed_total")
        });

        bump("switchyard_events_ingested_total");
        assert_lines(&handle.render(), &["switchyard_events_ingested_total 1"]);
    }

    /// A handle in steady use is looked up again once it is older than the
    /// refresh: one looked up from the wrong recorder (none installed yet,
    /// or a lookup that raced with the drop of its series) is replaced.
    #[test]
    fn a_hot_handle_in_steady_use_is_looked_up_again_after_the_refresh() {
        let (early, early_page) = recorder_for_tests(IDLE_COUNTER_TIMEOUT);
        let (current, current_page) = recorder_for_tests(IDLE_COUNTER_TIMEOUT);
        let mut hot = HotHandles::default();
        let refresh = Duration::from_secs(60);
        let start = Instant::now();
        let mut bump = |recorder: &metrics_exporter_prometheus::PrometheusRecorder, at: u64| {
            metrics::with_local_recorder(recorder, || {
                let now = start + Duration::from_secs(at);
                hot.counter("switchyard_events_ingested_total", &[], now, refresh)
                    .increment(1);
                hot.histogram("switchyard_write_batch_size", &[], now, refresh)
                    .record(1.0);
            });
        };
        bump(&early, 0);
        bump(&current, 30);
        bump(&current, 61);
        bump(&current, 90);

        for page in [early_page.render(), current_page.render()] {
            assert_lines(
                &page,
                &[
                    "switchyard_events_ingested_total 2",
                    "switchyard_write_batch_size_count 2",
                ],
            );
        }
    }
}
