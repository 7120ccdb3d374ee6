//! The monitor of `bench e2e`: the server's API and `/metrics`, the
//! receiver's `/stats` and `/reset`.

use super::load::BodyTemplate;
use super::receiver::{ReceiverStats, now_us};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The HTTP client of the monitor: the receiver's stats, the server's
/// metrics and API.
pub(super) struct Probe {
    http: reqwest::Client,
    server: String,
    receiver: String,
}

impl Probe {
    pub(super) fn new(server: &str, receiver: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .context("cannot build the HTTP client")?,
            server: server.to_string(),
            receiver: receiver.to_string(),
        })
    }

    /// One webhook connection to `hook_url` and one rule sending every
    /// event to it.
    pub(super) async fn create_route(
        &self,
        secret_key: &str,
        hook_url: &str,
    ) -> anyhow::Result<()> {
        let connection = self
            .api_post(
                secret_key,
                "/v1/connections",
                json!({"type": "webhook", "name": "bench", "config": {"url": hook_url}}),
            )
            .await
            .context("cannot create the webhook connection")?;
        let id = connection["id"]
            .as_str()
            .context("no connection id in the answer")?;
        self.api_post(
            secret_key,
            "/v1/rules",
            json!({"name": "all", "events": ["*"], "connection_id": id}),
        )
        .await
        .context("cannot create the rule")?;
        Ok(())
    }

    async fn api_post(&self, key: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.server))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("server answered {status}: {text}");
        }
        serde_json::from_str(&text).context("the server's answer is not JSON")
    }

    /// Sends one event and waits for it at the receiver, so a broken route
    /// fails here rather than as a zero in every phase.
    pub(super) async fn check_pipeline(
        &self,
        key: &str,
        body: &BodyTemplate,
    ) -> anyhow::Result<Duration> {
        self.reset().await?;
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}/v1/events", self.server))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.render(now_us()))
            .send()
            .await
            .context("cannot post the first event")?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            let status = response.status();
            bail!(
                "the first event got {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let (stats, complete) = self.wait_delivered(1, Duration::from_secs(10)).await?;
        if !complete {
            bail!("the first event did not reach the receiver within 10 s (see the server's log)");
        }
        if stats.recorded == 0 {
            bail!("the receiver found no data.sent_at_us in the webhook body");
        }
        let delivered = started.elapsed();
        self.reset().await?;
        Ok(delivered)
    }

    pub(super) async fn stats(&self) -> anyhow::Result<ReceiverStats> {
        self.http
            .get(format!("{}/stats", self.receiver))
            .send()
            .await
            .context("cannot reach the receiver")?
            .error_for_status()?
            .json()
            .await
            .context("the receiver's stats are not JSON")
    }

    pub(super) async fn reset(&self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/reset", self.receiver))
            .send()
            .await
            .context("cannot reach the receiver")?
            .error_for_status()?;
        Ok(())
    }

    /// `switchyard_queue_depth` from `/metrics`; `None` when unavailable.
    pub(super) async fn queue_depth(&self) -> Option<f64> {
        parse_gauge(&self.metrics().await?, "switchyard_queue_depth")
    }

    /// The server's `/metrics` text; `None` when it cannot be read.
    async fn metrics(&self) -> Option<String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.server))
            .send()
            .await
            .ok()?;
        response.text().await.ok()
    }

    /// `switchyard_attempts_total` of every node summed by its `result`
    /// label, so a run can say whether any attempt failed and was retried
    /// (each node counts only its own attempts); `None` when a node's
    /// `/metrics` cannot be read.
    pub(super) async fn attempt_results(nodes: &[Probe]) -> Option<Vec<(String, f64)>> {
        let mut sums = Vec::new();
        for node in nodes {
            let text = node.metrics().await?;
            add_by_label(&mut sums, &text, "switchyard_attempts_total", "result");
        }
        Some(sums)
    }

    /// Polls `/metrics` until the queue is empty or `limit` passed; the
    /// last depth read, `None` when the gauge is unavailable.
    pub(super) async fn wait_queue_empty(&self, limit: Duration) -> Option<f64> {
        let give_up = Instant::now() + limit;
        loop {
            let depth = self.queue_depth().await?;
            if depth <= 0.0 || Instant::now() >= give_up {
                return Some(depth);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the receiver until it counted `expected` requests or `limit`
    /// passed; the last stats and whether they all arrived.
    pub(super) async fn wait_delivered(
        &self,
        expected: u64,
        limit: Duration,
    ) -> anyhow::Result<(ReceiverStats, bool)> {
        let give_up = Instant::now() + limit;
        loop {
            let stats = self.stats().await?;
            if stats.count >= expected {
                return Ok((stats, true));
            }
            if Instant::now() >= give_up {
                return Ok((stats, false));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The value of an unlabelled sample in Prometheus text exposition.
fn parse_gauge(text: &str, name: &str) -> Option<f64> {
    samples(text, name).next().map(|(_, value)| value)
}

/// The samples of `name` summed by the value of their `label`, added to
/// `sums` (in the order first seen).
fn add_by_label(sums: &mut Vec<(String, f64)>, text: &str, name: &str, label: &str) {
    let key = format!("{label}=\"");
    for (labels, value) in samples(text, name) {
        let Some(found) = labels
            .split(',')
            .find_map(|pair| pair.strip_prefix(key.as_str())?.strip_suffix('"'))
        else {
            continue;
        };
        match sums.iter_mut().find(|(seen, _)| seen == found) {
            Some((_, sum)) => *sum += value,
            None => sums.push((found.to_string(), value)),
        }
    }
}

/// Every sample of `name`: its labels (inside the braces, empty when it
/// has none) and its value. Lines of other metrics and lines that do not
/// parse are skipped.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once('}')?,
            None => ("", rest),
        };
        if !rest.starts_with(' ') {
            return None;
        }
        Some((labels, rest.split_whitespace().next()?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_counter_by_one_label() {
        let text = "# TYPE switchyard_attempts_total counter\n\
                    switchyard_attempts_total{type=\"webhook\",result=\"succeeded\"} 10\n\
                    switchyard_attempts_total{type=\"slack\",result=\"succeeded\"} 5\n\
                    switchyard_attempts_total{type=\"webhook\",result=\"retrying\"} 2\n\
                    switchyard_attempts_total_other{result=\"dead\"} 7\n\
                    switchyard_attempts_total{type=\"webhook\"} 3\n";
        let sum_by_label = |text: &str| {
            let mut sums = Vec::new();
            add_by_label(&mut sums, text, "switchyard_attempts_total", "result");
            sums
        };
        assert_eq!(
            sum_by_label(text),
            [
                ("succeeded".to_string(), 15.0),
                ("retrying".to_string(), 2.0)
            ]
        );
        assert!(sum_by_label("").is_empty());
    }

    #[test]
    fn reads_an_unlabelled_gauge() {
        let text = "# TYPE switchyard_queue_depth gauge\n\
                    switchyard_queue_depth_other 9\n\
                    switchyard_queue_depth 1234\n";
        assert_eq!(parse_gauge(text, "switchyard_queue_depth"), Some(1234.0));
        assert_eq!(parse_gauge("", "switchyard_queue_depth"), None);
    }
}
