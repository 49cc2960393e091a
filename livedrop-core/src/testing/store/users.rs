//! Users and follows: insertion, lookup, email uniqueness, follow listings.

use super::*;

/// A user round-trips by id and by email; unknown ids and emails are `None`.
pub async fn users_insert_and_lookup(repos: &Repos) {
    let ada = seed_user(repos, "Ada", Role::Customer).await;
    let users = &repos.users;
    assert_eq!(users.user(ada.id).await.expect("user"), Some(ada.clone()));
    assert_eq!(
        users
            .user_by_email(&ada.email)
            .await
            .expect("user by email"),
        Some(ada.clone())
    );
    assert_eq!(users.user(UserId::new()).await.expect("user"), None);
    assert_eq!(
        users
            .user_by_email("nobody@example.com")
            .await
            .expect("user by email"),
        None
    );
}

/// A second user with the same email, in any case, is a `Conflict` and not stored.
pub async fn users_duplicate_email_conflicts(repos: &Repos) {
    let grace = seed_user(repos, "Grace", Role::Customer).await;
    let twin = User {
        id: UserId::new(),
        email: grace.email.to_uppercase(),
        ..grace.clone()
    };
    match repos.users.insert_user(&twin).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a duplicate email (other case) must conflict, got {other:?}"),
    }
    let same = User {
        id: UserId::new(),
        ..grace.clone()
    };
    match repos.users.insert_user(&same).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a duplicate email must conflict, got {other:?}"),
    }
    assert_eq!(repos.users.user(twin.id).await.expect("user"), None);
    assert_eq!(repos.users.user(same.id).await.expect("user"), None);
    let found = repos
        .users
        .user_by_email(&grace.email)
        .await
        .expect("user by email");
    assert_eq!(found.map(|u| u.id), Some(grace.id));
}

/// Follow and unfollow are idempotent; events are appended only for a new follow.
pub async fn follows_are_idempotent(repos: &Repos) {
    let creator = seed_user(repos, "Creator", Role::Creator).await;
    let fan = seed_user(repos, "Fan", Role::Customer).await;
    drain(repos).await;
    let users = &repos.users;

    let first = follow_event(fan.id, creator.id, T0);
    assert!(users
        .follow(fan.id, creator.id, T0, std::slice::from_ref(&first))
        .await
        .expect("follow"));
    let again = follow_event(fan.id, creator.id, at(10));
    assert!(
        !users
            .follow(fan.id, creator.id, at(10), &[again])
            .await
            .expect("follow again"),
        "following again is not new"
    );
    let events = drain(repos).await;
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first.id],
        "only the new follow appends its events"
    );

    let followers = users
        .followers(creator.id, PageRequest::first(10))
        .await
        .expect("followers");
    assert_eq!(followers.items.len(), 1);
    assert_eq!(followers.items[0].user_id, fan.id);
    assert_eq!(followers.items[0].display_name, fan.display_name);
    assert_eq!(
        followers.items[0].followed_at, T0,
        "following again changes nothing"
    );
    assert_eq!(followers.next_cursor, None);
    let following = users
        .following(fan.id, PageRequest::first(10))
        .await
        .expect("following");
    assert_eq!(following.items.len(), 1);
    assert_eq!(following.items[0].user_id, creator.id);
    assert_eq!(following.items[0].display_name, creator.display_name);

    assert!(users.unfollow(fan.id, creator.id).await.expect("unfollow"));
    assert!(!users
        .unfollow(fan.id, creator.id)
        .await
        .expect("unfollow again"));
    let followers = users
        .followers(creator.id, PageRequest::first(10))
        .await
        .expect("followers");
    assert!(followers.items.is_empty());
    let following = users
        .following(fan.id, PageRequest::first(10))
        .await
        .expect("following");
    assert!(following.items.is_empty());

    assert!(users
        .follow(fan.id, creator.id, at(20), &[])
        .await
        .expect("follow after unfollow"));
    let followers = users
        .followers(creator.id, PageRequest::first(10))
        .await
        .expect("followers");
    assert_eq!(followers.items.len(), 1);
    assert_eq!(followers.items[0].followed_at, at(20));
}

/// Followers and following are listed newest first by `(followed_at, id)`, and
/// walking the pages visits each exactly once (ties on time broken by id).
pub async fn follow_listings_paginate_newest_first(repos: &Repos) {
    let creator = seed_user(repos, "Star", Role::Creator).await;
    let mut fans = HashSet::new();
    for i in 0..25 {
        let fan = seed_user(repos, &format!("fan{i}"), Role::Customer).await;
        // Pairs of follows share a timestamp.
        repos
            .users
            .follow(fan.id, creator.id, at(i / 2), &[])
            .await
            .expect("follow");
        fans.insert(fan.id);
    }
    let listed = all_pages!(7, |page| repos.users.followers(creator.id, page));
    assert_eq!(listed.len(), 25, "every follower listed once");
    let ids: HashSet<UserId> = listed.iter().map(|e| e.user_id).collect();
    assert_eq!(ids, fans);
    let keys: Vec<Cursor> = listed.iter().map(|e| e.cursor()).collect();
    assert_newest_first(&keys, "followers");

    let reader = seed_user(repos, "Reader", Role::Customer).await;
    let mut creators = HashSet::new();
    for i in 0..12 {
        let c = seed_user(repos, &format!("maker{i}"), Role::Creator).await;
        repos
            .users
            .follow(reader.id, c.id, at(i % 4), &[])
            .await
            .expect("follow");
        creators.insert(c.id);
    }
    let listed = all_pages!(5, |page| repos.users.following(reader.id, page));
    assert_eq!(listed.len(), 12);
    let ids: HashSet<UserId> = listed.iter().map(|e| e.user_id).collect();
    assert_eq!(ids, creators);
    let keys: Vec<Cursor> = listed.iter().map(|e| e.cursor()).collect();
    assert_newest_first(&keys, "following");
}
