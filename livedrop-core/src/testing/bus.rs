//! Event bus cases: delivery, per-aggregate order, committed positions, groups, and
//! duplicates dropped (a bus hands out its subscriptions wrapped in
//! [`Deduplicated`](crate::ports::Deduplicated)).
//!
//! Every case uses fresh consumer group names, and subscribes before publishing
//! (where a new group starts is left to the backend). Every wait is bounded: a
//! broken backend fails instead of hanging.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::{timeout, Instant};
use uuid::Uuid;

use super::fixtures::at;
use crate::event::{Event, EventType};
use crate::id::EventId;
use crate::ports::{EventBus, Subscription};

/// How long a case waits for events that should arrive (a broker may need a few
/// seconds to assign partitions to a new group).
const PATIENCE: Duration = Duration::from_secs(30);

fn group(name: &str) -> String {
    format!("ld-conformance-{name}-{}", Uuid::new_v4().simple())
}

fn event(aggregate: Uuid, version: i64) -> Event {
    Event::new(
        EventType::StockChanged,
        aggregate,
        version,
        json!({ "drop_id": aggregate, "n": version }),
        at(version),
    )
}

async fn subscribe(bus: &dyn EventBus, group: &str) -> Box<dyn Subscription> {
    timeout(PATIENCE, bus.subscribe(group))
        .await
        .expect("subscribe must not hang")
        .expect("subscribe")
}

async fn publish(bus: &dyn EventBus, events: &[Event]) {
    timeout(PATIENCE, bus.publish(events))
        .await
        .expect("publish must not hang")
        .expect("publish");
}

async fn close(sub: Box<dyn Subscription>) {
    timeout(Duration::from_secs(10), sub.close())
        .await
        .expect("close must be bounded");
}

/// Receives up to `n` events within [`PATIENCE`].
async fn receive(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Event> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let next = timeout(left + Duration::from_secs(5), sub.next(left))
            .await
            .expect("next must return within its timeout")
            .expect("next");
        match next {
            Some(event) => got.push(event),
            None => break,
        }
    }
    got
}

/// Asserts nothing more is pending for `aggregate` in `sub`: a fresh event of that
/// aggregate (same partition, so it comes after anything still pending) is published
/// and must be the next event received. Waiting for it, rather than for a quiet
/// window, also covers a member whose group assignment takes seconds.
async fn assert_nothing_pending(
    bus: &dyn EventBus,
    sub: &mut Box<dyn Subscription>,
    aggregate: Uuid,
    version: i64,
) {
    let marker = event(aggregate, version);
    publish(bus, std::slice::from_ref(&marker)).await;
    let got = receive(sub, 1).await;
    assert_eq!(
        ids(&got),
        vec![marker.id],
        "no further event expected before the marker"
    );
}

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// Published events arrive whole and in order; `next` returns `None` after its
/// timeout when nothing is published, and waits up to its timeout for an event
/// published while it waits.
pub async fn bus_round_trip(bus: &Arc<dyn EventBus>) {
    let bus: &dyn EventBus = bus.as_ref();
    let mut sub = subscribe(bus, &group("round-trip")).await;
    let idle = timeout(
        Duration::from_secs(10),
        sub.next(Duration::from_millis(200)),
    )
    .await
    .expect("next must return within its timeout")
    .expect("next");
    assert_eq!(idle, None);

    // Published while `next` already waits (the delay only makes that likely; the
    // outcome does not depend on it): a `next` that gave up before its timeout
    // would return `None` here.
    let aggregate = Uuid::now_v7();
    let sent: Vec<Event> = (1..=3).map(|v| event(aggregate, v)).collect();
    let (first, ()) = tokio::join!(
        timeout(PATIENCE + Duration::from_secs(5), sub.next(PATIENCE)),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            publish(bus, &sent).await;
        }
    );
    let first = first
        .expect("next must return within its timeout")
        .expect("next");
    assert_eq!(
        first.as_ref(),
        Some(&sent[0]),
        "next waits for an event published while it waits"
    );
    let mut got: Vec<Event> = first.into_iter().collect();
    got.extend(receive(&mut sub, 2).await);
    assert_eq!(got, sent, "events arrive whole, in order");
    sub.commit().await.expect("commit");
    assert_nothing_pending(bus, &mut sub, aggregate, 4).await;
    close(sub).await;
}

/// Many events of several aggregates, published interleaved in several calls: each
/// aggregate's events arrive in publish order.
pub async fn bus_per_aggregate_order(bus: &Arc<dyn EventBus>) {
    let bus: &dyn EventBus = bus.as_ref();
    let mut sub = subscribe(bus, &group("order")).await;
    let aggregates: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let sent: Vec<Event> = (1..=100)
        .flat_map(|v| aggregates.iter().map(move |a| event(*a, v)))
        .collect();
    for chunk in sent.chunks(30) {
        publish(bus, chunk).await;
    }
    let got = receive(&mut sub, sent.len()).await;
    assert_eq!(got.len(), sent.len(), "every event arrives");
    assert_eq!(
        ids(&got).into_iter().collect::<HashSet<_>>(),
        ids(&sent).into_iter().collect::<HashSet<_>>()
    );
    let mut last: HashMap<Uuid, i64> = HashMap::new();
    for e in &got {
        let prev = last.insert(e.aggregate_id, e.version).unwrap_or(0);
        assert_eq!(
            e.version,
            prev + 1,
            "aggregate {} out of order",
            e.aggregate_id
        );
    }
    sub.commit().await.expect("commit");
    close(sub).await;
}

/// A member that committed half the events and closed with more received but
/// uncommitted: a new member of the group resumes right after the committed
/// position, and nothing is lost.
pub async fn bus_resume_from_commit(bus: &Arc<dyn EventBus>) {
    let bus: &dyn EventBus = bus.as_ref();
    let name = group("resume");
    let mut first = subscribe(bus, &name).await;
    let aggregate = Uuid::now_v7();
    let sent: Vec<Event> = (1..=20).map(|v| event(aggregate, v)).collect();
    publish(bus, &sent).await;

    let head = receive(&mut first, 10).await;
    assert_eq!(ids(&head), ids(&sent[..10]));
    first.commit().await.expect("commit");
    let uncommitted = receive(&mut first, 5).await;
    assert_eq!(ids(&uncommitted), ids(&sent[10..15]));
    close(first).await;

    let mut second = subscribe(bus, &name).await;
    let rest = receive(&mut second, 10).await;
    assert_eq!(
        ids(&rest),
        ids(&sent[10..]),
        "resumes after the committed position: uncommitted events again, then the rest"
    );
    assert_nothing_pending(bus, &mut second, aggregate, 21).await;
    second.commit().await.expect("commit");
    close(second).await;

    // Everything committed: a new member gets only what is published after.
    let mut third = subscribe(bus, &name).await;
    assert_nothing_pending(bus, &mut third, aggregate, 22).await;
    close(third).await;
}

/// Two groups each receive every event.
pub async fn bus_groups_each_see_every_event(bus: &Arc<dyn EventBus>) {
    let bus: &dyn EventBus = bus.as_ref();
    let mut a = subscribe(bus, &group("a")).await;
    let mut b = subscribe(bus, &group("b")).await;
    let sent: Vec<Event> = (0..5)
        .map(|_| Uuid::now_v7())
        .flat_map(|agg| (1..=10).map(move |v| event(agg, v)))
        .collect();
    publish(bus, &sent).await;
    let want: HashSet<EventId> = ids(&sent).into_iter().collect();
    for (name, sub) in [("a", &mut a), ("b", &mut b)] {
        let got = receive(sub, sent.len()).await;
        assert_eq!(got.len(), sent.len(), "group {name} receives every event");
        assert_eq!(ids(&got).into_iter().collect::<HashSet<_>>(), want);
        sub.commit().await.expect("commit");
    }
    close(a).await;
    close(b).await;
}

/// A live subscription sees events published after it was made, and none from before.
pub async fn bus_live_subscription_sees_new_events(bus: &Arc<dyn EventBus>) {
    let bus: &dyn EventBus = bus.as_ref();
    let aggregate = Uuid::now_v7();
    let old = event(aggregate, 1);
    publish(bus, std::slice::from_ref(&old)).await;
    let mut live = timeout(PATIENCE, bus.subscribe_live())
        .await
        .expect("subscribe_live must not hang")
        .expect("subscribe_live");
    let new = event(aggregate, 2);
    publish(bus, std::slice::from_ref(&new)).await;
    let got = receive(&mut live, 1).await;
    assert_eq!(
        ids(&got),
        vec![new.id],
        "only events published after subscribing"
    );
    close(live).await;
}

/// An event published twice, as a relay does when it retries a publish whose
/// acknowledgement was lost, reaches a group member and a live subscription once
/// each, between the events around it.
pub async fn bus_republished_event_is_delivered_once(bus: &Arc<dyn EventBus>) {
    let bus: &dyn EventBus = bus.as_ref();
    let mut member = subscribe(bus, &group("republish")).await;
    let mut live = timeout(PATIENCE, bus.subscribe_live())
        .await
        .expect("subscribe_live must not hang")
        .expect("subscribe_live");
    let aggregate = Uuid::now_v7();
    let (placed, confirmed, marker) = (
        event(aggregate, 1),
        event(aggregate, 2),
        event(aggregate, 3),
    );
    publish(bus, std::slice::from_ref(&placed)).await;
    publish(bus, &[placed.clone(), confirmed.clone()]).await;
    publish(bus, std::slice::from_ref(&marker)).await;
    for (name, sub) in [("group member", &mut member), ("live", &mut live)] {
        let got = receive(sub, 3).await;
        assert_eq!(
            ids(&got),
            vec![placed.id, confirmed.id, marker.id],
            "{name}: the repeat is dropped, nothing else"
        );
    }
    member.commit().await.expect("commit");
    assert_nothing_pending(bus, &mut member, aggregate, 4).await;
    close(member).await;
    close(live).await;
}
