//! Registration, authentication and the follow graph.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Livedrop;
use crate::error::{Error, Result, StoreError};
use crate::event::{Event, FollowPayload};
use crate::id::UserId;
use crate::model::{Actor, FollowEntry, Profile, Role, User};
use crate::page::{Page, PageRequest};

/// A self-registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Email; compared case-insensitively.
    pub email: String,
    /// Password, at least 8 characters.
    pub password: String,
    /// Name shown to others, 1 to 100 characters.
    pub display_name: String,
    /// `customer` or `creator`; admins are made by the operator only.
    pub role: Role,
}

fn normalize_email(email: &str) -> Result<String> {
    crate::text::check_line("email", email)?;
    let email = crate::text::fold_case(email.trim());
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(Error::invalid(
            "email",
            "email must be an address like name@example.com",
        ))
    }
}

fn check_password(password: &str) -> Result<()> {
    let len = password.chars().count();
    if !(8..=256).contains(&len) {
        return Err(Error::invalid(
            "password",
            "password must be 8 to 256 characters",
        ));
    }
    Ok(())
}

fn check_display_name(name: &str) -> Result<String> {
    crate::text::check_line("display_name", name)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid(
            "display_name",
            "display_name must be 1 to 100 characters",
        ));
    }
    Ok(name.to_owned())
}

/// Argon2 takes 19 MiB and one core per hash for as long as it runs. Hashes beyond
/// the cores do not finish sooner, and each blocking thread's allocator keeps the
/// memory it hashed in: a burst of logins would grow the process by 19 MiB per
/// concurrent hash and never give it back. So at most one hash per core runs at once
/// in a process; the others wait for a permit, which the hashing thread holds until it
/// is done (a caller that goes away does not free it early).
static HASHING: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new(cores))
});

/// Password hashes running now, and the most that ever ran at once.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

async fn hashing_permit() -> Option<OwnedSemaphorePermit> {
    // The semaphore is never closed: `None` cannot happen (and would only lift the bound).
    HASHING.clone().acquire_owned().await.ok()
}

/// Runs `hash` on a blocking thread under a hashing permit.
async fn hashing<T: Send + 'static>(hash: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let permit = hashing_permit().await;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        let out = hash();
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        out
    })
    .await
    .ok()
}

async fn hash_password(password: String) -> Result<String> {
    hashing(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .ok_or_else(|| Error::internal("password hashing did not finish"))?
    .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
}

async fn verify_password(password: String, hash: String) -> bool {
    hashing(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash to verify against when the email is unknown, so both paths cost the same.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"livedrop-dummy-password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl Livedrop {
    /// Registers a customer or creator. `admin` is refused: admins come from
    /// [`Livedrop::bootstrap_admin`].
    pub async fn register(&self, registration: Registration) -> Result<User> {
        if registration.role == Role::Admin {
            return Err(Error::forbidden(
                "admins are created by the operator, not by registration",
            ));
        }
        self.create_user(registration).await
    }

    /// Creates the operator's admin account, or returns it if it exists already.
    pub async fn bootstrap_admin(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<User> {
        let email_norm = normalize_email(email)?;
        if let Some(existing) = self.ports().users.user_by_email(&email_norm).await? {
            return if existing.role == Role::Admin {
                Ok(existing)
            } else {
                Err(Error::EmailTaken)
            };
        }
        self.create_user(Registration {
            email: email.to_owned(),
            password: password.to_owned(),
            display_name: display_name.to_owned(),
            role: Role::Admin,
        })
        .await
    }

    async fn create_user(&self, registration: Registration) -> Result<User> {
        let email = normalize_email(&registration.email)?;
        check_password(&registration.password)?;
        let display_name = check_display_name(&registration.display_name)?;
        let password_hash = hash_password(registration.password).await?;
        let keyed = super::idempotency::keyed_id("user").map(UserId);
        let user = User {
            id: keyed.unwrap_or_default(),
            email,
            display_name,
            role: registration.role,
            password_hash,
            created_at: self.now(),
        };
        match self.ports().users.insert_user(&user).await {
            Ok(()) => Ok(user),
            Err(StoreError::Conflict(_)) => match keyed {
                // An earlier run under this idempotency key registered it.
                Some(id) => match self.ports().users.user(id).await? {
                    Some(existing) if existing.email == user.email => Ok(existing),
                    _ => Err(Error::EmailTaken),
                },
                None => Err(Error::EmailTaken),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The user with these credentials.
    pub async fn authenticate(&self, email: &str, password: &str) -> Result<User> {
        crate::text::check_line("email", email)?;
        let email = crate::text::fold_case(email.trim());
        let user = self.ports().users.user_by_email(&email).await?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| dummy_hash().to_owned());
        let valid = verify_password(password.to_owned(), hash).await;
        match user {
            Some(user) if valid => Ok(user),
            _ => Err(Error::InvalidCredentials),
        }
    }

    /// The user with `id`.
    pub async fn user(&self, id: UserId) -> Result<User> {
        self.ports()
            .users
            .user(id)
            .await?
            .ok_or_else(|| Error::not_found("user"))
    }

    /// The profile of the user with `id` as `viewer` (`None`: anonymous) may see it:
    /// strangers see no email; the user themself and admins do.
    pub async fn profile(&self, viewer: Option<&Actor>, id: UserId) -> Result<Profile> {
        Ok(Profile::of(self.user(id).await?, viewer))
    }

    /// Makes the actor follow `creator`. Idempotent: following again changes nothing.
    pub async fn follow(&self, actor: &Actor, creator: UserId) -> Result<()> {
        if actor.id == creator {
            return Err(Error::invalid("creator_id", "you cannot follow yourself"));
        }
        let target = self.user(creator).await?;
        if target.role == Role::Customer {
            return Err(Error::invalid(
                "creator_id",
                "only creators can be followed",
            ));
        }
        let at = self.now();
        let event = Event::follow(
            &FollowPayload {
                follower_id: actor.id,
                creator_id: creator,
            },
            at,
        );
        self.ports()
            .users
            .follow(actor.id, creator, at, &[event])
            .await?;
        Ok(())
    }

    /// Ends the actor's follow of `creator`. Idempotent.
    pub async fn unfollow(&self, actor: &Actor, creator: UserId) -> Result<()> {
        self.ports().users.unfollow(actor.id, creator).await?;
        Ok(())
    }

    /// Followers of `user`, newest first.
    pub async fn followers(&self, user: UserId, page: PageRequest) -> Result<Page<FollowEntry>> {
        self.user(user).await?;
        Ok(self.ports().users.followers(user, page).await?)
    }

    /// Creators `user` follows, newest first.
    pub async fn following(&self, user: UserId, page: PageRequest) -> Result<Page<FollowEntry>> {
        self.user(user).await?;
        Ok(self.ports().users.following(user, page).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of registrations and logins hashes at most one password per core at
    /// once, and every hash still verifies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hashing_runs_at_most_one_hash_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let burst: Vec<_> = (0..cores * 3 + 2)
            .map(|i| {
                tokio::spawn(async move {
                    let password = format!("password-{i}");
                    let hash = hash_password(password.clone()).await.expect("hash");
                    verify_password(password, hash).await
                })
            })
            .collect();
        for task in burst {
            assert!(task.await.expect("task"), "a hash verifies its password");
        }
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(
            (1..=cores).contains(&peak),
            "{peak} hashes ran at once on {cores} cores"
        );
        assert_eq!(RUNNING.load(Ordering::SeqCst), 0, "no hash left running");
    }
}
