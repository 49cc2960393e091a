//! The outbox: pending events in order, and waking followers on append.

use super::*;

/// Pending events come in append order with increasing `seq`; published ones never
/// come back; the backlog counts what waits.
pub async fn outbox_pending_in_order(repos: &Repos) {
    let outbox = &repos.outbox;
    assert_eq!(
        outbox.backlog().await.expect("backlog"),
        0,
        "a fresh store has no events"
    );
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let fan = seed_user(repos, "Fan", Role::Customer).await;
    let mut appended = Vec::new();
    for i in 0..5 {
        let p = fixtures::product(creator.id, &format!("P{i}"), "d", at(i));
        let created = Event::product(EventType::ProductCreated, &p, at(i));
        let extra = Event::product(EventType::ProductUpdated, &p, at(i));
        appended.push(created.id);
        appended.push(extra.id);
        repos
            .products
            .insert_product(&p, &[created, extra])
            .await
            .expect("insert product");
    }
    let follow = follow_event(fan.id, creator.id, at(9));
    appended.push(follow.id);
    repos
        .users
        .follow(fan.id, creator.id, at(9), &[follow])
        .await
        .expect("follow");

    assert_eq!(outbox.backlog().await.expect("backlog"), 11);
    let all = outbox.pending(100).await.expect("pending");
    assert_eq!(all.iter().map(|r| r.event.id).collect::<Vec<_>>(), appended);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "seq increases");
    let head = outbox.pending(3).await.expect("pending");
    assert_eq!(head, all[..3].to_vec());

    let seqs: Vec<i64> = head.iter().map(|r| r.seq).collect();
    outbox.mark_published(&seqs).await.expect("mark published");
    assert_eq!(outbox.backlog().await.expect("backlog"), 8);
    let rest = outbox.pending(100).await.expect("pending");
    assert_eq!(rest, all[3..].to_vec());
    outbox
        .mark_published(&seqs)
        .await
        .expect("marking twice is harmless");
    assert_eq!(outbox.backlog().await.expect("backlog"), 8);

    let seqs: Vec<i64> = rest.iter().map(|r| r.seq).collect();
    outbox.mark_published(&seqs).await.expect("mark published");
    assert_eq!(outbox.backlog().await.expect("backlog"), 0);
    assert!(outbox.pending(100).await.expect("pending").is_empty());
}

/// `wait_for_append` waits while nothing is appended (a spurious wake-up now and then
/// is allowed, one at every call is not), wakes on an append, and returns after its
/// timeout when nothing happens. The 10 s bounds are generous liveness bounds, not
/// speed claims.
pub async fn outbox_wait_for_append_wakes(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    // Absorb any wake-up left over from earlier writes.
    repos
        .outbox
        .wait_for_append(Duration::from_millis(20))
        .await;

    // A waiter still waiting 100 ms into a 60 s wait with nothing appended; five
    // spurious wake-ups in a row mean the wait does not wait.
    let mut waiter = None;
    for _ in 0..5 {
        let outbox = repos.outbox.clone();
        let task = tokio::spawn(async move {
            outbox.wait_for_append(Duration::from_secs(60)).await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !task.is_finished() {
            waiter = Some(task);
            break;
        }
    }
    let waiter = waiter.expect("wait_for_append returned at once, five times, with no append");
    let p = fixtures::product(creator.id, "P", "d", T0);
    let event = Event::product(EventType::ProductCreated, &p, T0);
    repos
        .products
        .insert_product(&p, &[event])
        .await
        .expect("insert product");
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait_for_append must wake on an append")
        .expect("task");

    let quiet = tokio::time::timeout(
        Duration::from_secs(10),
        repos.outbox.wait_for_append(Duration::from_millis(200)),
    )
    .await;
    assert!(
        quiet.is_ok(),
        "wait_for_append must return after its timeout"
    );
}
