//! Notifications: deduplicated insertion, reading, pagination and fan-out batches.

use super::*;
use crate::model::FanOutShard;

/// Insert deduplicates per (user, key); read marks keep the first `read_at`.
pub async fn notifications_insert_dedup_and_read(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let other = seed_user(repos, "Other", Role::Customer).await;
    let store = &repos.notifications;
    let n1 = fixtures::notification(user.id, "k1", at(1));
    let n2 = fixtures::notification(user.id, "k2", at(2));
    let n3 = fixtures::notification(user.id, "k3", at(3));
    for n in [&n1, &n2, &n3] {
        assert!(store.insert_notification(n).await.expect("insert"));
    }
    let dup = fixtures::notification(user.id, "k1", at(4));
    assert!(
        !store.insert_notification(&dup).await.expect("insert"),
        "deduplicated"
    );
    let theirs = fixtures::notification(other.id, "k1", at(4));
    assert!(
        store.insert_notification(&theirs).await.expect("insert"),
        "per user"
    );

    let list = |user: UserId, unread: bool| async move {
        store
            .notifications(user, unread, PageRequest::first(50))
            .await
            .expect("notifications")
            .items
    };
    assert_eq!(
        list(user.id, false).await,
        vec![n3.clone(), n2.clone(), n1.clone()]
    );

    let read = store
        .mark_read(user.id, n2.id, at(10))
        .await
        .expect("mark read");
    assert_eq!(read.map(|n| (n.id, n.read_at)), Some((n2.id, Some(at(10)))));
    let again = store
        .mark_read(user.id, n2.id, at(20))
        .await
        .expect("mark read");
    assert_eq!(
        again.and_then(|n| n.read_at),
        Some(at(10)),
        "keeps the first read_at"
    );
    assert_eq!(
        store
            .mark_read(other.id, n1.id, at(10))
            .await
            .expect("mark read"),
        None
    );
    assert_eq!(
        store
            .mark_read(user.id, NotificationId::new(), at(10))
            .await
            .expect("mark read"),
        None
    );
    let unread: Vec<NotificationId> = list(user.id, true).await.iter().map(|n| n.id).collect();
    assert_eq!(unread, vec![n3.id, n1.id]);

    assert_eq!(
        store
            .mark_all_read(user.id, at(30))
            .await
            .expect("mark all"),
        2
    );
    assert!(list(user.id, true).await.is_empty());
    let read_at: Vec<Option<Timestamp>> = list(user.id, false)
        .await
        .iter()
        .map(|n| n.read_at)
        .collect();
    assert_eq!(read_at, vec![Some(at(30)), Some(at(10)), Some(at(30))]);
    assert_eq!(
        store
            .mark_all_read(user.id, at(40))
            .await
            .expect("mark all"),
        0
    );
    assert_eq!(list(other.id, true).await.len(), 1, "other users untouched");
}

/// Notifications page newest first, all or unread only.
pub async fn notifications_paginate(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let store = &repos.notifications;
    let mut unread = BTreeSet::new();
    for i in 0..23 {
        let n = fixtures::notification(user.id, &format!("k{i}"), at(i / 2));
        assert!(store.insert_notification(&n).await.expect("insert"));
        if i % 3 == 0 {
            store
                .mark_read(user.id, n.id, at(100))
                .await
                .expect("mark read");
        } else {
            unread.insert(n.id);
        }
    }
    let all = all_pages!(5, |page| store.notifications(user.id, false, page));
    assert_eq!(all.len(), 23);
    let keys: Vec<Cursor> = all.iter().map(|n| n.cursor()).collect();
    assert_newest_first(&keys, "notifications");
    let listed = all_pages!(4, |page| store.notifications(user.id, true, page));
    assert_eq!(listed.iter().map(|n| n.id).collect::<BTreeSet<_>>(), unread);
    let keys: Vec<Cursor> = listed.iter().map(|n| n.cursor()).collect();
    assert_newest_first(&keys, "unread notifications");
}

/// A fan-out of 2,500 followers in batches of 1,000 notifies each exactly once, in
/// follower id order; batches resume after the last follower they visited and
/// re-running one inserts nothing. Cut in shards walked side by side, each with its
/// own cursor, a fan-out notifies each follower once too, every shard exactly the
/// followers [`FanOutShard::of`] puts there.
pub async fn fan_out_batches(repos: &Repos) {
    let creator = seed_user(repos, "Star", Role::Creator).await;
    let mut followers = Vec::new();
    for i in 0..2_500 {
        let fan = fixtures::user(&format!("fan{i}"), Role::Customer);
        repos.users.insert_user(&fan).await.expect("insert user");
        repos
            .users
            .follow(fan.id, creator.id, at(i), &[])
            .await
            .expect("follow");
        followers.push(fan.id);
    }
    let bystander = seed_user(repos, "Bystander", Role::Customer).await;
    let dedup_key = format!("drop-live:{}", Uuid::new_v4());
    // The followers listing (newest first) meets them from the highest id; the walk
    // goes from the lowest, and the first follower it meets already has the
    // notification.
    let mut by_id = followers.clone();
    by_id.sort_unstable();
    let first = by_id[0];
    let mut early = fixtures::notification(first, &dedup_key, at(4_000));
    early.kind = NotificationKind::DropLive;
    assert!(repos
        .notifications
        .insert_notification(&early)
        .await
        .expect("insert"));

    let batch = FanOutBatch {
        creator_id: creator.id,
        kind: NotificationKind::DropLive,
        payload: json!({ "drop": "d" }),
        dedup_key: dedup_key.clone(),
        after: None,
        limit: 1_000,
        at: at(5_000),
        shard: FanOutShard::WHOLE,
    };
    let fan_out = |after: Option<UserId>| {
        let batch = FanOutBatch {
            after,
            ..batch.clone()
        };
        async move { repos.notifications.fan_out(&batch).await.expect("fan out") }
    };
    let p1 = fan_out(None).await;
    assert_eq!((p1.scanned, p1.inserted), (1_000, 999));
    assert_eq!(
        p1.next,
        Some(by_id[999]),
        "the batch ends at its last follower"
    );
    for (i, fan) in by_id.iter().enumerate().take(1_001).skip(1) {
        let got = repos
            .notifications
            .notifications(*fan, false, PageRequest::first(10))
            .await
            .expect("notifications");
        assert_eq!(
            got.items.len(),
            usize::from(i < 1_000),
            "the first batch notifies the 1,000 lowest ids, follower {i} by id"
        );
    }
    let rerun = fan_out(None).await;
    assert_eq!(
        (rerun.scanned, rerun.inserted),
        (1_000, 0),
        "re-running inserts nothing"
    );
    assert_eq!(rerun.next, p1.next);
    let p2 = fan_out(p1.next).await;
    assert_eq!((p2.scanned, p2.inserted), (1_000, 1_000));
    let p3 = fan_out(p2.next).await;
    assert_eq!((p3.scanned, p3.inserted), (500, 500));
    assert_eq!(p3.next, None, "every follower visited");
    let rerun = fan_out(p2.next).await;
    assert_eq!((rerun.scanned, rerun.inserted, rerun.next), (500, 0, None));

    for fan in &followers {
        let got = repos
            .notifications
            .notifications(*fan, false, PageRequest::first(10))
            .await
            .expect("notifications");
        assert_eq!(got.items.len(), 1, "follower {fan} notified exactly once");
        assert_eq!(got.items[0].dedup_key, dedup_key);
        if *fan != first {
            assert_eq!(got.items[0].created_at, at(5_000));
            assert_eq!(got.items[0].payload, json!({ "drop": "d" }));
            assert_eq!(got.items[0].read_at, None);
        }
    }
    let none = repos
        .notifications
        .notifications(bystander.id, false, PageRequest::first(10))
        .await
        .expect("notifications");
    assert!(none.items.is_empty(), "only followers are notified");

    let lonely = seed_user(repos, "Lonely", Role::Creator).await;
    let empty = repos
        .notifications
        .fan_out(&FanOutBatch {
            creator_id: lonely.id,
            ..batch.clone()
        })
        .await
        .expect("fan out");
    assert_eq!((empty.scanned, empty.inserted, empty.next), (0, 0, None));

    // The same audience cut in three shards, under another key: shards 0 and 1 walked
    // side by side, batch for batch, then shard 2 alone.
    let sharded = FanOutBatch {
        dedup_key: format!("drop-scheduled:{}", Uuid::new_v4()),
        kind: NotificationKind::DropScheduled,
        limit: 300,
        ..batch.clone()
    };
    let shards: Vec<FanOutShard> = FanOutShard::split(3).collect();
    assert_eq!(shards.len(), 3);
    let members = |shard: FanOutShard| {
        followers
            .iter()
            .filter(|f| FanOutShard::of(**f, 3) == shard.index())
            .count() as u32
    };
    let step = |shard: FanOutShard, after: Option<UserId>| {
        let batch = FanOutBatch {
            shard,
            after,
            ..sharded.clone()
        };
        async move { repos.notifications.fan_out(&batch).await.expect("fan out") }
    };
    let mut walked = [(0u32, 0u32); 3];
    let mut cursors: [Option<UserId>; 2] = [None, None];
    let mut open = [true, true];
    while open.iter().any(|o| *o) {
        for i in 0..2 {
            if !open[i] {
                continue;
            }
            let p = step(shards[i], cursors[i]).await;
            assert!(p.scanned <= 300, "a batch visits at most its limit");
            walked[i].0 += p.scanned;
            walked[i].1 += p.inserted;
            cursors[i] = p.next;
            open[i] = p.next.is_some();
        }
    }
    for fan in &followers {
        let got = repos
            .notifications
            .notifications(*fan, false, PageRequest::first(10))
            .await
            .expect("notifications");
        let notified = got
            .items
            .iter()
            .filter(|n| n.dedup_key == sharded.dedup_key)
            .count();
        let expected = usize::from(FanOutShard::of(*fan, 3) != 2);
        assert_eq!(
            notified, expected,
            "follower {fan}: notified by shards 0 and 1 exactly when it is theirs"
        );
    }
    let mut after = None;
    loop {
        let p = step(shards[2], after).await;
        walked[2].0 += p.scanned;
        walked[2].1 += p.inserted;
        after = p.next;
        if after.is_none() {
            break;
        }
    }
    for (i, shard) in shards.iter().enumerate() {
        let n = members(*shard);
        assert!(n > 0, "shard {i} holds followers");
        assert_eq!(walked[i], (n, n), "shard {i} visits and notifies its own");
    }
    assert_eq!(walked.iter().map(|w| w.1).sum::<u32>(), 2_500);
    let rerun = step(shards[2], None).await;
    assert_eq!(
        (rerun.scanned, rerun.inserted),
        (members(shards[2]).min(300), 0),
        "re-running a shard's batch inserts nothing"
    );
}
