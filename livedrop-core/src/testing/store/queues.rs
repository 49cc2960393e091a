//! Waiting rooms: joining (its checks, keeping one's place), the pre-queue in its
//! shuffled order, admission slots one interval apart, and concurrent joins.

use super::*;
use crate::model::{QueueEntry, QueueOutcome};

async fn join(
    repos: &Repos,
    drop: &model::Drop,
    user: UserId,
    now: Timestamp,
    key: u64,
) -> QueueOutcome {
    repos
        .queues
        .join_queue(drop.id, user, now, key)
        .await
        .expect("join queue")
}

async fn joined_queue(
    repos: &Repos,
    drop: &model::Drop,
    user: UserId,
    now: Timestamp,
    key: u64,
) -> QueueEntry {
    match join(repos, drop, user, now, key).await {
        QueueOutcome::Joined(entry) => entry,
        other => panic!("expected Joined, got {other:?}"),
    }
}

/// The room opens `opens_minutes_before` the start; those who joined before the
/// start are ordered by their shuffle keys and admitted one interval apart from the
/// start; later arrivals queue behind in join order, each one interval after the
/// one before and not before its join; joining again keeps the place.
pub async fn queues_order_the_pre_queue_and_space_admissions(repos: &Repos) {
    let drop = room_drop(repos, 10).await;
    let opens_at = at(600) - chrono::Duration::minutes(30);
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(seed_user(repos, &format!("q{i}"), Role::Customer).await.id);
    }
    assert_eq!(
        join(
            repos,
            &drop,
            users[0],
            opens_at - chrono::Duration::seconds(1),
            1
        )
        .await,
        QueueOutcome::NotOpen { opens_at }
    );
    // Shuffle keys 50, 10, 40, 20: the pre-queue is users 1, 3, 2, 0.
    for (user, key) in [(0, 50), (1, 10), (2, 40), (3, 20)] {
        joined_queue(
            repos,
            &drop,
            users[user],
            opens_at + chrono::Duration::seconds(user as i64),
            key,
        )
        .await;
    }
    let again = joined_queue(repos, &drop, users[0], at(0), 1).await;
    assert_eq!(again.joined_at, opens_at, "joining again keeps the place");
    for (position, user) in [1, 3, 2, 0].into_iter().enumerate() {
        let entry = repos
            .queues
            .queue_entry(drop.id, users[user])
            .await
            .expect("entry")
            .expect("queued");
        assert_eq!(entry.position, position as u64 + 1, "user {user}");
        assert_eq!(entry.admit_at, at(600 + position as i64), "user {user}");
    }
    assert_eq!(
        repos
            .queues
            .admitted_through(drop.id, at(599))
            .await
            .expect("admitted"),
        0
    );
    assert_eq!(
        repos
            .queues
            .admitted_through(drop.id, at(600))
            .await
            .expect("admitted"),
        1
    );
    assert_eq!(
        repos
            .queues
            .admitted_through(drop.id, at(602))
            .await
            .expect("admitted"),
        3
    );

    // After the start: behind the pre-queue, one interval after the slot before.
    let late = joined_queue(repos, &drop, users[4], at(601), 7).await;
    assert_eq!((late.position, late.admit_at), (5, at(604)));
    let later = joined_queue(repos, &drop, users[5], at(900), 1).await;
    assert_eq!(
        (later.position, later.admit_at),
        (6, at(900)),
        "an empty stretch of the queue admits at once, not in a burst"
    );
    assert_eq!(
        repos
            .queues
            .admitted_through(drop.id, at(900))
            .await
            .expect("admitted"),
        6
    );
    assert_eq!(
        repos
            .queues
            .queue_entry(drop.id, UserId::new())
            .await
            .expect("entry"),
        None
    );
}

/// A join stamped before the start that comes once later arrivals hold slots (its
/// process's clock is behind) queues behind them, one interval after the last: the
/// pre-queue's slots are taken, so it cannot be slotted among them and admit two
/// buyers less than an interval apart.
pub async fn queues_a_late_join_stamped_before_the_start_queues_behind(repos: &Repos) {
    let drop = room_drop(repos, 10).await;
    let early = seed_user(repos, "early", Role::Customer).await.id;
    let skewed = seed_user(repos, "skewed", Role::Customer).await.id;
    let first = joined_queue(repos, &drop, early, at(601), 5).await;
    assert_eq!((first.position, first.admit_at), (1, at(601)));
    let behind = joined_queue(repos, &drop, skewed, at(599), 1).await;
    assert_eq!(
        (behind.position, behind.admit_at),
        (2, at(602)),
        "queued behind the later arrival, one interval after it"
    );
    let again = repos
        .queues
        .queue_entry(drop.id, early)
        .await
        .expect("entry")
        .expect("queued");
    assert_eq!((again.position, again.admit_at), (1, at(601)));
    for (t, admitted) in [(601, 1), (602, 2)] {
        assert_eq!(
            repos
                .queues
                .admitted_through(drop.id, at(t))
                .await
                .expect("admitted"),
            admitted,
            "at {t}"
        );
    }
}

/// A drop without a waiting room, an unknown drop, and a room whose drop ended or
/// was cancelled refuse joins.
pub async fn queues_refuse_without_an_open_room(repos: &Repos) {
    let user = seed_user(repos, "buyer", Role::Customer).await;
    let plain = live_drop(repos, 5, 5).await;
    assert_eq!(
        join(repos, &plain, user.id, T0, 1).await,
        QueueOutcome::NoWaitingRoom
    );
    let elsewhere = model::Drop {
        id: DropId::new(),
        ..plain
    };
    assert_eq!(
        join(repos, &elsewhere, user.id, T0, 1).await,
        QueueOutcome::DropNotFound
    );
    let drop = room_drop(repos, 5).await;
    assert_eq!(
        join(repos, &drop, user.id, at(7200), 1).await,
        QueueOutcome::Closed
    );
    let event = Event::drop(EventType::DropCancelled, &drop, T0);
    assert!(repos
        .drops
        .transition(
            drop.id,
            &[DropState::Scheduled],
            DropState::Cancelled,
            &[event]
        )
        .await
        .expect("cancel"));
    assert_eq!(
        join(repos, &drop, user.id, T0, 1).await,
        QueueOutcome::Closed
    );
    assert_eq!(
        repos
            .queues
            .queue_entry(drop.id, user.id)
            .await
            .expect("entry"),
        None
    );
}

/// Thirty buyers join at one instant after the start: thirty places, and no two
/// admissions closer than the room's interval.
pub async fn queues_space_concurrent_joins(repos: &Repos) {
    let drop = room_drop(repos, 5).await;
    let mut users = Vec::new();
    for i in 0..30 {
        users.push(seed_user(repos, &format!("q{i}"), Role::Customer).await.id);
    }
    let joins = users.iter().map(|user| {
        let queues = repos.queues.clone();
        let (id, user) = (drop.id, *user);
        tokio::spawn(async move {
            queues
                .join_queue(id, user, at(1000), 0)
                .await
                .expect("join")
        })
    });
    let mut entries: Vec<QueueEntry> = joined(joins)
        .await
        .into_iter()
        .map(|o| match o {
            QueueOutcome::Joined(entry) => entry,
            other => panic!("expected Joined, got {other:?}"),
        })
        .collect();
    entries.sort_by_key(|e| e.position);
    assert_eq!(
        entries.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<u64>>()
    );
    for pair in entries.windows(2) {
        assert_eq!(
            pair[1].admit_at - pair[0].admit_at,
            chrono::Duration::seconds(1),
            "admissions one interval apart"
        );
    }
    assert_eq!(entries[0].admit_at, at(1000));
    assert_eq!(
        repos
            .queues
            .admitted_through(drop.id, at(1029))
            .await
            .expect("admitted"),
        30
    );
}
