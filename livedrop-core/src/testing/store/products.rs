//! Products: insertion, patching, listing, filtering and search.

use super::*;

/// Insert, get, and the conditional update with its version check.
pub async fn products_insert_get_update(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    drain(repos).await;
    let products = &repos.products;

    let product = fixtures::product(creator.id, "Blue Hoodie", "Warm and soft", T0);
    let created = Event::product(EventType::ProductCreated, &product, T0);
    products
        .insert_product(&product, std::slice::from_ref(&created))
        .await
        .expect("insert product");
    assert_eq!(
        products.product(product.id).await.expect("product"),
        Some(product.clone())
    );
    assert_eq!(
        products.product(ProductId::new()).await.expect("product"),
        None
    );

    let v2 = Product {
        title: "Blue Hoodie, second run".into(),
        price_cents: 3_000,
        updated_at: at(5),
        version: 2,
        ..product.clone()
    };
    let updated = Event::product(EventType::ProductUpdated, &v2, at(5));
    assert_eq!(
        products
            .update_product(&v2, std::slice::from_ref(&updated))
            .await
            .expect("update"),
        UpdateOutcome::Updated
    );
    assert_eq!(
        products.product(product.id).await.expect("product"),
        Some(v2.clone())
    );

    for stale_version in [2, 4, 1] {
        let stale = Product {
            title: "stale".into(),
            version: stale_version,
            ..v2.clone()
        };
        let event = Event::product(EventType::ProductUpdated, &stale, at(6));
        assert_eq!(
            products
                .update_product(&stale, &[event])
                .await
                .expect("update"),
            UpdateOutcome::VersionMismatch { current: 2 },
            "version {stale_version} is not the stored version + 1"
        );
    }
    assert_eq!(
        products.product(product.id).await.expect("product"),
        Some(v2.clone())
    );

    let unknown = Product {
        id: ProductId::new(),
        ..v2.clone()
    };
    assert_eq!(
        products
            .update_product(&unknown, &[])
            .await
            .expect("update"),
        UpdateOutcome::NotFound
    );

    let events = drain(repos).await;
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![created.id, updated.id],
        "refused updates append nothing"
    );
}

/// Listing filters by creator, searches every term case-insensitively in title or
/// description, and pages newest first.
pub async fn products_list_filter_search_paginate(repos: &Repos) {
    let alice = seed_user(repos, "Alice", Role::Creator).await;
    let bob = seed_user(repos, "Bob", Role::Creator).await;
    let a1 = seed_product(
        repos,
        &alice,
        "Red Running Shoes",
        "lightweight trail runner",
        at(1),
    )
    .await;
    let a2 = seed_product(
        repos,
        &alice,
        "Blue Hoodie",
        "cotton with RED stitching",
        at(2),
    )
    .await;
    let _a3 = seed_product(repos, &alice, "Green Cap", "one size", at(3)).await;
    let b1 = seed_product(repos, &bob, "RED shoes deluxe", "Leather", at(4)).await;
    let _b2 = seed_product(repos, &bob, "Mug", "ceramic", at(4)).await;
    for i in 0..20 {
        seed_product(
            repos,
            &alice,
            &format!("Sticker #{i}"),
            "vinyl",
            at(10 + i / 3),
        )
        .await;
    }

    let all = all_pages!(6, |page| repos
        .products
        .list_products(&ProductFilter::default(), page));
    assert_eq!(all.len(), 25);
    assert_eq!(all.iter().map(|p| p.id).collect::<HashSet<_>>().len(), 25);
    let keys: Vec<Cursor> = all.iter().map(Product::cursor).collect();
    assert_newest_first(&keys, "products");

    let by_alice = ProductFilter {
        creator_id: Some(alice.id),
        ..ProductFilter::default()
    };
    let listed = all_pages!(4, |page| repos.products.list_products(&by_alice, page));
    assert_eq!(listed.len(), 23);
    assert!(listed.iter().all(|p| p.creator_id == alice.id));

    let ids = |items: &[Product]| items.iter().map(|p| p.id).collect::<Vec<_>>();
    let search = ProductFilter::default().with_query("  RED   shoe ");
    let found = all_pages!(10, |page| repos.products.list_products(&search, page));
    assert_eq!(ids(&found), vec![b1.id, a1.id], "every term must match");

    let search = ProductFilter::default().with_query("red");
    let found = all_pages!(2, |page| repos.products.list_products(&search, page));
    assert_eq!(
        ids(&found),
        vec![b1.id, a2.id, a1.id],
        "title or description"
    );

    let search = ProductFilter {
        creator_id: Some(alice.id),
        ..ProductFilter::default().with_query("Red")
    };
    let found = all_pages!(10, |page| repos.products.list_products(&search, page));
    assert_eq!(ids(&found), vec![a2.id, a1.id]);

    let search = ProductFilter::default().with_query("red nothing-matches");
    let page = repos
        .products
        .list_products(&search, PageRequest::first(10))
        .await
        .expect("list");
    assert!(page.items.is_empty());
    assert_eq!(page.next_cursor, None);
}
