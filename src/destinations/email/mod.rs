//! Email through Resend or SMTP.
//!
//! A connection says which provider and sender: `{"provider": "resend" |
//! "smtp", "from": "Alerts <alerts@example.com>"}`; the credentials are the
//! operator's (`email.resend.*`, `email.smtp.*` in the configuration), never
//! stored per connection. A rule's target is `{"to": ["a@b", …]}`.
//!
//! Same shape as the other destinations: [`config`] (the connection's
//! provider and sender, the rule's recipients), [`render`] (pure), the
//! send, and pure classifiers ([`classify_resend`], [`classify_smtp`])
//! turning an answer into a [`Verdict`].
//!
//! Resend: `POST {api_base}/emails` with `Idempotency-Key` = the delivery id,
//! so a retried attempt never sends a second mail. SMTP: one pooled lettre
//! transport built at start; the `Message-ID` is derived from the delivery id
//! for the same reason (receivers can de-duplicate on it).
//!
//! An alert's mails thread ([`Threading`]): the `alert.triggered` mail's
//! `Message-ID` is derived from the workspace, the rule, the alert and the
//! sender's domain, so the `acknowledged` and `resolved` mails that follow
//! (subject prefixed with the state) can name it in `In-Reply-To` and
//! `References` without anything stored.

pub mod config;
pub mod threading;

pub use config::{
    EmailConnectionConfig, MAX_RECIPIENTS, Provider, recipients, validate_config, validate_target,
};
pub use threading::{Threading, alert_message_id};

use super::message::{self, AlertSummary, Escape, TemplateError};
use super::{
    BoxFuture, Destination, Invalid, Job, NewConnection, Outcome, Verdict, response_excerpt,
    transport_outcome,
};
use crate::config::{Config, SmtpConfig, SmtpTls};
use crate::destinations::retry_after::parse_retry_after;
use crate::model::{AlertState, ConnectionKind, Event};
use crate::rules::Severity;
use crate::secret::Secret;
use config::parse_mailbox;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Longest subject line sent, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// Sent to Resend, which refuses requests without a `User-Agent`.
pub const USER_AGENT: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));

/// SMTP connections kept open per instance.
const SMTP_POOL_SIZE: u32 = 8;

/// A rendered email: what any provider sends.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedEmail {
    /// One line, at most [`MAX_SUBJECT_CHARS`] characters.
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Whether the rule's template set the subject (with a Resend stored
    /// template, only then is a subject sent, so the template's own applies).
    pub custom_subject: bool,
    /// A Resend stored template to send instead of `html`/`text` (Resend
    /// only; SMTP sends `html` and `text`).
    pub resend_template: Option<ResendTemplate>,
}

/// Resend's `template: {id, variables}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResendTemplate {
    pub id: String,
    pub variables: BTreeMap<String, Value>,
}

/// The default HTML layout: table-based, inline styles, at most 600px wide,
/// rendered with HTML auto-escaping so payload text cannot add markup.
pub const DEFAULT_HTML: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>{{ subject }}</title>
</head>
<body style="margin:0;padding:0;background-color:#f4f5f7;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="background-color:#f4f5f7;">
<tr><td align="center" style="padding:24px 12px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="max-width:600px;background-color:#ffffff;border:1px solid #e1e4e8;border-radius:6px;">
<tr><td style="height:6px;line-height:6px;font-size:0;background-color:{{ color }};border-radius:6px 6px 0 0;">&nbsp;</td></tr>
<tr><td style="padding:24px 24px 8px 24px;font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif;">
{%- if badge %}
<span style="display:inline-block;padding:2px 8px;border-radius:3px;background-color:{{ color }};color:#ffffff;font-size:12px;line-height:18px;font-weight:bold;letter-spacing:0.5px;">{{ badge }}</span>
{%- endif %}
<h1 style="margin:12px 0 0 0;font-size:20px;line-height:28px;color:#1f2328;font-weight:600;word-break:break-word;">{{ title }}</h1>
</td></tr>
{%- if rows %}
<tr><td style="padding:8px 24px 16px 24px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="border-collapse:collapse;font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;line-height:20px;">
{%- for row in rows %}
<tr><td width="30%" style="padding:6px 12px 6px 0;border-top:1px solid #eaecef;color:#656d76;vertical-align:top;white-space:nowrap;">{{ row.label }}</td><td style="padding:6px 0;border-top:1px solid #eaecef;color:#1f2328;vertical-align:top;word-break:break-word;">{{ row.value }}</td></tr>
{%- endfor %}
</table>
</td></tr>
{%- endif %}
<tr><td style="padding:0 24px 24px 24px;font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif;font-size:12px;line-height:18px;color:#8c959f;">Event {{ event_id }} &middot; {{ event_name }}<br>Sent by Switchyard</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"##;

/// The colour of a severity's bar and badge.
fn severity_color(severity: Option<Severity>) -> &'static str {
    match severity {
        Some(Severity::Critical) => "#b42318",
        Some(Severity::High) => "#d9480f",
        Some(Severity::Medium) => "#b7791f",
        Some(Severity::Low) => "#2f6fba",
        Some(Severity::Info) => "#57606a",
        None => "#57606a",
    }
}

/// The labelled fields both default bodies list, in order.
fn summary_rows(summary: &AlertSummary) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut push = |label: &str, value: &Option<String>| {
        if let Some(value) = value {
            rows.push((label.to_string(), value.clone()));
        }
    };
    push("Value", &summary.value);
    push("Threshold", &summary.threshold);
    push("Account", &summary.account);
    push("Time", &Some(summary.time.clone()));
    rows.extend(summary.extra.iter().cloned());
    if let Some(note) = summary.suppressed_note() {
        rows.push(("Suppressed".to_string(), note));
    }
    rows
}

/// Text fit for a subject: one line, whitespace collapsed, truncated.
pub fn subject_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    message::truncate(&line, MAX_SUBJECT_CHARS)
}

fn default_text(summary: &AlertSummary, headline: &str) -> String {
    let mut text = format!("{headline}\n\n");
    for (label, value) in summary_rows(summary) {
        text.push_str(&format!("{label}: {value}\n"));
    }
    text.push_str(&format!(
        "\nEvent: {} ({})\n",
        summary.event_id, summary.event_name
    ));
    text
}

fn default_html(summary: &AlertSummary, subject: &str) -> Result<String, TemplateError> {
    let headline = summary.headline();
    let badge = summary
        .severity
        .map(|severity| severity.as_str().to_uppercase());
    // The badge shows the severity, so the heading does not repeat it.
    let title = match &badge {
        Some(badge) => headline
            .strip_prefix(&format!("[{badge}] "))
            .unwrap_or(&headline)
            .to_string(),
        None => headline.clone(),
    };
    let rows: Vec<Value> = summary_rows(summary)
        .into_iter()
        .map(|(label, value)| json!({"label": label, "value": value}))
        .collect();
    let context = json!({
        "subject": subject,
        "title": title,
        "badge": badge,
        "color": severity_color(summary.severity),
        "rows": rows,
        "event_id": summary.event_id,
        "event_name": summary.event_name,
    });
    message::render(DEFAULT_HTML, Escape::Html, &context)
}

/// Renders an event's email; pure. `template` is the rule's template:
/// `subject`, `text` and `html` (minijinja over
/// [`message::template_context`]; `html` auto-escaped) each replace that
/// part of the default, and `resend_template: {id, variables}` asks Resend
/// to render its stored template with `variables` (each a minijinja
/// template, its output HTML-escaped since Resend inserts it as is).
pub fn render(
    event: &Event,
    summary: &AlertSummary,
    template: Option<&Value>,
) -> Result<RenderedEmail, TemplateError> {
    let empty = Map::new();
    let template = template.and_then(Value::as_object).unwrap_or(&empty);
    let source = |key: &str| template.get(key).and_then(Value::as_str);
    let context = message::template_context(event, summary);
    let headline = summary.headline();

    let custom_subject = source("subject").is_some();
    let state = AlertState::of(&event.name).filter(|state| *state != AlertState::Triggered);
    // A later mail of an alert repeats the triggered mail's subject (as this
    // event's payload fills it) after its state, so clients thread it.
    let default_subject = match state {
        Some(_) => {
            let mut as_triggered = summary.clone();
            as_triggered.event_name = "alert.triggered".to_string();
            as_triggered.headline()
        }
        None => headline.clone(),
    };
    let subject = match source("subject") {
        Some(source) => {
            let line = subject_line(&message::render(source, Escape::None, &context)?);
            if line.is_empty() {
                default_subject
            } else {
                line
            }
        }
        None => default_subject,
    };
    let subject = match state {
        Some(state) => subject_line(&format!("{}: {subject}", message::state_label(state))),
        None => subject_line(&subject),
    };
    let text = match source("text") {
        Some(source) => message::render(source, Escape::None, &context)?,
        None => default_text(summary, &headline),
    };
    let html = match source("html") {
        Some(source) => message::render(source, Escape::Html, &context)?,
        None => default_html(summary, &subject)?,
    };
    let resend_template = match template.get("resend_template") {
        Some(stored) => match stored.get("id").and_then(Value::as_str) {
            Some(id) => Some(ResendTemplate {
                id: id.to_string(),
                variables: render_variables(stored.get("variables"), &context)?,
            }),
            None => None,
        },
        None => None,
    };
    Ok(RenderedEmail {
        subject,
        text,
        html,
        custom_subject,
        resend_template,
    })
}

/// A stored template's variables: strings are templates (rendered,
/// HTML-escaped), numbers and booleans are sent as they are.
fn render_variables(
    variables: Option<&Value>,
    context: &Value,
) -> Result<BTreeMap<String, Value>, TemplateError> {
    let mut rendered = BTreeMap::new();
    let Some(variables) = variables.and_then(Value::as_object) else {
        return Ok(rendered);
    };
    for (key, value) in variables {
        let value = match value {
            Value::String(source) => Value::String(message::render(source, Escape::Html, context)?),
            Value::Number(_) | Value::Bool(_) => value.clone(),
            _ => continue,
        };
        rendered.insert(key.clone(), value);
    }
    Ok(rendered)
}

/// The JSON body of `POST /emails`; pure.
pub fn resend_body(
    from: &Mailbox,
    to: &[Mailbox],
    email: &RenderedEmail,
    threading: Option<&Threading>,
) -> Value {
    let mut body = resend_content(from, to, email);
    if let Some(threading) = threading {
        let headers: Map<String, Value> = threading
            .headers()
            .into_iter()
            .map(|(name, value)| (name.to_string(), Value::String(value)))
            .collect();
        body["headers"] = Value::Object(headers);
    }
    body
}

fn resend_content(from: &Mailbox, to: &[Mailbox], email: &RenderedEmail) -> Value {
    let to: Vec<String> = to.iter().map(Mailbox::to_string).collect();
    match &email.resend_template {
        // Resend refuses html/text beside a template.
        Some(template) => {
            let mut body = json!({"from": from.to_string(), "to": to, "template": template});
            if email.custom_subject {
                body["subject"] = Value::String(email.subject.clone());
            }
            body
        }
        None => json!({
            "from": from.to_string(),
            "to": to,
            "subject": email.subject,
            "html": email.html,
            "text": email.text,
        }),
    }
}

/// Resend's error body: `{"statusCode", "name", "message"}`.
#[derive(Debug, Default, Deserialize)]
struct ResendError {
    #[serde(default)]
    name: String,
    #[serde(default)]
    message: String,
}

/// How a Resend answer classifies; pure. `body` is the (excerpt of the)
/// answer, `retry_after` its parsed `Retry-After`.
pub fn classify_resend(status: u16, body: Option<&str>, retry_after: Option<Duration>) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Delivered;
    }
    let error: ResendError = body
        .and_then(|body| serde_json::from_str(body).ok())
        .unwrap_or_default();
    let described = match (error.name.is_empty(), error.message.is_empty()) {
        (false, false) => format!("Resend answered {status} {}: {}", error.name, error.message),
        (false, true) => format!("Resend answered {status} {}", error.name),
        (true, false) => format!("Resend answered {status}: {}", error.message),
        (true, true) => format!("Resend answered {status}"),
    };
    let permanent = |error: String| Verdict::Permanent {
        error,
        connection_status: None,
    };
    match (status, error.name.as_str()) {
        (429, _) | (503, _) => Verdict::Retry {
            error: described,
            retry_after,
        },
        (500..=599, _) => Verdict::Retry {
            error: described,
            retry_after: None,
        },
        (409, "concurrent_idempotent_requests") => Verdict::Retry {
            error: described,
            retry_after,
        },
        // 403 validation_error is about the sender (unverified domain), not
        // the key.
        (401, _) | (403, "missing_api_key" | "invalid_api_key" | "restricted_api_key" | "") => {
            permanent(format!(
                "Resend refused the operator's API key (email.resend.api_key): {described}"
            ))
        }
        _ => permanent(described),
    }
}

/// What an SMTP send failed with, for [`classify_smtp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpFailure {
    /// A 5xx reply.
    Permanent { code: u16, text: String },
    /// A 4xx reply.
    Transient { code: u16, text: String },
    /// A command timed out.
    Timeout,
    /// Connection, TLS, protocol or client trouble.
    Other(String),
}

impl SmtpFailure {
    fn of(error: &lettre::transport::smtp::Error) -> Self {
        let code = error.status().map(u16::from).unwrap_or_default();
        if error.is_permanent() {
            SmtpFailure::Permanent {
                code,
                text: error.to_string(),
            }
        } else if error.is_transient() {
            SmtpFailure::Transient {
                code,
                text: error.to_string(),
            }
        } else if error.is_timeout() {
            SmtpFailure::Timeout
        } else {
            SmtpFailure::Other(describe_chain(error))
        }
    }
}

/// How an SMTP failure classifies; pure. Only a 5xx reply is permanent.
pub fn classify_smtp(failure: &SmtpFailure, timeout: Duration) -> Verdict {
    match failure {
        SmtpFailure::Permanent { text, .. } => Verdict::Permanent {
            error: format!("SMTP server refused the message: {text}"),
            connection_status: None,
        },
        SmtpFailure::Transient { text, .. } => Verdict::Retry {
            error: format!("SMTP server deferred the message: {text}"),
            retry_after: None,
        },
        SmtpFailure::Timeout => Verdict::Retry {
            error: format!("SMTP timed out after {}s", timeout.as_secs()),
            retry_after: None,
        },
        SmtpFailure::Other(text) => Verdict::Retry {
            error: format!("SMTP failed: {text}"),
            retry_after: None,
        },
    }
}

/// An error and its causes on one line.
fn describe_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let next = source.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = source.source();
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum EmailSetupError {
    #[error("email.smtp: cannot set up the SMTP transport for {host}: {reason}")]
    Smtp { host: String, reason: String },
}

struct Resend {
    http: reqwest::Client,
    endpoint: String,
    api_key: Secret,
    timeout: Duration,
}

impl Resend {
    async fn send(
        &self,
        job: &Job<'_>,
        from: &Mailbox,
        to: &[Mailbox],
        email: &RenderedEmail,
        threading: Option<&Threading>,
    ) -> Outcome {
        let request = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.api_key.expose())
            .header("idempotency-key", job.delivery.id.to_string())
            .header("user-agent", USER_AGENT)
            .json(&resend_body(from, to, email, threading));
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                let excerpt = response_excerpt(response).await;
                Outcome {
                    status_code: Some(status),
                    verdict: classify_resend(status, excerpt.as_deref(), retry_after),
                    response: excerpt,
                }
            }
            Err(error) => transport_outcome(&error, self.timeout),
        }
    }
}

struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: Duration,
}

impl Smtp {
    /// Builds the pooled transport; must run inside the Tokio runtime (the
    /// pool starts a task). `None` when `email.smtp.host` is unset.
    fn from_config(
        config: &SmtpConfig,
        timeout: Duration,
    ) -> Result<Option<Self>, EmailSetupError> {
        let Some(host) = config
            .host
            .as_deref()
            .map(str::trim)
            .filter(|host| !host.is_empty())
        else {
            return Ok(None);
        };
        let failed = |error: lettre::transport::smtp::Error| EmailSetupError::Smtp {
            host: host.to_string(),
            reason: describe_chain(&error),
        };
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(failed)?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(failed)?,
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(SMTP_POOL_SIZE));
        if let Some(username) = config.username.as_deref().filter(|name| !name.is_empty()) {
            let password = config
                .password
                .as_ref()
                .map(|password| password.expose().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(username.to_string(), password));
        }
        Ok(Some(Self {
            transport: builder.build(),
            timeout,
        }))
    }

    async fn send(
        &self,
        job: &Job<'_>,
        from: &Mailbox,
        to: &[Mailbox],
        email: &RenderedEmail,
        threading: Option<&Threading>,
    ) -> Outcome {
        // The same on every attempt, so a receiver can drop a duplicate.
        let message_id = match threading {
            Some(Threading::Starts { message_id }) => message_id.clone(),
            _ => format!("<{}.switchyard@{}>", job.delivery.id, from.email.domain()),
        };
        let mut builder = Message::builder()
            .from(from.clone())
            .subject(email.subject.clone())
            .message_id(Some(message_id))
            .user_agent(USER_AGENT.to_string());
        if let Some(Threading::Follows { root }) = threading {
            builder = builder.in_reply_to(root.clone()).references(root.clone());
        }
        for recipient in to {
            builder = builder.to(recipient.clone());
        }
        let message = match builder.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        )) {
            Ok(message) => message,
            Err(error) => return Outcome::permanent(format!("cannot build the message: {error}")),
        };
        match self.transport.send(message).await {
            Ok(response) => Outcome {
                status_code: Some(u16::from(response.code())),
                response: Some(message::truncate(
                    &format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    ),
                    super::RESPONSE_EXCERPT_BYTES,
                )),
                verdict: Verdict::Delivered,
            },
            Err(error) => {
                let failure = SmtpFailure::of(&error);
                let status_code = match &failure {
                    SmtpFailure::Permanent { code, .. } | SmtpFailure::Transient { code, .. }
                        if *code != 0 =>
                    {
                        Some(*code)
                    }
                    _ => None,
                };
                Outcome {
                    status_code,
                    response: None,
                    verdict: classify_smtp(&failure, self.timeout),
                }
            }
        }
    }
}

/// The email adapter: the providers configured on this instance.
pub struct Email {
    /// The instance's configuration, for checking a connection's provider.
    instance: Config,
    resend: Option<Resend>,
    smtp: Option<Smtp>,
    /// Why SMTP could not be set up, reported by every SMTP send.
    smtp_error: Option<String>,
}

impl Email {
    /// Builds the configured providers; `http` is the trusted client (the
    /// Resend base is the operator's). Must run inside the Tokio runtime.
    pub fn new(config: &Config, http: reqwest::Client) -> Result<Self, EmailSetupError> {
        let timeout = Duration::from_secs(config.delivery.timeout_seconds);
        Ok(Self {
            instance: config.clone(),
            resend: Self::resend(config, http, timeout),
            smtp: Smtp::from_config(&config.email.smtp, timeout)?,
            smtp_error: None,
        })
    }

    /// Like [`Email::new`], but an SMTP setup error does not stop the
    /// server: it is logged and every SMTP send fails with it.
    pub fn new_or_degraded(config: &Config, http: reqwest::Client) -> Self {
        match Self::new(config, http.clone()) {
            Ok(email) => email,
            Err(error) => {
                tracing::error!(%error, "SMTP email is unavailable until the configuration is fixed");
                let timeout = Duration::from_secs(config.delivery.timeout_seconds);
                Self {
                    instance: config.clone(),
                    resend: Self::resend(config, http, timeout),
                    smtp: None,
                    smtp_error: Some(error.to_string()),
                }
            }
        }
    }

    fn resend(config: &Config, http: reqwest::Client, timeout: Duration) -> Option<Resend> {
        let api_key = config
            .email
            .resend
            .api_key
            .clone()
            .filter(|key| !key.expose().trim().is_empty())?;
        Some(Resend {
            http,
            endpoint: format!(
                "{}/emails",
                config.email.resend.api_base.trim_end_matches('/')
            ),
            api_key,
            timeout,
        })
    }

    async fn post(&self, job: &Job<'_>) -> Outcome {
        let config: EmailConnectionConfig =
            match serde_json::from_value(job.connection.config.clone()) {
                Ok(config) => config,
                Err(error) => {
                    return Outcome::permanent(format!("invalid email connection config: {error}"));
                }
            };
        let from = match parse_mailbox(&config.from) {
            Ok(from) => from,
            Err(error) => return Outcome::permanent(format!("from: {error}")),
        };
        let to = match recipients(&job.rule.target) {
            Ok(to) => to,
            Err(error) => return Outcome::permanent(error),
        };
        let summary = AlertSummary::of_delivery(job.event, job.delivery);
        let email = match render(job.event, &summary, job.rule.template.as_ref()) {
            Ok(email) => email,
            Err(error) => return Outcome::permanent(format!("rule template: {error}")),
        };
        let alert = job.delivery.alert.clone().or_else(|| job.event.alert_key());
        let threading = Threading::of(
            job.event,
            alert.as_deref(),
            job.delivery.workspace_id,
            job.delivery.rule_id,
            &from,
        );
        let threading = threading.as_ref();
        match config.provider {
            Provider::Resend => match &self.resend {
                Some(resend) => resend.send(job, &from, &to, &email, threading).await,
                None => Outcome::permanent(unconfigured_message(Provider::Resend, None)),
            },
            Provider::Smtp => match &self.smtp {
                Some(smtp) => smtp.send(job, &from, &to, &email, threading).await,
                None => Outcome::permanent(unconfigured_message(
                    Provider::Smtp,
                    self.smtp_error.as_deref(),
                )),
            },
        }
    }
}

impl Destination for Email {
    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Email
    }

    /// No secrets: the credentials are the operator's.
    fn create<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<NewConnection, Invalid>> {
        let checked = validate_config(config, &self.instance).map(|config| NewConnection {
            config,
            secrets: json!({}),
            shown_once: None,
        });
        Box::pin(async move { checked.map_err(|problem| Invalid::new("config", problem)) })
    }

    fn validate_target(&self, target: &Value) -> Result<Value, Invalid> {
        validate_target(target)
    }

    fn send<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post(job))
    }
}

fn unconfigured_message(provider: Provider, setup_error: Option<&str>) -> String {
    if let Some(error) = setup_error {
        return format!("the smtp provider is unavailable on this instance: {error}");
    }
    match provider {
        Provider::Resend => "the resend provider is not configured on this instance: the operator \
                             must set email.resend.api_key"
            .into(),
        Provider::Smtp => {
            "the smtp provider is not configured on this instance: the operator must \
                           set email.smtp.host"
                .into()
        }
    }
}

#[cfg(test)]
mod tests;
