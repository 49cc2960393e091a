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

/// `wait_for_append` returns soon after a write appends, and after its timeout
/// when nothing happens.
pub async fn outbox_wait_for_append_wakes(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    // Absorb any wake-up left over from earlier writes.
    repos
        .outbox
        .wait_for_append(Duration::from_millis(20))
        .await;

    let outbox = repos.outbox.clone();
    let waiter = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        outbox.wait_for_append(Duration::from_secs(60)).await;
        start.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = fixtures::product(creator.id, "P", "d", T0);
    let event = Event::product(EventType::ProductCreated, &p, T0);
    repos
        .products
        .insert_product(&p, &[event])
        .await
        .expect("insert product");
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait_for_append must wake on an append")
        .expect("task");
    assert!(waited < Duration::from_secs(10));

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
