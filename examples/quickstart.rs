// Run: cargo run --example quickstart
//
//! Embeds livedrop with in-memory adapters: a creator schedules a drop of 5 units,
//! 20 buyers race for it (each retrying once with the same idempotency key), one
//! winner pays, one cancels, and the outcome is printed.

use std::sync::Arc;

use chrono::Duration;
use livedrop::adapters::memory::memory_ports;
use livedrop::core::model::Role;
use livedrop::core::service::{Livedrop, NewDrop, NewProduct, PlaceOrder, Registration};
use livedrop::core::{Clock, Config, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(SystemClock);
    let (ports, _store, _bus) = memory_ports(clock.clone());
    let app = Livedrop::new(ports, Config::default());
    let background = app.spawn_background();

    let creator = app
        .register(Registration {
            email: "maker@example.com".into(),
            password: "correct horse battery".into(),
            display_name: "Maker".into(),
            role: Role::Creator,
        })
        .await?
        .actor();
    let product = app
        .create_product(
            &creator,
            NewProduct {
                title: "Numbered print".into(),
                description: "A3, signed".into(),
                price_cents: 2_500,
                currency: "EUR".into(),
                image_url: None,
            },
        )
        .await?;
    let drop = app
        .schedule_drop(
            &creator,
            NewDrop {
                allocation: Default::default(),
                entries_close_at: None,
                waiting_room: None,
                product_id: product.id,
                starts_at: None,
                ends_at: clock.now() + Duration::minutes(30),
                total_stock: 5,
                variants: Vec::new(),
                per_user_limit: Some(1),
            },
        )
        .await?;
    println!(
        "drop {} is {:?} with {} units",
        drop.drop.id,
        drop.status_at(clock.now()),
        drop.stock.total
    );

    let mut buyers = Vec::new();
    for i in 0..20 {
        let buyer = app
            .register(Registration {
                email: format!("buyer{i}@example.com"),
                password: "correct horse battery".into(),
                display_name: format!("Buyer {i}"),
                role: Role::Customer,
            })
            .await?;
        buyers.push(buyer.actor());
    }
    let races = buyers.iter().map(|buyer| {
        let app = app.clone();
        let request = PlaceOrder {
            admission_token: None,
            drop_id: drop.drop.id,
            quantity: 1,
            sku: None,
        };
        async move {
            let key = format!("checkout-{}", buyer.id);
            let first = app.place_order(buyer, Some(&key), request.clone()).await;
            // A retry with the same key replays the first outcome.
            let retry = app.place_order(buyer, Some(&key), request).await;
            assert_eq!(
                first.as_ref().ok().map(|o| o.id),
                retry.as_ref().ok().map(|o| o.id)
            );
            (*buyer, first)
        }
    });
    let results = futures::future::join_all(races).await;
    let winners: Vec<_> = results
        .iter()
        .filter_map(|(buyer, r)| r.as_ref().ok().map(|o| (*buyer, o.clone())))
        .collect();
    let losers = results.iter().filter(|(_, r)| r.is_err()).count();
    println!(
        "{} buyers reserved a unit, {losers} were told out_of_stock",
        winners.len()
    );

    if let [(payer, paid), (quitter, dropped), ..] = winners.as_slice() {
        let paid = app.confirm_order(payer, paid.id).await?;
        let dropped = app.cancel_order(quitter, dropped.id).await?;
        println!(
            "order {} {:?}, order {} {:?}",
            paid.id, paid.status, dropped.id, dropped.status
        );
    }
    let variants = app
        .ports()
        .inventory
        .stock(drop.drop.id)
        .await?
        .ok_or("drop vanished")?;
    let stock = livedrop::core::model::Stock::sum(&variants);
    println!(
        "stock: total {} = available {} + reserved {} + sold {}",
        stock.total, stock.available, stock.reserved, stock.sold
    );
    assert!(stock.is_consistent());
    background.shutdown().await;
    Ok(())
}
