//! Router tests: every endpoint and error code of the contract, through `oneshot`
//! on in-memory adapters with a manual clock; the arbitrary-input property test
//! also on PostgreSQL when `LIVEDROP_TEST_DATABASE_URL` is set.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use futures::StreamExt;
use livedrop_adapters::memory::memory_ports;
use livedrop_core::model::{Role, User};
use livedrop_core::ports::{BeginOutcome, MockIdempotencyStore};
use livedrop_core::service::{Livedrop, PlaceOrder};
use livedrop_core::{Config, ManualClock, Ports, UserId};
use livedrop_http::auth::TokenKeys;
use livedrop_http::state::ReadinessCheck;
use livedrop_http::{router, AppState, HttpOptions};
use serde_json::{json, Value};
use tower::ServiceExt;

#[path = "harness/sse.rs"]
mod sse;

struct App {
    router: Router,
    state: AppState,
    clock: Arc<ManualClock>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

fn app() -> App {
    app_with(|_| {}, |p| p)
}

fn app_with(options: impl FnOnce(&mut HttpOptions), ports: impl FnOnce(Ports) -> Ports) -> App {
    let clock = Arc::new(ManualClock::fixed());
    let (p, _store, _bus) = memory_ports(clock.clone());
    let livedrop = Livedrop::new(ports(p), Config::default());
    let mut opts = HttpOptions::new(TokenKeys::new(
        b"router-test-secret-0123456789",
        Duration::from_secs(3600),
    ));
    opts.order_rate_per_user = 1000;
    options(&mut opts);
    let state = AppState::new(livedrop, opts);
    App {
        router: router(state.clone()),
        state,
        clock,
    }
}

impl App {
    fn livedrop(&self) -> &Livedrop {
        self.state.livedrop()
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_with(method, uri, token, body, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.send(request(method, uri, token, body, headers)).await
    }

    /// A user inserted straight into the store (no password hashing) and a token.
    async fn user(&self, role: Role, name: &str) -> (User, String) {
        let user = User {
            id: UserId::new(),
            email: format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple()),
            display_name: name.to_owned(),
            role,
            password_hash: "not-a-hash".into(),
            created_at: self.clock_now(),
        };
        self.livedrop()
            .ports()
            .users
            .insert_user(&user)
            .await
            .unwrap();
        let (token, _) = self.state.tokens().issue(&user.actor()).unwrap();
        (user, token)
    }

    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use livedrop_core::Clock;
        self.clock.now()
    }

    async fn product(&self, token: &str) -> Value {
        let r = self
            .call(
                Method::POST,
                "/products",
                Some(token),
                Some(json!({"title": "Hoodie", "description": "Heavy cotton", "price_cents": 4900, "currency": "eur"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body
    }

    async fn live_drop(&self, token: &str, stock: u32, limit: Option<u32>) -> Value {
        let product = self.product(token).await;
        let ends = self.clock_now() + chrono::Duration::hours(2);
        let mut body = json!({"product_id": product["id"], "ends_at": ends, "total_stock": stock});
        if let Some(limit) = limit {
            body["per_user_limit"] = json!(limit);
        }
        let r = self
            .call(Method::POST, "/drops", Some(token), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body
    }

    /// A creator's token and a drop of theirs, live now with `stock` units.
    async fn creator_with_drop(&self, stock: u32, limit: Option<u32>) -> (String, Value) {
        let (_, creator) = self.user(Role::Creator, "creator").await;
        let drop = self.live_drop(&creator, stock, limit).await;
        (creator, drop)
    }

    async fn order(&self, token: &str, drop: &Value, quantity: u32, key: &str) -> Reply {
        let body = json!({"drop_id": drop["id"], "quantity": quantity});
        self.post_keyed("/orders", Some(token), body, key).await
    }

    /// `POST /orders` of `quantity` units of `drop` with an `idempotency-key` and
    /// this `admission-token` header.
    async fn order_admitted(
        &self,
        token: &str,
        drop: &Value,
        quantity: u32,
        key: &str,
        admission: &str,
    ) -> Reply {
        let body = json!({"drop_id": drop["id"], "quantity": quantity});
        let headers = [("idempotency-key", key), ("admission-token", admission)];
        self.call_with(Method::POST, "/orders", Some(token), Some(body), &headers)
            .await
    }

    /// A `POST` with an `idempotency-key`.
    async fn post_keyed(&self, uri: &str, token: Option<&str>, body: Value, key: &str) -> Reply {
        let headers = [("idempotency-key", key)];
        self.call_with(Method::POST, uri, token, Some(body), &headers)
            .await
    }

    /// `GET /users/me` with this `authorization` header, if any.
    async fn me_authorized(&self, authorization: Option<&str>) -> Reply {
        let headers: Vec<_> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        self.call_with(Method::GET, "/users/me", None, None, &headers)
            .await
    }

    /// An anonymous `GET`.
    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None, None).await
    }

    /// A request without a body, as the holder of `token`.
    async fn as_user(&self, method: Method, uri: &str, token: &str) -> Reply {
        self.call(method, uri, Some(token), None).await
    }

    /// `POST /orders/{id}/{action}` (confirm, cancel, extend) as the holder of `token`.
    async fn order_action(&self, id: &str, action: &str, token: &str) -> Reply {
        self.as_user(Method::POST, &format!("/orders/{id}/{action}"), token)
            .await
    }

    /// `PUT` (follow) or `DELETE` (unfollow) of `/users/{user}/followers/me`.
    async fn follow(
        &self,
        method: Method,
        user: impl std::fmt::Display,
        token: Option<&str>,
    ) -> Reply {
        self.call(method, &format!("/users/{user}/followers/me"), token, None)
            .await
    }

    /// Runs the notification consumer over every event in the outbox.
    async fn deliver_events(&self) {
        let ports = self.livedrop().ports();
        let pending = ports.outbox.pending(10_000).await.unwrap();
        for record in &pending {
            self.livedrop().notify_for(&record.event).await.unwrap();
        }
        let seqs: Vec<i64> = pending.iter().map(|r| r.seq).collect();
        ports.outbox.mark_published(&seqs).await.unwrap();
    }
}

fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// Asserts the error shape and code.
#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_error_for("the request", reply, status, code);
}

/// [`assert_error`] for one case of a table, named by `case` in every failure.
#[track_caller]
fn assert_error_for(case: &str, reply: &Reply, status: StatusCode, code: &str) {
    let body = &reply.body;
    assert_eq!(reply.status, status, "{case}: body: {body}");
    assert_eq!(body["code"], code, "{case}: body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: {body}"
    );
    assert!(body["details"].is_object(), "{case}: {body}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{case}: {body}");
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/json",
        "{case}"
    );
}

/// The field names of a JSON object, sorted.
fn sorted_keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// The `items` of a page.
fn items(page: &Value) -> &[Value] {
    page["items"].as_array().unwrap()
}

#[tokio::test]
async fn register_login_and_me() {
    let app = app();
    let body = json!({"email": "Ada@Example.com", "password": "correct horse", "display_name": "Ada", "role": "creator"});
    let r = app
        .call(Method::POST, "/users", None, Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["email"], "ada@example.com");
    assert_eq!(r.body["role"], "creator");
    assert!(r.body.get("password_hash").is_none());
    assert_eq!(
        sorted_keys(&r.body),
        ["created_at", "display_name", "email", "id", "role"]
    );
    let id = r.body["id"].as_str().unwrap().to_owned();

    let admin = json!({"email": "x@example.com", "password": "correct horse", "display_name": "X", "role": "admin"});
    let wrong = json!({"email": "ada@example.com", "password": "wrong password"});
    for (case, uri, body, status, code) in [
        (
            "the same email again",
            "/users",
            body,
            StatusCode::CONFLICT,
            "email_taken",
        ),
        (
            "an admin sign-up",
            "/users",
            admin,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "a wrong password",
            "/sessions",
            wrong,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
    ] {
        let r = app.call(Method::POST, uri, None, Some(body)).await;
        assert_error_for(case, &r, status, code);
    }
    let bad_email = json!({"email": "nope", "password": "correct horse", "display_name": "X", "role": "customer"});
    let r = app
        .call(Method::POST, "/users", None, Some(bad_email))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(r.body["details"]["field"], "email");

    let login = json!({"email": "ADA@example.com", "password": "correct horse"});
    let r = app.call(Method::POST, "/sessions", None, Some(login)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["user"]["id"], id.as_str());
    let token = r.body["token"].as_str().unwrap().to_owned();

    let me = app.as_user(Method::GET, "/users/me", &token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], id.as_str());
    let other = app.get(&format!("/users/{id}")).await;
    assert_eq!(other.body["display_name"], "Ada");
    let r = app.get(&format!("/users/{}", uuid::Uuid::new_v4())).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let (user, _) = app.user(Role::Customer, "old").await;
    let past = chrono::Utc::now() - chrono::Duration::hours(2);
    let expired = app
        .state
        .tokens()
        .issue_expiring_at(&user.actor(), past, past + chrono::Duration::minutes(5))
        .unwrap();
    let foreign = TokenKeys::new(b"another-secret-entirely-000000", Duration::from_secs(60))
        .issue(&user.actor())
        .unwrap()
        .0;
    for (case, authorization) in [
        ("no credentials", None),
        ("a garbage token", Some("Bearer garbage".to_owned())),
        ("basic credentials", Some("Basic abc".to_owned())),
        ("an expired token", Some(format!("Bearer {expired}"))),
        ("another secret's token", Some(format!("Bearer {foreign}"))),
    ] {
        let r = app.me_authorized(authorization.as_deref()).await;
        assert_error_for(case, &r, StatusCode::UNAUTHORIZED, "unauthenticated");
        if case == "an expired token" {
            assert!(r.body["message"].as_str().unwrap().contains("expired"));
        }
    }
}

#[tokio::test]
async fn a_profile_shows_its_email_only_to_its_owner_and_admins() {
    let app = app();
    let (ada, ada_token) = app.user(Role::Creator, "ada").await;
    let (_, stranger_token) = app.user(Role::Customer, "bob").await;
    let (_, admin_token) = app.user(Role::Admin, "root").await;
    let path = format!("/users/{}", ada.id);

    for (viewer, token) in [("anonymous", None), ("another user", Some(&stranger_token))] {
        let r = app
            .call(Method::GET, &path, token.map(String::as_str), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{viewer}: {}", r.body);
        assert_eq!(
            sorted_keys(&r.body),
            ["created_at", "display_name", "id", "role"],
            "{viewer} sees the public profile only"
        );
        assert_eq!(r.body["display_name"], "ada");
        assert_eq!(r.body["role"], "creator");
    }
    for (viewer, token) in [("the owner", &ada_token), ("an admin", &admin_token)] {
        let r = app.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{viewer}: {}", r.body);
        assert_eq!(
            r.body["email"],
            ada.email.as_str(),
            "{viewer} sees the email"
        );
    }
    let me = app.as_user(Method::GET, "/users/me", &ada_token).await;
    assert_eq!(me.body["email"], ada.email.as_str());
    let r = app.as_user(Method::GET, &path, "garbage").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn follows_are_idempotent_and_listings_paginate() {
    let app = app();
    let (creator, _) = app.user(Role::Creator, "creator").await;
    let (customer, customer_token) = app.user(Role::Customer, "customer").await;
    let mut followers = Vec::new();
    for i in 0..3 {
        let (f, token) = app.user(Role::Customer, &format!("f{i}")).await;
        for attempt in ["first", "repeated"] {
            let r = app.follow(Method::PUT, &creator.id, Some(&token)).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{attempt} follow");
        }
        followers.push((f, token));
        app.clock.advance(chrono::Duration::seconds(1));
    }
    for (case, user, token, status, code) in [
        (
            "following a customer",
            customer.id.to_string(),
            Some(followers[0].1.as_str()),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "following anonymously",
            creator.id.to_string(),
            None,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "following an unknown user",
            uuid::Uuid::new_v4().to_string(),
            Some(customer_token.as_str()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let r = app.follow(Method::PUT, user, token).await;
        assert_error_for(case, &r, status, code);
    }

    let page1 = app
        .get(&format!("/users/{}/followers?limit=2", creator.id))
        .await;
    assert_eq!(page1.status, StatusCode::OK);
    let first = items(&page1.body);
    assert_eq!(first.len(), 2);
    assert_eq!(
        first[0]["user_id"],
        followers[2].0.id.to_string(),
        "newest first"
    );
    assert_eq!(first[1]["user_id"], followers[1].0.id.to_string());
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(&format!(
            "/users/{}/followers?limit=2&cursor={cursor}",
            creator.id
        ))
        .await;
    let second = items(&page2.body);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["user_id"], followers[0].0.id.to_string());
    assert!(page2.body["next_cursor"].is_null());

    let following = app
        .get(&format!("/users/{}/following", followers[0].0.id))
        .await;
    assert_eq!(
        following.body["items"][0]["user_id"],
        creator.id.to_string()
    );
    assert_eq!(following.body["items"][0]["display_name"], "creator");

    for attempt in ["first", "repeated"] {
        let r = app
            .follow(Method::DELETE, &creator.id, Some(&followers[0].1))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{attempt} unfollow");
    }
    let all = app.get(&format!("/users/{}/followers", creator.id)).await;
    assert_eq!(items(&all.body).len(), 2);

    for bad in ["limit=0", "limit=101", "limit=x", "cursor=nope"] {
        let r = app
            .get(&format!("/users/{}/followers?{bad}", creator.id))
            .await;
        assert_error_for(bad, &r, StatusCode::BAD_REQUEST, "invalid_input");
    }
    let r = app
        .get(&format!("/users/{}/followers", uuid::Uuid::new_v4()))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn products_create_patch_and_search() {
    let app = app();
    let (creator, token) = app.user(Role::Creator, "creator").await;
    let (_, other_token) = app.user(Role::Creator, "other").await;
    let (_, customer_token) = app.user(Role::Customer, "customer").await;
    let body =
        json!({"title": "Hoodie", "description": "d", "price_cents": 100, "currency": "EUR"});
    for (case, who, status, code) in [
        (
            "a customer",
            Some(customer_token.as_str()),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "anonymous",
            None,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
    ] {
        let r = app
            .call(Method::POST, "/products", who, Some(body.clone()))
            .await;
        assert_error_for(case, &r, status, code);
    }
    let bad =
        json!({"title": "Hoodie", "description": "d", "price_cents": 100, "currency": "EURO"});
    let r = app
        .call(Method::POST, "/products", Some(&token), Some(bad))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(r.body["details"]["field"], "currency");

    let created = app
        .call(
            Method::POST,
            "/products",
            Some(&token),
            Some(json!({"title": "Blue Hoodie", "description": "Warm cotton", "price_cents": 4900, "currency": "eur", "image_url": "https://cdn.example.com/h.jpg"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        sorted_keys(&created.body),
        [
            "created_at",
            "creator_id",
            "currency",
            "description",
            "id",
            "image_url",
            "price_cents",
            "title",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(created.body["currency"], "EUR");
    assert_eq!(created.body["creator_id"], creator.id.to_string());
    let id = created.body["id"].as_str().unwrap().to_owned();
    app.call(Method::POST, "/products", Some(&other_token), Some(json!({"title": "Red Mug", "description": "Ceramic", "price_cents": 900, "currency": "USD"}))).await;

    let path = format!("/products/{id}");
    let got = app.get(&path).await;
    assert_eq!(got.body, created.body);
    let r = app
        .get(&format!("/products/{}", uuid::Uuid::new_v4()))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    for (case, who, body, status, code) in [
        (
            "another creator's patch",
            &other_token,
            json!({"title": "Mine"}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "an unknown field",
            &token,
            json!({"colour": "red"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
    ] {
        let r = app.call(Method::PATCH, &path, Some(who), Some(body)).await;
        assert_error_for(case, &r, status, code);
    }
    let green = json!({"title": "Green Hoodie", "image_url": null});
    let patched = app
        .call(Method::PATCH, &path, Some(&token), Some(green))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["title"], "Green Hoodie");
    assert_eq!(patched.body["version"], 2);
    assert!(patched.body["image_url"].is_null());
    assert_eq!(patched.body["description"], "Warm cotton");
    let stale = json!({"price_cents": 1, "expected_version": 1});
    let r = app
        .call(Method::PATCH, &path, Some(&token), Some(stale))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "version_conflict");
    assert_eq!(r.body["details"]["current"], 2);

    let search = app.get("/products?q=green%20COTTON").await;
    let found = items(&search.body);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id.as_str());
    let none = app.get("/products?q=ceramic%20hoodie").await;
    assert!(items(&none.body).is_empty());
    let mine = app
        .get(&format!("/products?creator_id={}", creator.id))
        .await;
    assert_eq!(items(&mine.body).len(), 1);
    let all = app.get("/products?limit=1").await;
    assert_eq!(items(&all.body).len(), 1);
    assert!(all.body["next_cursor"].is_string());
    let r = app.get("/products?creator_id=nope").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn drops_create_list_filter_get_and_cancel() {
    let app = app();
    let (creator, token) = app.user(Role::Creator, "creator").await;
    let (_, other_token) = app.user(Role::Creator, "other").await;
    let live = app.live_drop(&token, 10, Some(2)).await;
    assert_eq!(
        sorted_keys(&live),
        [
            "allocation",
            "creator_id",
            "ends_at",
            "id",
            "per_user_limit",
            "product_id",
            "starts_at",
            "status",
            "stock",
            "variants"
        ]
    );
    assert_eq!(live["status"], "live");
    assert_eq!(live["per_user_limit"], 2);
    assert_eq!(
        live["stock"],
        json!({"total": 10, "available": 10, "reserved": 0, "sold": 0})
    );
    assert_eq!(
        live["variants"],
        json!([{"sku": "default", "label": "", "stock": {"total": 10, "available": 10, "reserved": 0, "sold": 0}}]),
        "a drop of one stock sells one variant, `default`"
    );

    let product = app.product(&token).await;
    let starts = app.clock_now() + chrono::Duration::hours(1);
    let ends = app.clock_now() + chrono::Duration::hours(3);
    let r = app
        .call(Method::POST, "/drops", Some(&token), Some(json!({"product_id": product["id"], "starts_at": starts, "ends_at": ends, "total_stock": 5})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let scheduled = r.body;
    assert_eq!(scheduled["status"], "scheduled");
    assert_eq!(scheduled["per_user_limit"], 5);

    for (case, who, body, status, code) in [
        (
            "another creator's product",
            &other_token,
            json!({"product_id": product["id"], "ends_at": ends, "total_stock": 5}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "no stock",
            &token,
            json!({"product_id": product["id"], "ends_at": ends, "total_stock": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "an end that is not a time",
            &token,
            json!({"product_id": product["id"], "ends_at": "tomorrow", "total_stock": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "an unknown product",
            &token,
            json!({"product_id": uuid::Uuid::new_v4(), "ends_at": ends, "total_stock": 1}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let r = app
            .call(Method::POST, "/drops", Some(who), Some(body))
            .await;
        assert_error_for(case, &r, status, code);
    }

    let list = |q: &'static str| {
        let app = &app;
        async move {
            let r = app.get(&format!("/drops{q}")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            items(&r.body)
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("?status=live").await, [live["id"].as_str().unwrap()]);
    assert_eq!(
        list("?status=scheduled").await,
        [scheduled["id"].as_str().unwrap()]
    );
    assert_eq!(list("").await.len(), 2);
    let by_creator = app.get(&format!("/drops?creator_id={}", creator.id)).await;
    assert_eq!(items(&by_creator.body).len(), 2);
    let by_other = app
        .get(&format!("/drops?creator_id={}", uuid::Uuid::new_v4()))
        .await;
    assert!(items(&by_other.body).is_empty());
    let r = app.get("/drops?status=bogus").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");

    let live_path = format!("/drops/{}", live["id"].as_str().unwrap());
    let got = app.get(&live_path).await;
    assert_eq!(got.body, live);
    let r = app.get(&format!("/drops/{}", uuid::Uuid::new_v4())).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let cancel = format!("/drops/{}/cancel", scheduled["id"].as_str().unwrap());
    let r = app.as_user(Method::POST, &cancel, &other_token).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = app.as_user(Method::POST, &cancel, &token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "cancelled");
    let again = app.as_user(Method::POST, &cancel, &token).await;
    assert_eq!(again.body["status"], "cancelled");
    assert_eq!(
        list("?status=cancelled").await,
        [scheduled["id"].as_str().unwrap()]
    );

    // Past its end the live drop reads as ended and can no longer be cancelled.
    app.clock.advance(chrono::Duration::hours(3));
    app.livedrop().tick_scheduler().await.unwrap();
    let got = app.get(&live_path).await;
    assert_eq!(got.body["status"], "ended");
    let r = app
        .as_user(Method::POST, &format!("{live_path}/cancel"), &token)
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn orders_place_replay_reject_confirm_cancel() {
    let app = app();
    let (creator, drop) = app.creator_with_drop(3, Some(2)).await;
    let (buyer, token) = app.user(Role::Customer, "buyer").await;
    let (_, other) = app.user(Role::Customer, "other").await;

    let first = app.order(&token, &drop, 1, "k-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(
        sorted_keys(&first.body),
        [
            "created_at",
            "currency",
            "drop_id",
            "id",
            "quantity",
            "reserved_until",
            "sku",
            "status",
            "total_cents",
            "unit_price_cents",
            "user_id"
        ]
    );
    assert_eq!(first.body["sku"], "default");
    assert_eq!(first.body["status"], "reserved");
    assert_eq!(first.body["user_id"], buyer.id.to_string());
    assert_eq!(first.body["total_cents"], 4900);
    let replay = app.order(&token, &drop, 1, "k-1").await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.body, first.body);
    assert_error(
        &app.order(&token, &drop, 2, "k-1").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let unkeyed = |drop_id: Value| {
        let token = &token;
        let app = &app;
        async move {
            let body = json!({"drop_id": drop_id, "quantity": 1});
            app.call(Method::POST, "/orders", Some(token), Some(body))
                .await
        }
    };
    let r = unkeyed(drop["id"].clone()).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "idempotency_key_missing");
    let r = app.order(&token, &drop, 2, "k-2").await;
    assert_error(&r, StatusCode::CONFLICT, "per_user_limit_exceeded");
    assert_eq!(
        r.body["details"],
        json!({"limit": 2, "held": 1, "requested": 2})
    );
    // The rejection is replayed too.
    assert_error(
        &app.order(&token, &drop, 2, "k-2").await,
        StatusCode::CONFLICT,
        "per_user_limit_exceeded",
    );
    let r = app.order(&other, &drop, 3, "o-1").await;
    assert_error(&r, StatusCode::CONFLICT, "per_user_limit_exceeded");
    assert_eq!(
        app.order(&other, &drop, 2, "o-2").await.status,
        StatusCode::CREATED
    );
    let (_, third) = app.user(Role::Customer, "third").await;
    let r = app.order(&third, &drop, 1, "t-1").await;
    assert_error(&r, StatusCode::CONFLICT, "out_of_stock");
    assert_eq!(r.body["details"]["requested"], 1);
    assert_error(
        &app.order(&token, &drop, 0, "k-0").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    let r = unkeyed(json!(uuid::Uuid::new_v4())).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "idempotency_key_missing");
    let ghost = json!({"id": uuid::Uuid::new_v4()});
    assert_error(
        &app.order(&token, &ghost, 1, "k-ghost").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Not live yet.
    let product = app.product(&creator).await;
    let later = app
        .call(
            Method::POST,
            "/drops",
            Some(&creator),
            Some(json!({"product_id": product["id"], "starts_at": app.clock_now() + chrono::Duration::hours(1), "ends_at": app.clock_now() + chrono::Duration::hours(2), "total_stock": 5})),
        )
        .await
        .body;
    let r = app.order(&token, &later, 1, "k-later").await;
    assert_error(&r, StatusCode::CONFLICT, "drop_not_live");
    assert_eq!(r.body["details"]["status"], "scheduled");

    let id = first.body["id"].as_str().unwrap();
    let got = app
        .as_user(Method::GET, &format!("/orders/{id}"), &token)
        .await;
    assert_eq!(got.body, first.body);
    let r = app
        .as_user(Method::GET, &format!("/orders/{id}"), &other)
        .await;
    assert_error_for(
        "another buyer's read",
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let r = app.order_action(id, "confirm", &other).await;
    assert_error_for(
        "another buyer's confirm",
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let mine = app.as_user(Method::GET, "/orders", &token).await;
    let ids: Vec<_> = items(&mine.body).iter().map(|o| o["id"].clone()).collect();
    assert_eq!(ids, [first.body["id"].clone()]);
    let r = app.get("/orders").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated");

    let confirmed = app.order_action(id, "confirm", &token).await;
    assert_eq!(confirmed.status, StatusCode::OK);
    assert_eq!(confirmed.body["status"], "confirmed");
    let again = app.order_action(id, "confirm", &token).await;
    assert_eq!(again.body["status"], "confirmed");
    let r = app.order_action(id, "cancel", &token).await;
    assert_error(&r, StatusCode::CONFLICT, "order_not_reserved");

    let theirs = app.as_user(Method::GET, "/orders", &other).await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = app.order_action(&theirs, "cancel", &other).await;
    assert_eq!(cancelled.body["status"], "cancelled");
    // What a client sees: the returned unit shows within the documented lag (at most
    // `stock_ttl`), on the cache's own clock, paused and moved past that lag.
    let drop_path = format!("/drops/{}", drop["id"].as_str().unwrap());
    let read_stock = || async { app.get(&drop_path).await.body["stock"].clone() };
    let at_once = read_stock().await;
    tokio::time::pause();
    tokio::time::advance(Config::default().stock_ttl + Duration::from_millis(1)).await;
    let after_lag = read_stock().await;
    tokio::time::resume();
    assert_eq!(
        after_lag,
        json!({"total": 3, "available": 2, "reserved": 0, "sold": 1}),
        "was {at_once} right after the cancel"
    );

    // A hold that ran out cannot be confirmed.
    let held = app.order(&third, &drop, 1, "t-2").await;
    assert_eq!(held.status, StatusCode::CREATED, "{}", held.body);
    app.clock.advance(chrono::Duration::minutes(11));
    let held_id = held.body["id"].as_str().unwrap();
    let r = app.order_action(held_id, "confirm", &third).await;
    assert_error(&r, StatusCode::CONFLICT, "hold_expired");
}

#[tokio::test]
async fn a_hold_is_extended_once_while_reserved_and_not_expired() {
    let app = app();
    let (_, drop) = app.creator_with_drop(10, None).await;
    let (_, token) = app.user(Role::Customer, "buyer").await;
    let (_, other) = app.user(Role::Customer, "other").await;
    let (_, admin) = app.user(Role::Admin, "admin").await;
    let at = |body: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(body[field].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let hold = chrono::Duration::from_std(Config::default().hold).unwrap();

    let placed = app.order(&token, &drop, 1, "e-1").await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    assert!(placed.body.get("extended_at").is_none(), "{}", placed.body);
    let id = placed.body["id"].as_str().unwrap().to_owned();

    // Someone else's order and an unknown order are not found.
    let r = app.order_action(&id, "extend", &other).await;
    assert_error_for(
        "another buyer's order",
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let r = app
        .order_action(&uuid::Uuid::new_v4().to_string(), "extend", &token)
        .await;
    assert_error_for("an unknown order", &r, StatusCode::NOT_FOUND, "not_found");
    let r = app
        .call(Method::POST, &format!("/orders/{id}/extend"), None, None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated");

    // Late in the hold, the buyer extends it by the hold period, once.
    app.clock.advance(hold - chrono::Duration::seconds(30));
    let extended = app.order_action(&id, "extend", &token).await;
    assert_eq!(extended.status, StatusCode::OK, "{}", extended.body);
    assert_eq!(extended.body["status"], "reserved");
    assert_eq!(
        at(&extended.body, "reserved_until"),
        at(&placed.body, "reserved_until") + hold
    );
    assert_eq!(at(&extended.body, "extended_at"), app.clock_now());
    let got = app
        .as_user(Method::GET, &format!("/orders/{id}"), &token)
        .await;
    assert_eq!(got.body, extended.body);
    let again = app.order_action(&id, "extend", &token).await;
    assert_error(&again, StatusCode::CONFLICT, "already_extended");
    assert_eq!(
        again.body["details"]["reserved_until"],
        extended.body["reserved_until"]
    );

    // Past the first end the order still holds and can be confirmed.
    app.clock.advance(chrono::Duration::minutes(1));
    let confirmed = app.order_action(&id, "confirm", &token).await;
    assert_eq!(confirmed.body["status"], "confirmed", "{}", confirmed.body);
    let r = app.order_action(&id, "extend", &token).await;
    assert_error(&r, StatusCode::CONFLICT, "order_not_reserved");
    assert_eq!(
        r.body["details"],
        json!({"status": "confirmed", "action": "extended"})
    );

    // A hold that ran out cannot be extended, swept or not.
    let late = app.order(&token, &drop, 1, "e-2").await;
    let late_id = late.body["id"].as_str().unwrap().to_owned();
    app.clock.advance(hold);
    let r = app.order_action(&late_id, "extend", &token).await;
    assert_error_for("before the sweep", &r, StatusCode::CONFLICT, "hold_expired");
    app.livedrop().sweep_holds().await.unwrap();
    let r = app.order_action(&late_id, "extend", &token).await;
    assert_error_for("after the sweep", &r, StatusCode::CONFLICT, "hold_expired");

    // An admin may extend a buyer's order, as they may confirm or cancel it.
    let third = app.order(&token, &drop, 1, "e-3").await;
    let third_id = third.body["id"].as_str().unwrap();
    let by_admin = app.order_action(third_id, "extend", &admin).await;
    assert_eq!(by_admin.status, StatusCode::OK, "{}", by_admin.body);
    let cancelled = app.order_action(third_id, "cancel", &token).await;
    assert_eq!(cancelled.body["status"], "cancelled");
    let r = app.order_action(third_id, "extend", &token).await;
    assert_error(&r, StatusCode::CONFLICT, "order_not_reserved");
    assert_eq!(r.body["details"]["status"], "cancelled");
}

#[tokio::test]
async fn an_order_while_the_first_with_its_key_runs_is_409() {
    // The key of an order is claimed by a request still running (its lease live):
    // the order decides nothing.
    let app = app();
    let (_, drop) = app.creator_with_drop(3, None).await;
    let (buyer, token) = app.user(Role::Customer, "buyer").await;
    let request = PlaceOrder {
        drop_id: drop["id"].as_str().unwrap().parse().unwrap(),
        quantity: 1,
        sku: None,
        admission_token: None,
    };
    let store = &app.livedrop().ports().idempotency;
    let claimed = store
        .begin(
            buyer.id,
            "busy",
            &request.fingerprint(),
            app.clock_now(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(matches!(claimed, BeginOutcome::Started(_)), "{claimed:?}");
    let r = app.order(&token, &drop, 1, "busy").await;
    assert_error(&r, StatusCode::CONFLICT, "idempotency_key_in_flight");
    let r = app
        .get(&format!("/drops/{}", drop["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        r.body["stock"]["available"], 3,
        "nothing reserved: {}",
        r.body
    );

    // The optional key on other POSTs goes through the same store.
    let mut mock = MockIdempotencyStore::new();
    mock.expect_begin()
        .returning(|_, _, _, _, _| Ok(BeginOutcome::InFlight));
    let app = app_with(
        |_| {},
        |mut p| {
            p.idempotency = Arc::new(mock);
            p
        },
    );
    let (creator, _) = app.creator_with_drop(3, None).await;
    let product = json!({"title": "t", "description": "", "price_cents": 1, "currency": "EUR"});
    let r = app
        .post_keyed("/products", Some(&creator), product, "busy")
        .await;
    assert_error(&r, StatusCode::CONFLICT, "idempotency_key_in_flight");
}

#[tokio::test]
async fn optional_idempotency_keys_replay_other_posts() {
    let app = app();
    let (_, token) = app.user(Role::Creator, "creator").await;
    let body = json!({"title": "Cap", "description": "", "price_cents": 1500, "currency": "EUR"});
    let send = |body: Value, key: &'static str| {
        let app = &app;
        let token = token.clone();
        async move { app.post_keyed("/products", Some(&token), body, key).await }
    };
    let first = send(body.clone(), "p-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = send(body.clone(), "p-1").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let listed = app.get("/products").await;
    assert_eq!(items(&listed.body).len(), 1, "no second product");
    let other = json!({"title": "Other", "description": "", "price_cents": 1, "currency": "EUR"});
    let r = send(other, "p-1").await;
    assert_error(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let r = send(body.clone(), "").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");
    // A rejection is replayed as well.
    let bad = json!({"title": "", "description": "", "price_cents": 1, "currency": "EUR"});
    let r = send(bad.clone(), "p-bad").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");
    let replayed = send(bad, "p-bad").await;
    assert_error(&replayed, StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(replayed.headers["idempotent-replayed"], "true");

    // Anonymous registration with a key.
    let reg = json!({"email": "cap@example.com", "password": "long enough", "display_name": "Cap", "role": "customer"});
    let mut ids = Vec::new();
    for attempt in ["first", "repeated"] {
        let r = app.post_keyed("/users", None, reg.clone(), "u-1").await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{attempt} sign-up: {}",
            r.body
        );
        ids.push(r.body["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
}

/// Products whose first insert is stored and then answered `unavailable`, as when
/// the connection drops between the commit and its answer.
struct FirstAnswerLost {
    inner: Arc<dyn livedrop_core::ports::ProductRepository>,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl livedrop_core::ports::ProductRepository for FirstAnswerLost {
    async fn insert_product(
        &self,
        product: &livedrop_core::model::Product,
        events: &[livedrop_core::Event],
    ) -> livedrop_core::StoreResult<()> {
        self.inner.insert_product(product, events).await?;
        if self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(livedrop_core::StoreError::unavailable(
                "database",
                "connection reset after commit",
            ))
        }
    }
    async fn product(
        &self,
        id: livedrop_core::ProductId,
    ) -> livedrop_core::StoreResult<Option<livedrop_core::model::Product>> {
        self.inner.product(id).await
    }
    async fn update_product(
        &self,
        product: &livedrop_core::model::Product,
        events: &[livedrop_core::Event],
    ) -> livedrop_core::StoreResult<livedrop_core::ports::UpdateOutcome> {
        self.inner.update_product(product, events).await
    }
    async fn list_products(
        &self,
        filter: &livedrop_core::model::ProductFilter,
        page: livedrop_core::PageRequest,
    ) -> livedrop_core::StoreResult<livedrop_core::Page<livedrop_core::model::Product>> {
        self.inner.list_products(filter, page).await
    }
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_never_runs_twice_for_its_key() {
    let app = app_with(
        |_| {},
        |mut p| {
            p.products = Arc::new(FirstAnswerLost {
                inner: p.products.clone(),
                lost: std::sync::atomic::AtomicBool::new(false),
            });
            p
        },
    );
    let (creator, token) = app.user(Role::Creator, "creator").await;
    let body = json!({"title": "Hoodie", "description": "Heavy cotton", "price_cents": 4900, "currency": "EUR"});
    let send = || app.post_keyed("/products", Some(&token), body.clone(), "p-lost");
    let first = send().await;
    assert_error(&first, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let retry = send().await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    let again = send().await;
    assert_eq!(again.body["id"], retry.body["id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let listed = app
        .get(&format!("/products?creator_id={}", creator.id))
        .await;
    let products = items(&listed.body);
    assert_eq!(
        products.len(),
        1,
        "one product for one key: {}",
        listed.body
    );
    assert_eq!(products[0]["id"], retry.body["id"]);
}

#[tokio::test]
async fn notifications_list_filter_and_read() {
    let app = app();
    let (creator, creator_token) = app.user(Role::Creator, "creator").await;
    let (_, token) = app.user(Role::Customer, "fan").await;
    let follow = app.follow(Method::PUT, &creator.id, Some(&token)).await;
    assert_eq!(follow.status, StatusCode::NO_CONTENT);
    let d1 = app.live_drop(&creator_token, 5, None).await;
    app.clock.advance(chrono::Duration::seconds(1));
    let d2 = app.live_drop(&creator_token, 5, None).await;
    app.deliver_events().await;

    let all = app.as_user(Method::GET, "/notifications", &token).await;
    assert_eq!(all.status, StatusCode::OK);
    let listed = items(&all.body);
    assert_eq!(listed.len(), 2, "{}", all.body);
    assert_eq!(listed[0]["kind"], "drop_live");
    assert_eq!(listed[0]["payload"]["drop_id"], d2["id"]);
    assert_eq!(listed[1]["payload"]["drop_id"], d1["id"]);
    assert!(listed[0]["read_at"].is_null());
    assert_eq!(
        sorted_keys(&listed[0]),
        ["created_at", "id", "kind", "payload", "read_at"]
    );

    let id = listed[1]["id"].as_str().unwrap();
    let read_path = format!("/notifications/{id}/read");
    let read = app.as_user(Method::POST, &read_path, &token).await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(read.body["read_at"].is_string());
    let unread = app
        .as_user(Method::GET, "/notifications?unread=true", &token)
        .await;
    let unread_items = items(&unread.body);
    assert_eq!(unread_items.len(), 1);
    assert_eq!(unread_items[0]["id"], listed[0]["id"]);
    let page = app
        .as_user(Method::GET, "/notifications?limit=1", &token)
        .await;
    assert!(page.body["next_cursor"].is_string());

    let marked = app
        .as_user(Method::POST, "/notifications/read-all", &token)
        .await;
    assert_eq!(marked.body, json!({"marked": 1}));
    let unread = app
        .as_user(Method::GET, "/notifications?unread=true", &token)
        .await;
    assert!(items(&unread.body).is_empty());

    let unknown = format!("/notifications/{}/read", uuid::Uuid::new_v4());
    for (case, method, uri, who, status, code) in [
        (
            "an unknown notification",
            Method::POST,
            unknown.as_str(),
            Some(&token),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "another user's notification",
            Method::POST,
            &read_path,
            Some(&creator_token),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "a filter that is not a boolean",
            Method::GET,
            "/notifications?unread=maybe",
            Some(&token),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "anonymous",
            Method::GET,
            "/notifications",
            None,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
    ] {
        let r = app.call(method, uri, who.map(String::as_str), None).await;
        assert_error_for(case, &r, status, code);
    }
}

#[tokio::test]
async fn internal_api_needs_its_token() {
    let closed = app();
    let (_, drop) = closed.creator_with_drop(5, None).await;
    let adjust = format!(
        "/internal/inventory/{}/adjust",
        drop["id"].as_str().unwrap()
    );
    let r = closed
        .call_with(
            Method::POST,
            &adjust,
            None,
            Some(json!({"delta": 1, "reason": "r"})),
            &[("x-internal-token", "anything")],
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");

    const INTERNAL: &str = "s3cret-internal";
    let app = app_with(|o| o.internal_token = Some(INTERNAL.into()), |p| p);
    let (creator, drop) = app.creator_with_drop(5, None).await;
    let drop_id = drop["id"].as_str().unwrap();
    let adjust = format!("/internal/inventory/{drop_id}/adjust");
    let ledger = format!("/internal/inventory/{drop_id}/ledger");
    let body = json!({"delta": 3, "reason": "restock from warehouse"});
    for (case, bearer, internal) in [
        ("no token", None, None),
        ("a wrong internal token", None, Some("wrong")),
        // A user's bearer token is not the internal token.
        ("a user's bearer token", Some(creator.as_str()), None),
    ] {
        let headers: Vec<_> = internal
            .map(|t| ("x-internal-token", t))
            .into_iter()
            .collect();
        let r = app
            .call_with(Method::POST, &adjust, bearer, Some(body.clone()), &headers)
            .await;
        assert_error_for(case, &r, StatusCode::UNAUTHORIZED, "unauthenticated");
    }

    let r = app
        .call_with(
            Method::POST,
            &adjust,
            None,
            Some(body),
            &[("x-internal-token", INTERNAL)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["kind"], "restock");
    assert_eq!(r.body["sku"], "default");
    assert_eq!(
        r.body["stock_after"],
        json!({"total": 8, "available": 8, "reserved": 0, "sold": 0})
    );
    let shrink = json!({"delta": -2, "reason": "damaged"});
    let r = app
        .call(Method::POST, &adjust, Some(INTERNAL), Some(shrink))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["kind"], "shrink");
    let unknown = format!("/internal/inventory/{}/adjust", uuid::Uuid::new_v4());
    for (case, uri, body, status, code) in [
        (
            "more than the stock",
            &adjust,
            json!({"delta": -100, "reason": "oops"}),
            StatusCode::CONFLICT,
            "insufficient_stock",
        ),
        (
            "a zero delta",
            &adjust,
            json!({"delta": 0, "reason": "noop"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "an unknown drop",
            &unknown,
            json!({"delta": 1, "reason": "x"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let r = app
            .call(Method::POST, uri, Some(INTERNAL), Some(body))
            .await;
        assert_error_for(case, &r, status, code);
    }

    let r = app.as_user(Method::GET, &ledger, INTERNAL).await;
    let kinds: Vec<_> = items(&r.body)
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.len(), 3);
    assert!(
        kinds.contains(&"initial".to_owned())
            && kinds.contains(&"restock".to_owned())
            && kinds.contains(&"shrink".to_owned())
    );
    let r = app.get(&ledger).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    let got = app.get(&format!("/drops/{drop_id}")).await;
    assert_eq!(got.body["stock"]["total"], 6);

    // Cache invalidation by key and prefix.
    app.get("/products").await;
    let invalidate = "/internal/cache/invalidate";
    let keys = json!({"keys": [format!("drop:{drop_id}")], "prefixes": ["products:"]});
    let r = app
        .call(Method::POST, invalidate, Some(INTERNAL), Some(keys))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["removed"].as_u64().unwrap() >= 1);
    for (case, who, body, status, code) in [
        (
            "anonymous",
            None,
            json!({"keys": []}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "an empty prefix",
            Some(INTERNAL),
            json!({"prefixes": [""]}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
    ] {
        let r = app.call(Method::POST, invalidate, who, Some(body)).await;
        assert_error_for(case, &r, status, code);
    }
}

#[tokio::test]
async fn order_rate_limits_answer_429_with_retry_after() {
    let app = app_with(|o| o.order_rate_per_user = 1, |p| p);
    let (_, drop) = app.creator_with_drop(100, None).await;
    let (_, token) = app.user(Role::Customer, "bot").await;
    assert_eq!(
        app.order(&token, &drop, 1, "r-1").await.status,
        StatusCode::CREATED
    );
    let r = app.order(&token, &drop, 1, "r-2").await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(r.body["details"]["retry_after_secs"], retry);
    // Another user is not affected.
    let (_, human) = app.user(Role::Customer, "human").await;
    assert_eq!(
        app.order(&human, &drop, 1, "h-1").await.status,
        StatusCode::CREATED
    );

    // Per address: two users behind one address share its limit.
    let app = app_with(|o| o.order_rate_per_ip = 1, |p| p);
    let (_, drop) = app.creator_with_drop(100, None).await;
    let from = |token: &str, key: &str| {
        let mut req = request(
            Method::POST,
            "/orders",
            Some(token),
            Some(json!({"drop_id": drop["id"], "quantity": 1})),
            &[("idempotency-key", key)],
        );
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 7], 4000))));
        req
    };
    let (_, a) = app.user(Role::Customer, "a").await;
    let (_, b) = app.user(Role::Customer, "b").await;
    assert_eq!(app.send(from(&a, "a-1")).await.status, StatusCode::CREATED);
    let r = app.send(from(&b, "b-1")).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(r.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn malformed_requests_are_4xx_in_the_error_shape() {
    let app = app_with(|o| o.body_limit = 1024, |p| p);
    let (_, token) = app.user(Role::Creator, "creator").await;
    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/products")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Body::from(body)).unwrap()
    };
    let json = Some("application/json");
    let big = Box::leak(format!("{{\"title\": \"{}\"}}", "x".repeat(4096)).into_boxed_str());
    for (case, body, content_type, status, code) in [
        (
            "broken JSON",
            "{not json",
            json,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "an empty body",
            "",
            json,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "a field of the wrong type",
            r#"{"title": 5}"#,
            json,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "text/plain",
            r#"{"title":"t"}"#,
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no content type",
            r#"{"title":"t"}"#,
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "a body over the limit",
            big,
            json,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ] {
        let r = app.send(raw(body, content_type)).await;
        assert_error_for(case, &r, status, code);
    }
    // Oversized with an idempotency key (the layer buffers the body itself).
    let mut req = raw(big, Some("application/json"));
    req.headers_mut()
        .insert("idempotency-key", "big".parse().unwrap());
    assert_error(
        &app.send(req).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    for (case, method, uri, who, status, code) in [
        (
            "a product id that is not a UUID",
            Method::GET,
            "/products/not-a-uuid",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "an order id that is not a UUID",
            Method::POST,
            "/orders/123/confirm",
            Some(token.as_str()),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "an unknown route",
            Method::GET,
            "/no/such/route",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PUT on a GET route",
            Method::PUT,
            "/healthz",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let r = app.call(method, uri, who, None).await;
        assert_error_for(case, &r, status, code);
    }
    let r = app.call(Method::DELETE, "/products", None, None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(r.headers.contains_key(header::ALLOW));
    let r = app.me_authorized(Some("Bearer")).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn request_ids_are_set_and_propagated() {
    let app = app();
    let r = app.get("/healthz").await;
    let generated = r.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok());
    let headers = [("x-request-id", "abc-123")];
    let r = app
        .call_with(Method::GET, "/healthz", None, None, &headers)
        .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    let r = app.get("/nowhere").await;
    assert!(r.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn responses_are_gzipped_when_asked() {
    let app = app();
    let response = app
        .router
        .clone()
        .oneshot(
            Request::get("/openapi.json")
                .header(header::ACCEPT_ENCODING, "gzip")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let app = app();
    let r = app.get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ok");
    let r = app.get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let names: Vec<_> = r.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["store", "cache"]);

    let failing = app_with(
        |o| {
            o.readiness = vec![
                ReadinessCheck::new("store", || async { Ok(()) }),
                ReadinessCheck::new("bus", || async { Err("connection refused".to_owned()) }),
            ]
        },
        |p| p,
    );
    let r = failing.get("/readyz").await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(r.body["details"]["failing"], json!(["bus"]));
    assert!(r.body["message"].as_str().unwrap().contains("bus"));
    assert!(
        !r.body.to_string().contains("refused"),
        "the cause stays in the logs"
    );

    // A cache outage degrades the service but keeps the instance in rotation: the
    // default checks mark the cache optional.
    let degraded = app_with(
        |_| {},
        |mut p| {
            let mut cache = livedrop_core::ports::MockCache::new();
            cache.expect_get().returning(|_| {
                Err(livedrop_core::ports::CacheError(
                    "connection refused".into(),
                ))
            });
            p.cache = Arc::new(cache);
            p
        },
    );
    let r = degraded.get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "degraded");
    assert_eq!(r.body["checks"][1]["status"], "degraded");

    let (_, drop) = app.creator_with_drop(1, None).await;
    let (_, token) = app.user(Role::Customer, "buyer").await;
    app.get(&format!("/drops/{}", drop["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        app.order(&token, &drop, 1, "m-1").await.status,
        StatusCode::CREATED
    );
    let (_, late) = app.user(Role::Customer, "late").await;
    assert_eq!(
        app.order(&late, &drop, 1, "m-2").await.status,
        StatusCode::CONFLICT
    );
    let response = app
        .router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            r#"livedrop_http_requests_total{method="GET",route="/drops/{id}",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains("livedrop_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("livedrop_orders_placed_total"), "{text}");
    assert!(
        text.contains(r#"livedrop_orders_rejected_total{code="out_of_stock"}"#),
        "{text}"
    );
    assert!(text.contains("livedrop_cache_hits_total"), "{text}");
    assert!(text.contains("livedrop_cache_misses_total"), "{text}");
    assert!(text.contains("livedrop_outbox_backlog"), "{text}");
    assert!(
        !text.contains(&drop["id"].as_str().unwrap().to_string()),
        "routes, not raw URIs"
    );

    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for path in [
        "/users",
        "/sessions",
        "/users/me",
        "/users/{id}",
        "/users/{id}/followers/me",
        "/users/{id}/followers",
        "/users/{id}/following",
        "/products",
        "/products/{id}",
        "/drops",
        "/drops/{id}",
        "/drops/{id}/cancel",
        "/drops/{id}/events",
        "/drops/{id}/waitlist/me",
        "/orders",
        "/orders/{id}",
        "/orders/{id}/confirm",
        "/orders/{id}/cancel",
        "/orders/{id}/extend",
        "/notifications",
        "/notifications/{id}/read",
        "/notifications/read-all",
        "/internal/inventory/{drop_id}/adjust",
        "/internal/inventory/{drop_id}/ledger",
        "/internal/cache/invalidate",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    let schemas = doc.body["components"]["schemas"].as_object().unwrap();
    for schema in [
        "DropBody",
        "OrderBody",
        "ErrorBody",
        "UserBody",
        "ProductBody",
        "NotificationBody",
        "VariantBody",
        "NewVariantRequest",
        "WaitlistRequest",
        "WaitlistBody",
    ] {
        assert!(schemas.contains_key(schema), "missing {schema}");
    }
    let waitlist = &paths["/drops/{id}/waitlist/me"];
    for method in ["put", "get", "delete"] {
        assert!(waitlist.get(method).is_some(), "waitlist {method} missing");
    }
    for (path, method, status) in [
        ("/drops/{id}/waitlist/me", "put", "409"),
        ("/drops/{id}/waitlist/me", "get", "404"),
        ("/drops/{id}/waitlist/me", "delete", "204"),
        ("/orders", "post", "404"),
    ] {
        assert!(
            paths[path][method]["responses"].get(status).is_some(),
            "{method} {path} documents {status}"
        );
    }
    for (schema, field) in [
        ("DropBody", "variants"),
        ("OrderBody", "sku"),
        ("NewOrderRequest", "sku"),
        ("NewDropRequest", "variants"),
        ("AdjustRequest", "sku"),
        ("LedgerEntryBody", "sku"),
    ] {
        assert!(
            schemas[schema]["properties"].get(field).is_some(),
            "{schema} has {field}"
        );
    }
    assert!(schemas["UserBody"]["properties"]
        .get("password_hash")
        .is_none());
}

#[tokio::test]
async fn slow_requests_time_out_in_the_error_shape() {
    let app = app_with(
        |o| {
            o.request_timeout = Duration::from_millis(50);
            o.readiness = vec![ReadinessCheck::new("store", || async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            })];
        },
        |p| p,
    );
    let r = app.get("/readyz").await;
    assert_error(&r, StatusCode::REQUEST_TIMEOUT, "request_timeout");
}

/// Reads SSE frames until one satisfies `want`, for at most 5 s.
async fn next_matching(
    stream: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buffer: &mut String,
    want: impl Fn(&str, &Value) -> bool,
) -> (String, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        while let Some((name, value)) = sse::take_frame(buffer) {
            if want(&name, &value) {
                return (name, value);
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no wanted SSE event in time; unread: {buffer:?}"))
            .expect("stream open")
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// Waits until the background live feed relays events (it subscribes to the bus
/// asynchronously after `spawn_background`): emits product events until one arrives.
async fn wait_for_live_feed(app: &App, token: &str) {
    let mut rx = app.livedrop().live_events();
    for _ in 0..50 {
        app.product(token).await;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            return;
        }
    }
    panic!("the live feed never delivered an event");
}

#[tokio::test]
async fn drop_events_stream_snapshot_then_changes() {
    let app = app();
    let background = app.livedrop().spawn_background();
    let (_, creator) = app.user(Role::Creator, "creator").await;
    wait_for_live_feed(&app, &creator).await;
    let (_, token) = app.user(Role::Customer, "buyer").await;
    let drop = app.live_drop(&creator, 2, None).await;
    let id = drop["id"].as_str().unwrap();
    let r = app
        .get(&format!("/drops/{}/events", uuid::Uuid::new_v4()))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let response = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/drops/{id}/events"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut stream = response.into_body().into_data_stream();
    let mut buffer = String::new();
    let (name, first) = next_matching(&mut stream, &mut buffer, |_, _| true).await;
    assert_eq!(name, "stock");
    assert_eq!(
        first["stock"],
        json!({"total": 2, "available": 2, "reserved": 0, "sold": 0})
    );
    let (name, status) = next_matching(&mut stream, &mut buffer, |_, _| true).await;
    assert_eq!(name, "status");
    assert_eq!(status["status"], "live");

    assert_eq!(
        app.order(&token, &drop, 2, "sse-1").await.status,
        StatusCode::CREATED
    );
    let (_, stock) = next_matching(&mut stream, &mut buffer, |n, v| {
        n == "stock" && v["stock"]["reserved"] == 2
    })
    .await;
    assert_eq!(stock["stock"]["available"], 0);
    assert_eq!(stock["drop_id"], id);
    let (_, sold_out) = next_matching(&mut stream, &mut buffer, |n, _| n == "status").await;
    assert_eq!(sold_out["status"], "sold_out");

    app.state.shutdown_token().cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends on shutdown");
    background.shutdown().await;
}

/// The variant `sku` of a drop body.
fn variant<'a>(drop: &'a Value, sku: &str) -> &'a Value {
    drop["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["sku"] == sku)
        .unwrap_or_else(|| panic!("no variant {sku} in {drop}"))
}

/// `{"total", "available", "reserved", "sold"}`.
fn stock(total: u32, available: u32, reserved: u32, sold: u32) -> Value {
    json!({"total": total, "available": available, "reserved": reserved, "sold": sold})
}

impl App {
    /// A live drop of `variants` (`(sku, label, stock)`), with `limit` if any.
    async fn sized_drop(
        &self,
        token: &str,
        variants: &[(&str, &str, u32)],
        limit: Option<u32>,
    ) -> Value {
        let product = self.product(token).await;
        let ends = self.clock_now() + chrono::Duration::hours(2);
        let variants: Vec<Value> = variants
            .iter()
            .map(|(sku, label, stock)| json!({"sku": sku, "label": label, "total_stock": stock}))
            .collect();
        let mut body = json!({"product_id": product["id"], "ends_at": ends, "variants": variants});
        if let Some(limit) = limit {
            body["per_user_limit"] = json!(limit);
        }
        let r = self
            .call(Method::POST, "/drops", Some(token), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    /// `POST /orders` of `quantity` units of `sku` (none: the field left out).
    async fn order_sku(
        &self,
        token: &str,
        drop: &Value,
        sku: Option<&str>,
        quantity: u32,
        key: &str,
    ) -> Reply {
        let mut body = json!({"drop_id": drop["id"], "quantity": quantity});
        if let Some(sku) = sku {
            body["sku"] = json!(sku);
        }
        self.post_keyed("/orders", Some(token), body, key).await
    }

    /// `method` on `/drops/{drop}/waitlist/me` with `body`.
    async fn waitlist(
        &self,
        method: Method,
        drop: &Value,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let uri = format!("/drops/{}/waitlist/me", drop["id"].as_str().unwrap());
        self.call(method, &uri, Some(token), body).await
    }

    /// The drop as `GET /drops/{id}` shows it once the displayed stock's documented
    /// lag (at most `stock_ttl`) has passed, on the cache's own clock, paused and
    /// moved past that lag.
    async fn drop_settled(&self, drop: &Value) -> Value {
        tokio::time::pause();
        tokio::time::advance(Config::default().stock_ttl + Duration::from_millis(1)).await;
        let view = self.drop_now(drop).await;
        tokio::time::resume();
        view
    }

    /// The drop as `GET /drops/{id}` shows it now.
    async fn drop_now(&self, drop: &Value) -> Value {
        let r = self
            .get(&format!("/drops/{}", drop["id"].as_str().unwrap()))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }
}

#[tokio::test]
async fn a_sized_drop_sells_each_size_on_its_own_stock_under_one_limit() {
    let app = app();
    let (_, creator) = app.user(Role::Creator, "creator").await;
    let drop = app
        .sized_drop(
            &creator,
            &[("size-42", "EU 42", 2), ("size-43", "EU 43", 1)],
            Some(2),
        )
        .await;
    assert_eq!(drop["status"], "live");
    assert_eq!(drop["stock"], stock(3, 3, 0, 0), "the sum of the variants");
    assert_eq!(
        drop["variants"],
        json!([
            {"sku": "size-42", "label": "EU 42", "stock": stock(2, 2, 0, 0)},
            {"sku": "size-43", "label": "EU 43", "stock": stock(1, 1, 0, 0)},
        ])
    );
    assert_eq!(drop["per_user_limit"], 2);

    let (_, buyer) = app.user(Role::Customer, "buyer").await;
    for (i, (case, sku, status, code, field)) in [
        (
            "no sku on a drop of several variants",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            Some("sku"),
        ),
        (
            "an sku the drop does not sell",
            Some("size-99"),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "an sku with a space",
            Some("size 42"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            Some("sku"),
        ),
        (
            "an empty sku",
            Some(""),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            Some("sku"),
        ),
        (
            "an sku of 65 characters",
            Some(&*"x".repeat(65)),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            Some("sku"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let r = app
            .order_sku(&buyer, &drop, sku, 1, &format!("bad-{i}"))
            .await;
        assert_error_for(case, &r, status, code);
        if let Some(field) = field {
            assert_eq!(r.body["details"]["field"], field, "{case}: {}", r.body);
        }
    }
    let r = app
        .order_sku(&buyer, &drop, Some("size-99"), 1, "unknown-sku")
        .await;
    assert_eq!(r.body["details"]["resource"], "variant", "{}", r.body);

    let first = app
        .order_sku(&buyer, &drop, Some("size-43"), 1, "s-1")
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["sku"], "size-43");
    let replay = app
        .order_sku(&buyer, &drop, Some("size-43"), 1, "s-1")
        .await;
    assert_eq!(replay.body, first.body, "a retry replays the order");
    let other_size = app
        .order_sku(&buyer, &drop, Some("size-42"), 1, "s-1")
        .await;
    assert_error(
        &other_size,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let (_, second_buyer) = app.user(Role::Customer, "second").await;
    let sold_out = app
        .order_sku(&second_buyer, &drop, Some("size-43"), 1, "s-2")
        .await;
    assert_error(&sold_out, StatusCode::CONFLICT, "out_of_stock");

    // The limit counts every size: one more unit passes, a third is refused.
    let r = app
        .order_sku(&buyer, &drop, Some("size-42"), 1, "s-3")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["sku"], "size-42");
    let r = app
        .order_sku(&buyer, &drop, Some("size-42"), 1, "s-4")
        .await;
    assert_error(&r, StatusCode::CONFLICT, "per_user_limit_exceeded");
    assert_eq!(r.body["details"]["held"], 2, "{}", r.body);

    let now = app.drop_settled(&drop).await;
    assert_eq!(variant(&now, "size-42")["stock"], stock(2, 1, 1, 0));
    assert_eq!(variant(&now, "size-43")["stock"], stock(1, 0, 1, 0));
    assert_eq!(now["stock"], stock(3, 1, 2, 0));
    assert_eq!(now["status"], "live", "one size left keeps the drop live");
    let orders = app.as_user(Method::GET, "/orders", &buyer).await;
    let mut skus: Vec<_> = items(&orders.body)
        .iter()
        .map(|o| o["sku"].as_str().unwrap().to_owned())
        .collect();
    skus.sort();
    assert_eq!(skus, ["size-42", "size-43"]);
}

#[tokio::test]
async fn a_sized_drop_is_restocked_per_size_and_its_ledger_names_the_size() {
    const INTERNAL: &str = "variant-internal";
    let app = app_with(|o| o.internal_token = Some(INTERNAL.into()), |p| p);
    let (_, creator) = app.user(Role::Creator, "creator").await;
    let drop = app
        .sized_drop(&creator, &[("red", "Red", 2), ("blue", "Blue", 3)], None)
        .await;
    assert_eq!(drop["per_user_limit"], 5, "no limit: the whole stock");
    let id = drop["id"].as_str().unwrap();
    let adjust = format!("/internal/inventory/{id}/adjust");
    let r = app
        .call(
            Method::POST,
            &adjust,
            Some(INTERNAL),
            Some(json!({"delta": 2, "reason": "restock"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(r.body["details"]["field"], "sku");
    let r = app
        .call(
            Method::POST,
            &adjust,
            Some(INTERNAL),
            Some(json!({"delta": 2, "reason": "restock", "sku": "green"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app
        .call(
            Method::POST,
            &adjust,
            Some(INTERNAL),
            Some(json!({"delta": 2, "reason": "restock", "sku": "blue"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sku"], "blue");
    assert_eq!(r.body["stock_after"], stock(5, 5, 0, 0), "blue's own stock");
    let now = app.drop_settled(&drop).await;
    assert_eq!(variant(&now, "red")["stock"], stock(2, 2, 0, 0));
    assert_eq!(variant(&now, "blue")["stock"], stock(5, 5, 0, 0));
    assert_eq!(now["stock"], stock(7, 7, 0, 0));

    let r = app
        .call(
            Method::GET,
            &format!("/internal/inventory/{id}/ledger"),
            Some(INTERNAL),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut entries: Vec<(String, String)> = items(&r.body)
        .iter()
        .map(|e| {
            (
                e["sku"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("blue".to_owned(), "initial".to_owned()),
            ("blue".to_owned(), "restock".to_owned()),
            ("red".to_owned(), "initial".to_owned()),
        ]
    );
}

#[tokio::test]
async fn drop_creation_refuses_malformed_variants() {
    let app = app();
    let (_, creator) = app.user(Role::Creator, "creator").await;
    let product = app.product(&creator).await;
    let ends = app.clock_now() + chrono::Duration::hours(2);
    let one = |sku: &str| json!({"sku": sku, "label": "", "total_stock": 1});
    let many = |n: usize| -> Vec<Value> { (0..n).map(|i| one(&format!("v{i}"))).collect() };
    for (case, variants, extra) in [
        ("no variants", json!([]), json!({})),
        ("101 variants", json!(many(101)), json!({})),
        (
            "a repeated sku",
            json!([one("a"), one("b"), one("a")]),
            json!({}),
        ),
        ("an sku with a slash", json!([one("a/b")]), json!({})),
        ("an empty sku", json!([one("")]), json!({})),
        (
            "an sku of 65 characters",
            json!([one(&"s".repeat(65))]),
            json!({}),
        ),
        (
            "a variant of no stock",
            json!([{"sku": "a", "label": "", "total_stock": 0}]),
            json!({}),
        ),
        (
            "a variant without an sku",
            json!([{"label": "A", "total_stock": 1}]),
            json!({}),
        ),
        (
            "an unknown field in a variant",
            json!([{"sku": "a", "total_stock": 1, "colour": "red"}]),
            json!({}),
        ),
        (
            "both total_stock and variants",
            json!([one("a")]),
            json!({"total_stock": 5}),
        ),
        (
            "both, total_stock 0",
            json!([one("a")]),
            json!({"total_stock": 0}),
        ),
    ] {
        let mut body = json!({"product_id": product["id"], "ends_at": ends, "variants": variants});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app
            .call(Method::POST, "/drops", Some(&creator), Some(body))
            .await;
        assert_error_for(case, &r, StatusCode::BAD_REQUEST, "invalid_input");
    }
    let r = app
        .call(
            Method::POST,
            "/drops",
            Some(&creator),
            Some(json!({"product_id": product["id"], "ends_at": ends})),
        )
        .await;
    assert_error_for(
        "neither total_stock nor variants",
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    // 100 variants are fine; a label may be left out.
    let r = app
        .call(
            Method::POST,
            "/drops",
            Some(&creator),
            Some(json!({"product_id": product["id"], "ends_at": ends, "variants": many(100)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["variants"].as_array().unwrap().len(), 100);
    assert_eq!(r.body["stock"], stock(100, 100, 0, 0));
    let r = app
        .call(
            Method::POST,
            "/drops",
            Some(&creator),
            Some(json!({"product_id": product["id"], "ends_at": ends, "variants": [{"sku": "only", "total_stock": 2}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body["variants"],
        json!([{"sku": "only", "label": "", "stock": stock(2, 2, 0, 0)}])
    );
}

#[tokio::test]
async fn a_waitlist_place_is_joined_kept_read_and_left() {
    let app = app();
    let (_, creator) = app.user(Role::Creator, "creator").await;
    let drop = app
        .sized_drop(&creator, &[("s", "Small", 1), ("m", "Medium", 5)], None)
        .await;
    let (_, ada) = app.user(Role::Customer, "ada").await;
    let (_, bob) = app.user(Role::Customer, "bob").await;
    let (_, cy) = app.user(Role::Customer, "cy").await;

    let r = app
        .waitlist(
            Method::PUT,
            &drop,
            &ada,
            Some(json!({"sku": "s", "quantity": 1})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "variant_available");
    assert_eq!(r.body["details"]["sku"], "s", "{}", r.body);
    assert_eq!(r.body["details"]["available"], 1, "{}", r.body);

    let r = app.order_sku(&cy, &drop, Some("s"), 1, "buy-s").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    for (case, body, status, code) in [
        (
            "no sku on a drop of several variants",
            json!({"quantity": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "an unknown sku",
            json!({"sku": "xl", "quantity": 1}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "no units",
            json!({"sku": "s", "quantity": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "no quantity",
            json!({"sku": "s"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            "a size still available",
            json!({"sku": "m", "quantity": 1}),
            StatusCode::CONFLICT,
            "variant_available",
        ),
    ] {
        let r = app.waitlist(Method::PUT, &drop, &ada, Some(body)).await;
        assert_error_for(case, &r, status, code);
    }
    let uri = format!("/drops/{}/waitlist/me", drop["id"].as_str().unwrap());
    let r = app
        .call(
            Method::PUT,
            &uri,
            None,
            Some(json!({"sku": "s", "quantity": 1})),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    let r = app.waitlist(Method::GET, &drop, &ada, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let joined = app
        .waitlist(
            Method::PUT,
            &drop,
            &ada,
            Some(json!({"sku": "s", "quantity": 1})),
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    assert_eq!(
        sorted_keys(&joined.body),
        ["drop_id", "joined_at", "position", "quantity", "sku"]
    );
    assert_eq!(joined.body["drop_id"], drop["id"]);
    assert_eq!(joined.body["sku"], "s");
    assert_eq!(joined.body["position"], 1);
    let second = app
        .waitlist(
            Method::PUT,
            &drop,
            &bob,
            Some(json!({"sku": "s", "quantity": 1})),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["position"], 2);

    // Joining again changes the quantity and keeps the place.
    app.clock.advance(chrono::Duration::seconds(5));
    let again = app
        .waitlist(
            Method::PUT,
            &drop,
            &ada,
            Some(json!({"sku": "s", "quantity": 2})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["position"], 1);
    assert_eq!(again.body["quantity"], 2);
    assert_eq!(again.body["joined_at"], joined.body["joined_at"]);
    let read = app.waitlist(Method::GET, &drop, &ada, None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body, again.body);

    let left = app.waitlist(Method::DELETE, &drop, &ada, None).await;
    assert_eq!(left.status, StatusCode::NO_CONTENT, "{}", left.body);
    let r = app.waitlist(Method::GET, &drop, &ada, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app.waitlist(Method::DELETE, &drop, &ada, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app.waitlist(Method::GET, &drop, &bob, None).await;
    assert_eq!(r.body["position"], 1, "bob moves up: {}", r.body);

    let r = app
        .call(
            Method::PUT,
            &format!("/drops/{}/waitlist/me", uuid::Uuid::new_v4()),
            Some(&ada),
            Some(json!({"quantity": 1})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

/// Waits ≤ `limit` until `token`'s notifications hold one of `kind`; returns it.
async fn wait_for_notification(app: &App, token: &str, kind: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let r = app.as_user(Method::GET, "/notifications", token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        if let Some(n) = items(&r.body).iter().find(|n| n["kind"] == kind) {
            return n.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} notification within {limit:?}: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_cancelled_unit_goes_to_the_first_waiting_buyer_and_never_shows_available() {
    let app = app();
    let background = app.livedrop().spawn_background();
    let (_, creator) = app.user(Role::Creator, "creator").await;
    wait_for_live_feed(&app, &creator).await;
    let drop = app
        .sized_drop(&creator, &[("s", "Small", 1), ("m", "Medium", 3)], Some(3))
        .await;
    let id = drop["id"].as_str().unwrap();
    let (_, holder) = app.user(Role::Customer, "holder").await;
    let (waiter, waiter_token) = app.user(Role::Customer, "waiter").await;
    let (_, next) = app.user(Role::Customer, "next").await;
    let held = app.order_sku(&holder, &drop, Some("s"), 1, "hold-s").await;
    assert_eq!(held.status, StatusCode::CREATED, "{}", held.body);
    for (token, position) in [(&waiter_token, 1), (&next, 2)] {
        let r = app
            .waitlist(
                Method::PUT,
                &drop,
                token,
                Some(json!({"sku": "s", "quantity": 1})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["position"], position);
    }

    // Watch the drop's stream from before the cancel.
    let response = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/drops/{id}/events"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    let mut buffer = String::new();
    let (_, first) = next_matching(&mut stream, &mut buffer, |n, _| n == "stock").await;
    assert_eq!(
        first["variants"],
        json!([{"sku": "s", "stock": stock(1, 0, 1, 0)}, {"sku": "m", "stock": stock(3, 3, 0, 0)}]),
        "the stock event carries each variant: {first}"
    );
    assert_eq!(first["stock"], stock(4, 3, 1, 0));

    let cancelled = app
        .order_action(held.body["id"].as_str().unwrap(), "cancel", &holder)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    let started = tokio::time::Instant::now();

    // The unit went straight to the first waiting buyer: nobody else may buy it.
    let (_, late) = app.user(Role::Customer, "late").await;
    let r = app.order_sku(&late, &drop, Some("s"), 1, "late-s").await;
    assert_error(&r, StatusCode::CONFLICT, "out_of_stock");
    let offer = wait_for_notification(
        &app,
        &waiter_token,
        "waitlist_offer",
        Duration::from_secs(2),
    )
    .await;
    assert!(started.elapsed() <= Duration::from_secs(2));
    let now = app.drop_settled(&drop).await;
    assert_eq!(variant(&now, "s")["stock"], stock(1, 0, 1, 0), "{now}");
    let orders = app.as_user(Method::GET, "/orders", &waiter_token).await;
    let given = items(&orders.body);
    assert_eq!(given.len(), 1, "{}", orders.body);
    assert_eq!(given[0]["status"], "reserved");
    assert_eq!(given[0]["sku"], "s");
    assert_eq!(given[0]["quantity"], 1);
    assert_eq!(given[0]["user_id"], waiter.id.to_string());
    assert_eq!(offer["payload"]["order_id"], given[0]["id"], "{offer}");
    assert_eq!(offer["payload"]["sku"], "s");
    assert_eq!(offer["payload"]["drop_id"], drop["id"]);
    let r = app.waitlist(Method::GET, &drop, &waiter_token, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app.waitlist(Method::GET, &drop, &next, None).await;
    assert_eq!(r.body["position"], 1, "{}", r.body);

    // The waiter cancels in turn: the unit passes on to the next in line.
    let r = app
        .order_action(given[0]["id"].as_str().unwrap(), "cancel", &waiter_token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    wait_for_notification(&app, &next, "waitlist_offer", Duration::from_secs(2)).await;
    let r = app.waitlist(Method::GET, &drop, &next, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Nobody waits now: the next cancel makes the unit available.
    let next_orders = app.as_user(Method::GET, "/orders", &next).await;
    let next_order = items(&next_orders.body)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.order_action(&next_order, "cancel", &next).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Every stock event the stream sent before that showed size s with nothing
    // available, while someone waited.
    loop {
        let (name, event) = next_matching(&mut stream, &mut buffer, |_, _| true).await;
        if name != "stock" {
            continue;
        }
        let small = &event["variants"][0];
        assert_eq!(small["sku"], "s", "{event}");
        if small["stock"]["available"] == 1 {
            assert_eq!(small["stock"], stock(1, 1, 0, 0), "{event}");
            break;
        }
        assert_eq!(small["stock"]["available"], 0, "{event}");
    }
    let now = app.drop_settled(&drop).await;
    assert_eq!(variant(&now, "s")["stock"], stock(1, 1, 0, 0), "{now}");
    app.state.shutdown_token().cancel();
    background.shutdown().await;
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("drop_id".to_owned()),
                        Just("quantity".to_owned()),
                        Just("title".to_owned()),
                        Just("price_cents".to_owned()),
                        Just("ends_at".to_owned()),
                        Just("sku".to_owned()),
                        Just("variants".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_path() -> impl Strategy<Value = (Method, String)> {
        let method = prop_oneof![
            Just(Method::GET),
            Just(Method::POST),
            Just(Method::PUT),
            Just(Method::PATCH),
            Just(Method::DELETE),
        ];
        let segment = prop_oneof![
            Just("users".to_owned()),
            Just("drops".to_owned()),
            Just("orders".to_owned()),
            Just("products".to_owned()),
            Just("me".to_owned()),
            Just("followers".to_owned()),
            Just("internal".to_owned()),
            Just("cancel".to_owned()),
            Just(uuid::Uuid::nil().to_string()),
            "[a-zA-Z0-9%._~-]{1,10}",
        ];
        let id = prop_oneof![
            Just(uuid::Uuid::nil().to_string()),
            Just(uuid::Uuid::new_v4().to_string()),
            "[a-z0-9-]{0,12}",
        ];
        let known = (
            prop::sample::select(vec![
                "/users",
                "/sessions",
                "/users/me",
                "/users/{}",
                "/users/{}/followers/me",
                "/users/{}/followers",
                "/users/{}/following",
                "/products",
                "/products/{}",
                "/drops",
                "/drops/{}",
                "/drops/{}/cancel",
                "/drops/{}/waitlist/me",
                "/orders",
                "/orders/{}",
                "/orders/{}/confirm",
                "/orders/{}/cancel",
                "/orders/{}/extend",
                "/notifications",
                "/notifications/{}/read",
                "/notifications/read-all",
                "/internal/inventory/{}/adjust",
                "/internal/cache/invalidate",
            ]),
            id,
            prop::sample::select(vec![
                "",
                "?limit=0",
                "?limit=1000",
                "?limit=x",
                "?cursor=bad",
                "?status=bogus",
                "?status=live",
                "?unread=maybe",
                "?creator_id=nope",
                "?q=%ZZ",
                "?limit=-1",
            ]),
        )
            .prop_map(|(template, id, query)| format!("{}{query}", template.replace("{}", &id)));
        let random = (
            prop::collection::vec(segment, 1..5),
            "(\\?[a-z_]{1,8}=[a-zA-Z0-9%]{0,8})?",
        )
            .prop_map(|(segs, query)| format!("/{}{query}", segs.join("/")));
        (method, prop_oneof![3 => known, 1 => random])
    }

    /// Sends one arbitrary request to `app`: never a 5xx, and every failure in the
    /// error shape.
    async fn check(
        app: &App,
        method: Method,
        path: &str,
        body: Option<Value>,
        authenticated: bool,
    ) -> Result<(), TestCaseError> {
        let token = if authenticated {
            Some(app.user(Role::Creator, "p").await.1)
        } else {
            None
        };
        let r = app
            .call_with(
                method.clone(),
                path,
                token.as_deref(),
                body.clone(),
                &[("idempotency-key", "prop")],
            )
            .await;
        prop_assert!(
            !r.status.is_server_error(),
            "{method} {path} {body:?} -> {} {}",
            r.status,
            r.body
        );
        if r.status.is_client_error() {
            prop_assert!(r.body["code"].is_string(), "{method} {path} -> {}", r.body);
            prop_assert!(r.body["message"].is_string());
            prop_assert!(r.body["details"].is_object());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Whatever arrives, the answer is never a 5xx, and every failure is in the
        /// error shape.
        #[test]
        fn every_failure_is_a_shaped_4xx(
            (method, path) in any_path(),
            body in proptest::option::of(any_json()),
            authenticated in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(check(&app(), method, &path, body, authenticated))?;
        }
    }

    /// The same on a PostgreSQL store (one fresh schema for the run, a fresh app
    /// with its own cache and clock per case), which refuses text and times the
    /// in-memory store would keep: those too must be 4xx, never a 500.
    #[cfg(feature = "postgres")]
    #[test]
    fn every_failure_on_postgres_is_a_shaped_4xx() {
        use livedrop_adapters::memory::{MemoryBus, MemoryCache};
        use livedrop_adapters::postgres::testing::TestSchema;
        use proptest::test_runner::{Config as RunnerConfig, TestRunner};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let Some(schema) = rt.block_on(TestSchema::new("the router property test on PostgreSQL"))
        else {
            return;
        };
        let store = Arc::new(rt.block_on(schema.store()));
        let mut runner = TestRunner::new(RunnerConfig {
            cases: 96,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        let ran = std::cell::Cell::new(0u32);
        let result = runner.run(
            &(any_path(), proptest::option::of(any_json()), any::<bool>()),
            |((method, path), body, authenticated)| {
                let app = app_with(
                    |_| {},
                    |p| {
                        Ports::from_store(
                            store.clone(),
                            Arc::new(MemoryCache::new()),
                            Arc::new(MemoryBus::new()),
                            p.clock,
                        )
                    },
                );
                rt.block_on(check(&app, method, &path, body, authenticated))?;
                ran.set(ran.get() + 1);
                Ok(())
            },
        );
        if let Err(e) = result {
            panic!("{e}");
        }
        assert!(ran.get() >= 96, "only {} cases ran", ran.get());
        drop(store);
        drop(schema);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_build_bootstraps_the_admin_seeds_the_demo_and_shuts_down() {
    use livedrop_http::server::{build, Settings};
    let settings = Settings {
        addr: "127.0.0.1:0".into(),
        admin_email: Some("root@example.com".into()),
        admin_password: Some("operator-password".into()),
        demo: true,
        in_memory: true,
        ..Settings::default()
    };
    let server = build(&settings).await.unwrap();
    let demo = server.demo().cloned().unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let json_of = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().json::<Value>().await.unwrap()
    };

    let drop = json_of(client.get(format!("{base}/drops/{}", demo.drop_id))).await;
    assert_eq!(drop["status"], "live");
    let me = json_of(
        client
            .get(format!("{base}/users/me"))
            .bearer_auth(&demo.buyer_token),
    )
    .await;
    assert_eq!(me["id"], demo.buyer.id.to_string());

    let login = json!({"email": "root@example.com", "password": "operator-password"});
    let session = json_of(client.post(format!("{base}/sessions")).json(&login)).await;
    assert_eq!(session["user"]["role"], "admin");
    let admin = session["token"].as_str().unwrap();
    // An admin may cancel anyone's drop.
    let cancelled = client
        .post(format!("{base}/drops/{}/cancel", demo.drop_id))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), reqwest::StatusCode::OK);
    let body: Value = cancelled.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    // Internal API is off without a token.
    let r = client
        .get(format!("{base}/internal/inventory/{}/ledger", demo.drop_id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "stopped listening"
    );
}

// ---- fair allocation: draws and waiting rooms ----

/// Lower-case hex SHA-256 of `text`, computed here independently of the core.
fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl App {
    /// A draw drop live now with `stock` units whose entries close in 10 minutes.
    async fn draw_drop(&self, token: &str, stock: u32, limit: u32) -> Value {
        let product = self.product(token).await;
        let now = self.clock_now();
        let body = json!({
            "product_id": product["id"],
            "ends_at": now + chrono::Duration::hours(2),
            "total_stock": stock,
            "per_user_limit": limit,
            "allocation": "draw",
            "entries_close_at": now + chrono::Duration::minutes(10),
        });
        let r = self
            .call(Method::POST, "/drops", Some(token), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body
    }

    async fn enter(&self, token: &str, drop: &Value, body: Value) -> Reply {
        let uri = format!("/drops/{}/entries/me", drop["id"].as_str().unwrap());
        self.call(Method::PUT, &uri, Some(token), Some(body)).await
    }

    async fn notification_kinds(&self, token: &str) -> Vec<String> {
        let r = self.as_user(Method::GET, "/notifications", token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["kind"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn a_draw_takes_entries_draws_once_at_close_and_publishes_a_checkable_ranking() {
    let app = app();
    let (_, creator) = app.user(Role::Creator, "creator").await;
    let drop = app.draw_drop(&creator, 2, 2).await;
    let id = drop["id"].as_str().unwrap().to_owned();
    assert_eq!(drop["allocation"], "draw");
    let commitment = drop["draw"]["commitment"].as_str().unwrap().to_owned();
    assert_eq!(commitment.len(), 64);
    assert!(drop["draw"]["seed"].is_null(), "{drop}");
    assert!(drop["draw"]["drawn_at"].is_null());
    assert_eq!(drop["draw"]["entries"], 0);
    assert_eq!(drop["draw"]["winners"], 0);
    assert!(drop.get("waiting_room").is_none());

    // Five buyers enter; one replaces, one withdraws.
    let mut buyers = Vec::new();
    for i in 0..5 {
        let (_, token) = app.user(Role::Customer, &format!("buyer{i}")).await;
        let r = app.enter(&token, &drop, json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["result"], "pending");
        assert_eq!(r.body["quantity"], 1);
        assert_eq!(r.body["sku"], "default");
        assert_eq!(r.body["drop_id"], id.as_str());
        let entry_token = r.body["token"].as_str().unwrap().to_owned();
        assert_eq!(entry_token.len(), 32);
        assert!(entry_token
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        buyers.push((token, entry_token));
    }
    let replaced = app.enter(&buyers[0].0, &drop, json!({"quantity": 2})).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["quantity"], 2);
    assert_eq!(
        replaced.body["token"],
        buyers[0].1.as_str(),
        "a replacement keeps its token"
    );
    let over = app.enter(&buyers[1].0, &drop, json!({"quantity": 3})).await;
    assert_error(&over, StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(over.body["details"]["field"], "quantity");
    let me = format!("/drops/{id}/entries/me");
    let (withdrawn_token, _) = buyers.pop().unwrap();
    let r = app.as_user(Method::DELETE, &me, &withdrawn_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = app.as_user(Method::GET, &me, &withdrawn_token).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app.as_user(Method::GET, &me, &buyers[2].0).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["result"], "pending");

    // Orders come only from the draw; results are empty before it.
    let order = app.order(&buyers[1].0, &drop, 1, "draw-order").await;
    assert_error(&order, StatusCode::CONFLICT, "drop_is_draw");
    let early = app.get(&format!("/drops/{id}/draw/entries")).await;
    assert_eq!(early.status, StatusCode::OK, "{}", early.body);
    assert_eq!(early.body["items"], json!([]));
    let counted = app.get(&format!("/drops/{id}")).await;
    assert_eq!(counted.body["draw"]["entries"], 4);

    // At the close, entries are refused and the draw runs exactly once.
    app.clock.advance(chrono::Duration::minutes(10));
    let late = app.enter(&withdrawn_token, &drop, json!({})).await;
    assert_error(&late, StatusCode::CONFLICT, "entries_closed");
    let r = app.as_user(Method::DELETE, &me, &buyers[1].0).await;
    assert_error(&r, StatusCode::CONFLICT, "entries_closed");
    assert_eq!(app.livedrop().run_due_draws().await.unwrap(), 1);
    assert_eq!(app.livedrop().run_due_draws().await.unwrap(), 0, "once");

    let drawn = app.get(&format!("/drops/{id}")).await.body;
    let seed = drawn["draw"]["seed"].as_str().unwrap().to_owned();
    assert_eq!(seed.len(), 64);
    assert_eq!(
        sha256_hex(&seed),
        commitment,
        "the seed is the one committed to"
    );
    assert!(drawn["draw"]["drawn_at"].is_string());
    assert_eq!(drawn["draw"]["entries"], 4);

    // The ranking, recomputed here from the seed and the entry tokens.
    let mut expected: Vec<(String, String)> = buyers
        .iter()
        .map(|(_, t)| (sha256_hex(&format!("{seed}:{t}")), t.clone()))
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, t)| t).collect();
    let first = app
        .get(&format!("/drops/{id}/draw/entries?limit=3"))
        .await
        .body;
    assert_eq!(first["next_cursor"], "3");
    let rest = app
        .get(&format!("/drops/{id}/draw/entries?limit=3&cursor=3"))
        .await
        .body;
    assert!(rest["next_cursor"].is_null());
    let published: Vec<Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .cloned()
        .collect();
    assert_eq!(
        published
            .iter()
            .map(|e| e["rank"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        published
            .iter()
            .map(|e| e["token"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        expected
    );
    // Winners in rank order while units last: 2 units, quantities from the entries.
    let mut free = 2u32;
    for entry in &published {
        let quantity = entry["quantity"].as_u64().unwrap() as u32;
        let won = quantity <= free;
        if won {
            free -= quantity;
        }
        assert_eq!(entry["result"], if won { "won" } else { "lost" }, "{entry}");
        assert_eq!(entry.as_object().unwrap().len(), 5, "{entry}");
    }
    let winners = published.iter().filter(|e| e["result"] == "won").count();
    assert_eq!(drawn["draw"]["winners"], winners as u64);

    // Each buyer reads the result, rank and order; winners hold reserved orders.
    app.deliver_events().await;
    for (token, entry_token) in &buyers {
        let mine = app.as_user(Method::GET, &me, token).await.body;
        let rank = expected.iter().position(|t| t == entry_token).unwrap() as u64 + 1;
        assert_eq!(mine["rank"], rank, "{mine}");
        let published_entry = &published[rank as usize - 1];
        assert_eq!(mine["result"], published_entry["result"]);
        let kinds = app.notification_kinds(token).await;
        if mine["result"] == "won" {
            let order_id = mine["order_id"].as_str().unwrap();
            let order = app
                .as_user(Method::GET, &format!("/orders/{order_id}"), token)
                .await;
            assert_eq!(order.status, StatusCode::OK, "{}", order.body);
            assert_eq!(order.body["status"], "reserved");
            assert_eq!(order.body["quantity"], mine["quantity"]);
            assert!(kinds.contains(&"draw_won".to_owned()), "{kinds:?}");
        } else {
            assert!(mine.get("order_id").is_none(), "{mine}");
            assert!(kinds.contains(&"draw_lost".to_owned()), "{kinds:?}");
        }
    }
    let stock = &drawn["stock"];
    assert_eq!(
        stock["reserved"].as_u64().unwrap() + stock["available"].as_u64().unwrap(),
        2
    );
}

#[tokio::test]
async fn draw_entries_open_at_the_start_and_draw_fields_are_checked() {
    let app = app();
    let (_, creator) = app.user(Role::Creator, "creator").await;
    let product = app.product(&creator).await;
    let now = app.clock_now();
    let body = json!({
        "product_id": product["id"],
        "starts_at": now + chrono::Duration::minutes(5),
        "ends_at": now + chrono::Duration::hours(2),
        "total_stock": 3,
        "allocation": "draw",
        "entries_close_at": now + chrono::Duration::minutes(30),
    });
    let drop = app
        .call(Method::POST, "/drops", Some(&creator), Some(body))
        .await;
    assert_eq!(drop.status, StatusCode::CREATED, "{}", drop.body);
    let (_, buyer) = app.user(Role::Customer, "buyer").await;
    let r = app.enter(&buyer, &drop.body, json!({})).await;
    assert_error(&r, StatusCode::CONFLICT, "entries_closed");
    app.clock.advance(chrono::Duration::minutes(5));
    let r = app.enter(&buyer, &drop.body, json!({"quantity": 1})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let ends = now + chrono::Duration::hours(2);
    for (case, extra) in [
        (
            "a draw without entries_close_at",
            json!({"allocation": "draw"}),
        ),
        (
            "entries_close_at after the end",
            json!({"allocation": "draw", "entries_close_at": ends + chrono::Duration::minutes(1)}),
        ),
        (
            "entries_close_at on a first-come drop",
            json!({"entries_close_at": now + chrono::Duration::minutes(1)}),
        ),
        (
            "a waiting room on a draw",
            json!({"allocation": "draw", "entries_close_at": now + chrono::Duration::minutes(20),
                   "waiting_room": {"admit_per_minute": 10, "token_seconds": 60, "opens_minutes_before": 5}}),
        ),
        (
            "a waiting room admitting nobody",
            json!({"waiting_room": {"admit_per_minute": 0, "token_seconds": 60, "opens_minutes_before": 5}}),
        ),
    ] {
        let mut body = json!({"product_id": product["id"], "ends_at": ends, "total_stock": 1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app
            .call(Method::POST, "/drops", Some(&creator), Some(body))
            .await;
        assert_error_for(case, &r, StatusCode::BAD_REQUEST, "invalid_input");
    }
    let r = app
        .call(
            Method::POST,
            "/drops",
            Some(&creator),
            Some(json!({"product_id": product["id"], "ends_at": ends, "total_stock": 1, "allocation": "lottery"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn a_waiting_room_shuffles_its_pre_queue_admits_at_its_rate_and_gates_orders() {
    let app = app();
    let (_, creator) = app.user(Role::Creator, "creator").await;
    let product = app.product(&creator).await;
    let now = app.clock_now();
    let starts = now + chrono::Duration::minutes(10);
    let body = json!({
        "product_id": product["id"],
        "starts_at": starts,
        "ends_at": starts + chrono::Duration::hours(1),
        "total_stock": 10,
        "waiting_room": {"admit_per_minute": 60, "token_seconds": 30, "opens_minutes_before": 5},
    });
    let drop = app
        .call(Method::POST, "/drops", Some(&creator), Some(body))
        .await;
    assert_eq!(drop.status, StatusCode::CREATED, "{}", drop.body);
    let drop = drop.body;
    let id = drop["id"].as_str().unwrap().to_owned();
    assert_eq!(drop["allocation"], "first_come");
    assert_eq!(
        drop["waiting_room"],
        json!({"admit_per_minute": 60, "token_seconds": 30, "opens_minutes_before": 5})
    );
    let queue = format!("/drops/{id}/queue");
    let queue_me = format!("/drops/{id}/queue/me");

    let (_, early) = app.user(Role::Customer, "early").await;
    let r = app.as_user(Method::POST, &queue, &early).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    assert!(
        r.body["message"].as_str().unwrap().contains("opens"),
        "{}",
        r.body
    );
    let r = app.as_user(Method::GET, &queue_me, &early).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Six buyers join before the start, in order; positions are shuffled.
    app.clock.advance(chrono::Duration::minutes(6));
    let mut buyers = Vec::new();
    for i in 0..6 {
        let (user, token) = app.user(Role::Customer, &format!("b{i}")).await;
        let r = app.as_user(Method::POST, &queue, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["status"], "waiting");
        assert!(r.body["admission_token"].is_null());
        assert!(r.body["estimated_wait_seconds"].as_u64().unwrap() > 0);
        let again = app.as_user(Method::POST, &queue, &token).await;
        assert_eq!(
            again.status,
            StatusCode::OK,
            "joining twice keeps the place"
        );
        buyers.push((user, token));
    }
    // Not live yet, no admission: orders are refused.
    app.clock.set(starts);
    let mut positions = Vec::new();
    for (_, token) in &buyers {
        let r = app.as_user(Method::GET, &queue_me, token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        positions.push(r.body["position"].as_u64().unwrap());
    }
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 3, 4, 5, 6], "{positions:?}");
    let by_position = |p: u64| &buyers[positions.iter().position(|&x| x == p).unwrap()];

    // At the start, position 1 is admitted; one more each second.
    let (first_user, first) = by_position(1);
    let status = app.as_user(Method::GET, &queue_me, first).await.body;
    assert_eq!(status["status"], "admitted", "{status}");
    let admission = status["admission_token"].as_str().unwrap().to_owned();
    let second = &by_position(2).1;
    let waiting = app.as_user(Method::GET, &queue_me, second).await.body;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert_eq!(waiting["estimated_wait_seconds"], 1);
    assert_eq!(
        app.livedrop()
            .admitted_through(livedrop_core::DropId(uuid::Uuid::parse_str(&id).unwrap()))
            .await
            .unwrap(),
        1
    );

    // Orders need this buyer's admission.
    let no_token = app.order(first, &drop, 1, "room-1").await;
    assert_error(&no_token, StatusCode::FORBIDDEN, "admission_required");
    let bad = app
        .order_admitted(first, &drop, 1, "room-2", "v1.99999999999.00")
        .await;
    assert_error(&bad, StatusCode::FORBIDDEN, "admission_required");
    let stolen = app
        .order_admitted(second, &drop, 1, "room-3", &admission)
        .await;
    assert_error(&stolen, StatusCode::FORBIDDEN, "admission_required");
    let placed = app
        .order_admitted(first, &drop, 1, "room-4", &admission)
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    assert_eq!(placed.body["user_id"], first_user.id.0.to_string());

    // The rate: one more per second; a late arrival queues behind the pre-queue.
    app.clock.advance(chrono::Duration::seconds(1));
    let now_admitted = app.as_user(Method::GET, &queue_me, second).await.body;
    assert_eq!(now_admitted["status"], "admitted", "{now_admitted}");
    let third = app
        .as_user(Method::GET, &queue_me, &by_position(3).1)
        .await
        .body;
    assert_eq!(third["status"], "waiting", "{third}");
    let (_, late) = app.user(Role::Customer, "late").await;
    let r = app.as_user(Method::POST, &queue, &late).await.body;
    assert_eq!(r["position"], 7, "{r}");
    assert_eq!(r["status"], "waiting");
    app.clock.advance(chrono::Duration::seconds(5));
    let r = app.as_user(Method::GET, &queue_me, &late).await.body;
    assert_eq!(r["status"], "admitted", "{r}");

    // The SSE stream tells waiting pages how far admissions went.
    let response = app
        .router
        .clone()
        .oneshot(request(
            Method::GET,
            &format!("/drops/{id}/events"),
            None,
            None,
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    let mut buffer = String::new();
    let (_, queued) = next_matching(&mut stream, &mut buffer, |n, _| n == "queue").await;
    assert_eq!(queued["admitted_through"], 7, "{queued}");
    assert_eq!(queued["drop_id"], id.as_str());

    // A token runs out after token_seconds.
    app.clock.advance(chrono::Duration::seconds(60));
    let expired = app
        .order_admitted(first, &drop, 1, "room-5", &admission)
        .await;
    assert_error(&expired, StatusCode::FORBIDDEN, "admission_required");
}
