//! The demo data `--demo` seeds: a creator, a buyer following them, and products
//! with a drop each — a hoodie live now, a cap starting in an hour, a sneaker in
//! sizes live now, a raffle (a draw whose entries are open now and close in a few
//! minutes) and a console behind a waiting room starting in a few minutes (open to
//! join now) — with bearer tokens for the curl walk-through the binary prints.

use chrono::Utc;
use livedrop_core::model::{Actor, Allocation, DropFilter, DropStatus, Role, User, WaitingRoom};
use livedrop_core::page::PageRequest;
use livedrop_core::service::{Livedrop, NewDrop, NewProduct, NewVariant, Registration};

use crate::state::AppState;

/// What `--demo` created, for the curl walk-through.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The demo creator.
    pub creator: User,
    /// A bearer token of the creator.
    pub creator_token: String,
    /// The demo buyer (follows the creator).
    pub buyer: User,
    /// A bearer token of the buyer.
    pub buyer_token: String,
    /// The product.
    pub product_id: uuid::Uuid,
    /// The live drop.
    pub drop_id: uuid::Uuid,
}

/// Creates (or reuses) the demo creator and buyer, a product and a drop live now;
/// when an earlier start seeded a drop that has not ended, reuses it instead.
pub async fn seed_demo(state: &AppState) -> Result<Demo, livedrop_core::Error> {
    let livedrop = state.livedrop();
    let password = "demo-password";
    let creator = demo_user(
        livedrop,
        "creator@demo.livedrop",
        "Demo Creator",
        Role::Creator,
        password,
    )
    .await?;
    let buyer = demo_user(
        livedrop,
        "buyer@demo.livedrop",
        "Demo Buyer",
        Role::Customer,
        password,
    )
    .await?;
    livedrop.follow(&buyer.actor(), creator.id).await?;
    let actor = creator.actor();
    let token = |a: &Actor| {
        state
            .tokens()
            .issue(a)
            .map(|(t, _)| t)
            .map_err(livedrop_core::Error::internal)
    };
    // A durable store keeps the demo: seed it once, reuse it on later starts while
    // its drop can still be shown.
    let seeded = livedrop
        .list_drops(
            DropFilter {
                status: None,
                creator_id: Some(creator.id),
            },
            PageRequest::first(1),
        )
        .await?
        .items
        .into_iter()
        .next()
        .filter(|v| {
            !matches!(
                v.status_at(Utc::now()),
                DropStatus::Ended | DropStatus::Cancelled
            )
        });
    if let Some(view) = seeded {
        tracing::info!(drop = %view.drop.id, "demo data already seeded; reusing it");
        return Ok(Demo {
            creator_token: token(&actor)?,
            buyer_token: token(&buyer.actor())?,
            creator,
            buyer,
            product_id: view.drop.product_id.0,
            drop_id: view.drop.id.0,
        });
    }
    let product = livedrop
        .create_product(
            &actor,
            NewProduct {
                title: "Demo hoodie".into(),
                description: "Heavyweight cotton, limited run".into(),
                price_cents: 4_900,
                currency: "EUR".into(),
                image_url: Some("https://cdn.example.com/demo-hoodie.jpg".into()),
            },
        )
        .await?;
    // An upcoming drop first, so the storefront has a countdown to show; the live
    // one last, so it is the newest drop a restart finds and reuses.
    let upcoming = livedrop
        .create_product(
            &actor,
            NewProduct {
                title: "Demo cap".into(),
                description: "Embroidered, one size".into(),
                price_cents: 2_500,
                currency: "EUR".into(),
                image_url: None,
            },
        )
        .await?;
    livedrop
        .schedule_drop(
            &actor,
            NewDrop {
                product_id: upcoming.id,
                starts_at: Some(Utc::now() + chrono::Duration::hours(1)),
                ends_at: Utc::now() + chrono::Duration::hours(25),
                total_stock: 50,
                variants: Vec::new(),
                per_user_limit: Some(2),
                allocation: Allocation::FirstCome,
                entries_close_at: None,
                waiting_room: None,
            },
        )
        .await?;
    seed_fair_drops(livedrop, &actor).await?;
    let view = livedrop
        .schedule_drop(
            &actor,
            NewDrop {
                product_id: product.id,
                starts_at: None,
                ends_at: Utc::now() + chrono::Duration::hours(24),
                total_stock: 100,
                variants: Vec::new(),
                per_user_limit: Some(5),
                allocation: Allocation::FirstCome,
                entries_close_at: None,
                waiting_room: None,
            },
        )
        .await?;
    Ok(Demo {
        creator_token: token(&actor)?,
        buyer_token: token(&buyer.actor())?,
        creator,
        buyer,
        product_id: product.id.0,
        drop_id: view.drop.id.0,
    })
}

/// The demo's sized, draw and waiting-room drops (the storefront finds them by
/// their products' titles).
async fn seed_fair_drops(livedrop: &Livedrop, actor: &Actor) -> Result<(), livedrop_core::Error> {
    let now = Utc::now();
    let product = |title: &str, description: &str, price_cents: i64| NewProduct {
        title: title.into(),
        description: description.into(),
        price_cents,
        currency: "EUR".into(),
        image_url: None,
    };
    let first_come = |product_id| NewDrop {
        product_id,
        starts_at: None,
        ends_at: now + chrono::Duration::hours(24),
        total_stock: 0,
        variants: Vec::new(),
        per_user_limit: Some(1),
        allocation: Allocation::FirstCome,
        entries_close_at: None,
        waiting_room: None,
    };
    let sneaker = livedrop
        .create_product(
            actor,
            product(
                "Demo sneaker (sizes)",
                "Leather runner in five EU sizes",
                12_900,
            ),
        )
        .await?;
    livedrop
        .schedule_drop(
            actor,
            NewDrop {
                variants: [
                    ("eu-40", "EU 40", 5),
                    ("eu-41", "EU 41", 8),
                    ("eu-42", "EU 42", 10),
                    ("eu-43", "EU 43", 8),
                    ("eu-44", "EU 44", 3),
                ]
                .into_iter()
                .map(|(sku, label, total_stock)| NewVariant {
                    sku: sku.into(),
                    label: label.into(),
                    total_stock,
                })
                .collect(),
                per_user_limit: Some(2),
                ..first_come(sneaker.id)
            },
        )
        .await?;
    let raffle = livedrop
        .create_product(
            actor,
            product(
                "Demo raffle (draw)",
                "Twenty signed prints, allocated by a verifiable draw",
                8_000,
            ),
        )
        .await?;
    livedrop
        .schedule_drop(
            actor,
            NewDrop {
                total_stock: 20,
                allocation: Allocation::Draw,
                entries_close_at: Some(now + chrono::Duration::minutes(5)),
                ..first_come(raffle.id)
            },
        )
        .await?;
    let console = livedrop
        .create_product(
            actor,
            product(
                "Demo console (waiting room)",
                "The launch batch, sold through a waiting room",
                49_900,
            ),
        )
        .await?;
    livedrop
        .schedule_drop(
            actor,
            NewDrop {
                starts_at: Some(now + chrono::Duration::minutes(5)),
                total_stock: 30,
                waiting_room: Some(WaitingRoom {
                    admit_per_minute: 30,
                    token_seconds: 300,
                    opens_minutes_before: 15,
                }),
                ..first_come(console.id)
            },
        )
        .await?;
    Ok(())
}

async fn demo_user(
    livedrop: &Livedrop,
    email: &str,
    name: &str,
    role: Role,
    password: &str,
) -> Result<User, livedrop_core::Error> {
    match livedrop
        .register(Registration {
            email: email.into(),
            password: password.into(),
            display_name: name.into(),
            role,
        })
        .await
    {
        Ok(user) => Ok(user),
        Err(livedrop_core::Error::EmailTaken) => livedrop.authenticate(email, password).await,
        Err(e) => Err(e),
    }
}
