//! How an alert's mails thread: the `alert.triggered` mail's `Message-ID`
//! is derived from the workspace, the rule, the alert and the sender's
//! domain, so the mails after it name it in `In-Reply-To` and `References`
//! without anything stored. Pure.

use crate::model::{AlertState, Event, RuleId, WorkspaceId};
use lettre::message::Mailbox;
use sha2::{Digest, Sha256};

/// The headers that thread an alert's mails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Threading {
    /// The `alert.triggered` mail: it starts the thread under this id.
    Starts { message_id: String },
    /// A later mail of the alert: `In-Reply-To` and `References` name the
    /// triggered mail's id.
    Follows { root: String },
}

impl Threading {
    /// How a mail of `event` threads; `None` for an event that is not part
    /// of an alert's life. Pure: the same alert, rule and sender always
    /// give the same root id, so nothing is stored.
    pub fn of(
        event: &Event,
        alert: Option<&str>,
        workspace: WorkspaceId,
        rule: RuleId,
        from: &Mailbox,
    ) -> Option<Self> {
        let state = AlertState::of(&event.name)?;
        let alert = alert?;
        let root = alert_message_id(workspace, rule, alert, from.email.domain());
        Some(match state {
            AlertState::Triggered => Threading::Starts { message_id: root },
            AlertState::Acknowledged | AlertState::Resolved => Threading::Follows { root },
        })
    }

    /// As `(name, value)` header pairs.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Threading::Starts { message_id } => vec![("Message-ID", message_id.clone())],
            Threading::Follows { root } => {
                vec![("In-Reply-To", root.clone()), ("References", root.clone())]
            }
        }
    }
}

/// `<alert.{digest}@{domain}>`: one id per workspace, rule and alert. The
/// alert key is the tenant's text, so it is hashed rather than embedded.
pub fn alert_message_id(workspace: WorkspaceId, rule: RuleId, alert: &str, domain: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(workspace.to_string().as_bytes());
    digest.update(b"\0");
    digest.update(rule.to_string().as_bytes());
    digest.update(b"\0");
    digest.update(alert.as_bytes());
    let hex: String = digest.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("<alert.{hex}@{domain}>")
}
