//! Attempt outcomes recorded together (`outcomes.rs`): each gets the
//! answer it gets alone, and one that fails fails only itself. Helpers are
//! `tests.rs`'s.

use super::tests::{batch, connection, delivery, event, finish, open, rule, workspace};
use super::*;
use crate::model::DeliveryStatus;
use crate::store::NextStep;
use std::time::Duration;

/// Queues one delivery to `con` through `node`, due at 1,000.
async fn queue(node: &PgStore, con: u128, n: u128) -> DeliveryId {
    let e = event(1, 1_000 + n as u64, n, "alert.triggered");
    let d = delivery(&e, 1, con, 1_000);
    node.ingest(batch(vec![e], vec![d.clone()])).await.unwrap();
    d.id
}

fn outcome(delivery: DeliveryId, next: NextStep, error: &str) -> AttemptOutcome {
    AttemptOutcome {
        workspace_id: WorkspaceId(1),
        delivery_id: delivery,
        attempt: Attempt {
            at_ms: 5_000,
            duration_ms: 3,
            status_code: Some(500),
            error: Some(error.into()),
            response: Some("body".into()),
        },
        next,
        connection_status: None,
        pause_connection_until: None,
    }
}

#[tokio::test]
async fn outcomes_sent_together_each_get_their_own_answer() {
    let (db, a) = open().await;
    a.create_workspace(workspace(1)).await.unwrap();
    for con in [10, 11] {
        a.create_connection(connection(1, con)).await.unwrap();
    }
    a.put_rule(rule(1, 7, 10), false).await.unwrap();
    let b = PgStore::open_node(
        &db.settings,
        NodeOptions {
            lease: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    // Node A holds connection 10, node B connection 11.
    let mut mine = Vec::new();
    for n in 0..30 {
        mine.push(queue(&a, 10, n).await);
    }
    let theirs = queue(&b, 11, 100).await;
    let nexts = [
        NextStep::Succeeded,
        NextStep::Dead,
        NextStep::RetryAt(9_000),
    ];
    let outcomes: Vec<AttemptOutcome> = mine
        .iter()
        .enumerate()
        .map(|(n, id)| outcome(*id, nexts[n % 3].clone(), "boom"))
        .collect();
    let (first, mut second) = (outcomes[..20].to_vec(), outcomes[20..].to_vec());
    // Sent at once, each group is found waiting whole by the writer (the
    // test's runtime has one thread) and taken as one group.
    let mut group = first;
    group.push(outcome(theirs, NextStep::Succeeded, "not mine"));
    group.push(outcome(DeliveryId(424_242), NextStep::Succeeded, "gone"));
    let mut answers =
        futures::future::join_all(group.into_iter().map(|o| a.record_attempt(o))).await;
    assert!(answers[20].as_ref().unwrap().is_none(), "lease held by B");
    assert!(answers[21].as_ref().unwrap().is_none(), "no such delivery");
    assert!(
        !a.may_deliver(ConnectionId(11)),
        "A knows it does not hold 11"
    );
    answers.truncate(20);
    // Refused by PostgreSQL (text holds no NUL): fails the group's insert,
    // then only itself.
    second[4].attempt.error = Some("nul \0 byte".into());
    answers
        .extend(futures::future::join_all(second.into_iter().map(|o| a.record_attempt(o))).await);
    const BAD: usize = 24;

    for (n, answer) in answers.iter().enumerate() {
        if n == BAD {
            assert!(answer.is_err(), "the bad outcome fails alone");
            continue;
        }
        let written = answer.as_ref().unwrap().as_ref().expect("written");
        let want = [
            DeliveryStatus::Succeeded,
            DeliveryStatus::Dead,
            DeliveryStatus::Retrying,
        ][n % 3];
        assert_eq!((written.status, written.attempt_count), (want, 1), "{n}");
    }
    for (n, id) in mine.iter().enumerate() {
        let (stored, attempts) = a.delivery(WorkspaceId(1), *id).await.unwrap().unwrap();
        if n == BAD {
            assert_eq!(stored.attempt_count, 0, "nothing of the bad one written");
            assert!(attempts.is_empty());
            assert_eq!(stored.next_attempt_at_ms, Some(1_000));
            continue;
        }
        assert_eq!(stored.attempt_count, 1);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].error.as_deref(), Some("boom"));
        assert_eq!(attempts[0].response.as_deref(), Some("body"));
        assert_eq!(attempts[0].status_code, Some(500));
        let due = (n % 3 == 2).then_some(9_000);
        assert_eq!(stored.next_attempt_at_ms, due, "{n}");
        assert_eq!(stored.updated_at_ms, 5_003);
    }
    let (untouched, attempts) = a.delivery(WorkspaceId(1), theirs).await.unwrap().unwrap();
    assert_eq!((untouched.attempt_count, attempts.len()), (0, 0));
    // Left queued: the bad one and B's at 1,000; the ten retries at 9,000.
    let rows = a
        .queue_rows(vec![LaneRead {
            connection_id: ConnectionId(10),
            from: None,
            due_by: u64::MAX,
            limit: 100,
        }])
        .await
        .unwrap();
    let dues: Vec<u64> = rows[0].entries.iter().map(|e| e.due_ms).collect();
    let mut want = vec![1_000];
    want.extend([9_000; 10]);
    assert_eq!(dues, want);
    assert_eq!(a.queue_len().await.unwrap(), 12);
    b.close().await;
    finish(db, a).await;
}
