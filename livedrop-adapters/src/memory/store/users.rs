//! Users and the follow graph.

use async_trait::async_trait;
use livedrop_core::event::Event;
use livedrop_core::id::UserId;
use livedrop_core::model::{FollowEntry, User};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::UserRepository;
use livedrop_core::text::fold_case;
use livedrop_core::{StoreError, StoreResult, Timestamp};

use super::{keyset_page, MemoryStore, State};

impl State {
    fn follow_entry(&self, user: UserId, followed_at: Timestamp) -> FollowEntry {
        FollowEntry {
            user_id: user,
            display_name: self
                .users
                .get(&user)
                .map(|u| u.display_name.clone())
                .unwrap_or_default(),
            followed_at,
        }
    }
}

#[async_trait]
impl UserRepository for MemoryStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        self.write(|state| {
            let email = fold_case(&user.email);
            if state.emails.contains_key(&email) {
                return Err(StoreError::Conflict(format!(
                    "email {email:?} is already registered"
                )));
            }
            if state.users.contains_key(&user.id) {
                return Err(StoreError::Conflict(format!("user {} exists", user.id)));
            }
            state.emails.insert(email, user.id);
            state.users.insert(user.id, user.clone());
            Ok(())
        })
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        Ok(self.read().users.get(&id).cloned())
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let state = self.read();
        Ok(state
            .emails
            .get(&fold_case(email))
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn follow(
        &self,
        follower: UserId,
        creator: UserId,
        at: Timestamp,
        events: &[Event],
    ) -> StoreResult<bool> {
        self.write(|state| {
            if state.follows.contains_key(&(follower, creator)) {
                return Ok(false);
            }
            state.follows.insert((follower, creator), at);
            state
                .followers
                .entry(creator)
                .or_default()
                .insert((at, follower.0));
            state.audiences.entry(creator).or_default().insert(follower);
            state
                .following
                .entry(follower)
                .or_default()
                .insert((at, creator.0));
            state.append(events.iter().cloned());
            Ok(true)
        })
    }

    async fn unfollow(&self, follower: UserId, creator: UserId) -> StoreResult<bool> {
        self.write(|state| {
            let Some(at) = state.follows.remove(&(follower, creator)) else {
                return Ok(false);
            };
            if let Some(set) = state.followers.get_mut(&creator) {
                set.remove(&(at, follower.0));
            }
            if let Some(set) = state.audiences.get_mut(&creator) {
                set.remove(&follower);
            }
            if let Some(set) = state.following.get_mut(&follower) {
                set.remove(&(at, creator.0));
            }
            Ok(true)
        })
    }

    async fn followers(
        &self,
        creator: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<FollowEntry>> {
        let state = self.read();
        Ok(keyset_page(
            state.followers.get(&creator),
            page,
            |(at, id)| Some(state.follow_entry(UserId(*id), *at)),
            FollowEntry::cursor,
        ))
    }

    async fn following(
        &self,
        follower: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<FollowEntry>> {
        let state = self.read();
        Ok(keyset_page(
            state.following.get(&follower),
            page,
            |(at, id)| Some(state.follow_entry(UserId(*id), *at)),
            FollowEntry::cursor,
        ))
    }
}
