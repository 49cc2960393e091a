//! Idempotency keys: the claim lifecycle, lease takeover, fencing and concurrent claims.

use super::*;

const LEASE: Duration = Duration::from_secs(30);

/// The claim of a `Started` outcome; panics on any other.
fn claim_of(outcome: BeginOutcome) -> Claim {
    match outcome {
        BeginOutcome::Started(claim) => claim,
        other => panic!("expected Started, got {other:?}"),
    }
}

/// Claim, in flight, mismatch, complete and replay, release; keys are per user.
pub async fn idempotency_lifecycle(repos: &Repos) {
    let u1 = seed_user(repos, "One", Role::Customer).await;
    let u2 = seed_user(repos, "Two", Role::Customer).await;
    let store = &repos.idempotency;
    let begin = |user: UserId, key: &'static str, fp: &'static str, now: Timestamp| async move {
        store.begin(user, key, fp, now, LEASE).await.expect("begin")
    };

    let c1 = claim_of(begin(u1.id, "k", "fp1", T0).await);
    assert_eq!(
        begin(u1.id, "k", "fp1", at(1)).await,
        BeginOutcome::InFlight
    );
    assert_eq!(
        begin(u1.id, "k", "fp2", at(1)).await,
        BeginOutcome::Mismatch
    );
    let c2 = claim_of(begin(u2.id, "k", "fp2", at(1)).await);
    assert_ne!(c1, c2, "every claim has its own token");

    let response = json!({ "status": 201, "body": { "id": "o-1" } });
    assert!(store
        .complete(u1.id, "k", c1, &response)
        .await
        .expect("complete"));
    assert_eq!(
        begin(u1.id, "k", "fp1", at(2)).await,
        BeginOutcome::Replay(response.clone())
    );
    assert_eq!(
        begin(u1.id, "k", "fp2", at(2)).await,
        BeginOutcome::Mismatch
    );
    assert!(
        !store.release(u1.id, "k", c1).await.expect("release"),
        "a completed key is not released"
    );
    assert!(
        !store
            .complete(u1.id, "k", c1, &json!("second"))
            .await
            .expect("complete"),
        "a completed key keeps its first response"
    );

    assert!(store.release(u2.id, "k", c2).await.expect("release"));
    claim_of(begin(u2.id, "k", "fp3", at(3)).await);
    assert_eq!(
        begin(u1.id, "k", "fp1", at(4)).await,
        BeginOutcome::Replay(response)
    );
}

/// An expired lease is taken over; purge deletes keys created before the cutoff.
pub async fn idempotency_lease_takeover_and_purge(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let store = &repos.idempotency;
    let begin = |key: &'static str, now: Timestamp| async move {
        store
            .begin(user.id, key, "fp", now, LEASE)
            .await
            .expect("begin")
    };
    claim_of(begin("k", T0).await);
    assert_eq!(begin("k", at(29)).await, BeginOutcome::InFlight);
    let taken = claim_of(begin("k", at(31)).await);
    assert_eq!(
        begin("k", at(32)).await,
        BeginOutcome::InFlight,
        "the new lease holds"
    );
    assert!(store
        .complete(user.id, "k", taken, &json!(1))
        .await
        .expect("complete"));
    assert_eq!(begin("k", at(33)).await, BeginOutcome::Replay(json!(1)));

    claim_of(begin("k2", at(100)).await);
    assert_eq!(store.purge(at(50)).await.expect("purge"), 1);
    claim_of(begin("k", at(101)).await);
    assert_eq!(
        begin("k2", at(101)).await,
        BeginOutcome::InFlight,
        "newer keys stay"
    );
    assert_eq!(store.purge(at(50)).await.expect("purge"), 0);

    // The lease ends at its last instant: a claim begun then takes the key over.
    claim_of(begin("edge", at(200)).await);
    assert_eq!(begin("edge", at(229)).await, BeginOutcome::InFlight);
    claim_of(begin("edge", at(230)).await);
}

/// A holder whose lease was taken over can neither release nor complete the key:
/// the new holder's claim, and then its response, stay.
pub async fn idempotency_takeover_fences_the_old_holder(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let store = &repos.idempotency;
    let begin = |now: Timestamp| async move {
        store
            .begin(user.id, "k", "fp", now, LEASE)
            .await
            .expect("begin")
    };
    let old = claim_of(begin(T0).await);
    let new = claim_of(begin(at(31)).await);
    assert_ne!(old, new);

    assert!(
        !store.release(user.id, "k", old).await.expect("release"),
        "the old holder's release misses"
    );
    assert_eq!(
        begin(at(32)).await,
        BeginOutcome::InFlight,
        "the new holder still holds the key"
    );
    assert!(
        !store
            .complete(user.id, "k", old, &json!("old"))
            .await
            .expect("complete"),
        "the old holder's response is refused"
    );
    assert_eq!(begin(at(33)).await, BeginOutcome::InFlight);

    assert!(store
        .complete(user.id, "k", new, &json!("new"))
        .await
        .expect("complete"));
    assert!(!store.release(user.id, "k", old).await.expect("release"));
    assert_eq!(begin(at(34)).await, BeginOutcome::Replay(json!("new")));
}

/// Of concurrent claims of one key, exactly one starts.
pub async fn idempotency_concurrent_begin(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let tasks = (0..20).map(|_| {
        let store = repos.idempotency.clone();
        tokio::spawn(async move {
            store
                .begin(user.id, "race", "fp", T0, LEASE)
                .await
                .expect("begin")
        })
    });
    let outcomes: Vec<BeginOutcome> = joined(tasks).await;
    let started = outcomes
        .iter()
        .filter(|o| matches!(o, BeginOutcome::Started(_)))
        .count();
    assert_eq!(started, 1, "exactly one claim starts: {outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, BeginOutcome::Started(_) | BeginOutcome::InFlight)));
}
