//! Malformed input never breaks the server: generated bodies (random bytes, random
//! JSON, wrong types, huge numbers, nested junk), headers (bad `Authorization`,
//! `Idempotency-Key`, content types), query strings and paths are thrown at the
//! router over in-memory state, and again over a SQLite store and (when
//! `LIVEDROP_TEST_DATABASE_URL` is set) a PostgreSQL store in a fresh schema. Never a
//! 5xx; every 4xx is the error shape with a snake_case `code`, a `message` and an
//! object `details`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request};
use axum::Router;
use livedrop_adapters::memory::memory_ports;
use livedrop_core::model::{Role, User};
use livedrop_core::service::{Livedrop, NewDrop, NewProduct};
use livedrop_core::{Clock, Config, ManualClock, Ports, UserId};
use livedrop_http::auth::TokenKeys;
use livedrop_http::{router, AppState, HttpOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use tower::ServiceExt;

const INTERNAL_TOKEN: &str = "bad-input-internal-token";

/// The router plus a few real ids and tokens, so generated requests reach handlers
/// and not only the extractors.
struct Fixture {
    router: Router,
    customer_token: String,
    creator_token: String,
    /// Existing ids: the creator, the customer, the product, the drop.
    ids: Vec<String>,
}

async fn user(state: &AppState, clock: &ManualClock, role: Role, name: &str) -> (User, String) {
    let user = User {
        id: UserId::new(),
        email: format!("{name}@example.com"),
        display_name: name.to_owned(),
        role,
        password_hash: "not-a-hash".into(),
        created_at: clock.now(),
    };
    state
        .livedrop()
        .ports()
        .users
        .insert_user(&user)
        .await
        .unwrap();
    let (token, _) = state.tokens().issue(&user.actor()).unwrap();
    (user, token)
}

/// The fixture on in-memory adapters.
async fn memory_fixture() -> Fixture {
    let clock = Arc::new(ManualClock::fixed());
    let (ports, _store, _bus) = memory_ports(clock.clone());
    fixture(ports, clock).await
}

/// The fixture on a SQLite store in a temporary file (in-memory cache and bus).
#[cfg(feature = "sqlite")]
async fn sqlite_fixture() -> Fixture {
    use livedrop_adapters::memory::{MemoryBus, MemoryCache};
    use livedrop_adapters::sqlite::{SqliteOptions, SqliteStore};
    let clock = Arc::new(ManualClock::fixed());
    let store = SqliteStore::temporary(SqliteOptions::default())
        .await
        .unwrap();
    let ports = Ports::from_store(
        Arc::new(store),
        Arc::new(MemoryCache::new()),
        Arc::new(MemoryBus::new()),
        clock.clone(),
    );
    fixture(ports, clock).await
}

/// The fixture on a PostgreSQL store in the fresh schema `schema` (in-memory cache
/// and bus).
#[cfg(feature = "postgres")]
async fn postgres_fixture(schema: &livedrop_adapters::postgres::testing::TestSchema) -> Fixture {
    use livedrop_adapters::memory::{MemoryBus, MemoryCache};
    let clock = Arc::new(ManualClock::fixed());
    let ports = Ports::from_store(
        Arc::new(schema.store().await),
        Arc::new(MemoryCache::new()),
        Arc::new(MemoryBus::new()),
        clock.clone(),
    );
    fixture(ports, clock).await
}

async fn fixture(ports: Ports, clock: Arc<ManualClock>) -> Fixture {
    let livedrop = Livedrop::new(ports, Config::default());
    let mut options = HttpOptions::new(TokenKeys::new(
        b"bad-input-test-secret-0123456789",
        Duration::from_secs(3600),
    ));
    options.internal_token = Some(INTERNAL_TOKEN.into());
    options.body_limit = 16 * 1024;
    let state = AppState::new(livedrop, options);
    let (creator, creator_token) = user(&state, &clock, Role::Creator, "creator").await;
    let (customer, customer_token) = user(&state, &clock, Role::Customer, "customer").await;
    let livedrop = state.livedrop();
    let product = livedrop
        .create_product(
            &creator.actor(),
            NewProduct {
                title: "Hoodie".into(),
                description: "Heavy cotton".into(),
                price_cents: 4900,
                currency: "EUR".into(),
                image_url: None,
            },
        )
        .await
        .unwrap();
    let drop = livedrop
        .schedule_drop(
            &creator.actor(),
            NewDrop {
                product_id: product.id,
                starts_at: None,
                ends_at: clock.now() + chrono::Duration::hours(2),
                total_stock: 50,
                per_user_limit: Some(3),
            },
        )
        .await
        .unwrap();
    Fixture {
        router: router(state.clone()),
        customer_token,
        creator_token,
        ids: vec![
            creator.id.0.to_string(),
            customer.id.0.to_string(),
            product.id.0.to_string(),
            drop.drop.id.0.to_string(),
        ],
    }
}

/// Routes of the contract; `{}` is where a path parameter goes.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/users"),
    ("POST", "/sessions"),
    ("GET", "/users/me"),
    ("GET", "/users/{}"),
    ("PUT", "/users/{}/followers/me"),
    ("DELETE", "/users/{}/followers/me"),
    ("GET", "/users/{}/followers"),
    ("GET", "/users/{}/following"),
    ("POST", "/products"),
    ("GET", "/products"),
    ("GET", "/products/{}"),
    ("PATCH", "/products/{}"),
    ("POST", "/drops"),
    ("GET", "/drops"),
    ("GET", "/drops/{}"),
    ("POST", "/drops/{}/cancel"),
    ("GET", "/drops/{}/events"),
    ("POST", "/orders"),
    ("GET", "/orders"),
    ("GET", "/orders/{}"),
    ("POST", "/orders/{}/confirm"),
    ("POST", "/orders/{}/cancel"),
    ("POST", "/orders/{}/extend"),
    ("GET", "/notifications"),
    ("POST", "/notifications/read-all"),
    ("POST", "/notifications/{}/read"),
    ("POST", "/internal/inventory/{}/adjust"),
    ("GET", "/internal/inventory/{}/ledger"),
    ("POST", "/internal/cache/invalidate"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Field names the bodies of the contract use, so shaped junk hits real fields.
const FIELDS: &[&str] = &[
    "email",
    "password",
    "display_name",
    "role",
    "title",
    "description",
    "price_cents",
    "currency",
    "image_url",
    "expected_version",
    "product_id",
    "starts_at",
    "ends_at",
    "total_stock",
    "per_user_limit",
    "drop_id",
    "quantity",
    "delta",
    "reason",
    "keys",
    "prefixes",
];

/// Percent-encodes everything outside the unreserved set, so any bytes make a URI.
fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path parameter: an existing id, a random or nil UUID, or junk.
#[derive(Debug, Clone)]
enum Segment {
    Existing(usize),
    RandomUuid(u128),
    Nil,
    Fixed(&'static str),
    Junk(Vec<u8>),
}

fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        3 => (0usize..4).prop_map(Segment::Existing),
        2 => any::<u128>().prop_map(Segment::RandomUuid),
        1 => Just(Segment::Nil),
        2 => prop::sample::select(vec![
            "not-a-uuid", "123", "-1", "00000000-0000-0000-0000-00000000000g",
            "00000000000000000000000000000000", "%7B00000000-0000-0000-0000-000000000000%7D",
            "..", ".", "me", "%00", "%FF%FE", "%F0%9F%92%A5", "a%2Fb", "99999999999999999999999",
        ]).prop_map(Segment::Fixed),
        2 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Segment::Junk),
    ]
}

/// Where the request goes.
#[derive(Debug, Clone)]
enum Target {
    /// A route of the contract with its parameter filled; `true` keeps its method.
    Route(usize, Segment, bool, usize),
    /// Random segments.
    Random(Vec<Segment>, usize),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        8 => (0..ROUTES.len(), segment(), prop::bool::weighted(0.85), 0..METHODS.len())
            .prop_map(|(r, s, keep, m)| Target::Route(r, s, keep, m)),
        1 => (prop::collection::vec(segment(), 0..6), 0..METHODS.len())
            .prop_map(|(s, m)| Target::Random(s, m)),
    ]
}

/// A query string: known and unknown keys with junk values.
fn query() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let key = prop::sample::select(vec![
        "limit",
        "cursor",
        "status",
        "creator_id",
        "q",
        "unread",
        "junk",
        "",
        "limit[]",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "0",
            "-1",
            "101",
            "100",
            "1",
            "99999999999999999999",
            "1e3",
            "NaN",
            "true",
            "live",
            "LIVE",
            "sold_out",
            "bogus",
            "",
            "00000000-0000-0000-0000-000000000000",
            "not-a-cursor",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec((key, value), 0..4)
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    Customer,
    Creator,
    Internal,
    Raw(Vec<u8>),
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        2 => Just(Auth::None),
        3 => Just(Auth::Customer),
        2 => Just(Auth::Creator),
        1 => Just(Auth::Internal),
        2 => prop_oneof![
            prop::sample::select(vec![
                "Bearer", "Bearer ", "Bearer junk", "bearer a.b.c", "Basic dXNlcjpwYXNz",
                "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "Token abc", "Bearer \u{7f}",
            ]).prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..64),
        ].prop_map(Auth::Raw),
    ]
}

fn bytes_header() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        2 => Just(None),
        2 => "[a-zA-Z0-9-]{1,40}".prop_map(|s| Some(s.into_bytes())),
        1 => Just(Some(Vec::new())),
        1 => Just(Some(vec![b'k'; 300])),
        1 => Just(Some(b"has space".to_vec())),
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
    ]
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        4 => Just(Some(b"application/json".to_vec())),
        1 => Just(None),
        1 => prop::sample::select(vec![
            "text/plain", "application/json; charset=utf-8", "application/xml",
            "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
            "application/jsonx", "application/merge-patch+json", "*/*", "",
        ]).prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => prop::collection::vec(any::<u8>(), 0..32).prop_map(Some),
    ]
}

/// Any JSON value, nested a few levels, with extreme numbers and odd strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(u32::MAX),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e308),
            json!(-1e308),
            json!(4.5),
            json!(""),
            json!("0"),
            json!("00000000-0000-0000-0000-000000000000"),
            json!("2024-13-45T25:61:61Z"),
            json!("9999-12-31T23:59:59Z"),
            json!("a@b"),
            json!("customer"),
            json!("admin"),
            json!("EUR"),
            json!("javascript:alert(1)"),
        ]),
        ".{0,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: raw bytes, any JSON, an object with the contract's field names and junk
/// values, deep nesting, a huge number literal, or an oversized body.
fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let shaped =
        prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), json_value(), 0..7)
            .prop_map(|m| {
                let object: serde_json::Map<String, Value> =
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                serde_json::to_vec(&Value::Object(object)).unwrap()
            });
    prop_oneof![
        1 => Just(None),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Some),
        3 => json_value().prop_map(|v| Some(serde_json::to_vec(&v).unwrap())),
        4 => shaped.prop_map(Some),
        1 => (1usize..400).prop_map(|depth| Some(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes())),
        1 => (1usize..400).prop_map(|depth| Some("{\"a\":".repeat(depth).into_bytes())),
        1 => prop::sample::select(vec![
            r#"{"quantity": 1e400, "drop_id": "00000000-0000-0000-0000-000000000000"}"#,
            r#"{"quantity": 123456789012345678901234567890}"#,
            r#"{"price_cents": -9223372036854775809, "title": "x", "currency": "EUR"}"#,
            r#"{"total_stock": 4294967296}"#,
            r#"{"delta": 9223372036854775807, "reason": "x"}"#,
            r#"{"delta": -9223372036854775808, "reason": "x"}"#,
            "\u{feff}{}",
            "{\"a\":\"\\ud800\"}",
            "null",
            "",
        ]).prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => (17_000usize..40_000).prop_map(|n| Some(vec![b' '; n])),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    target: Target,
    query: Vec<(&'static str, Vec<u8>)>,
    auth: Auth,
    idempotency_key: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        target(),
        query(),
        auth(),
        bytes_header(),
        content_type(),
        body(),
    )
        .prop_map(
            |(target, query, auth, idempotency_key, content_type, body)| Case {
                target,
                query,
                auth,
                idempotency_key,
                content_type,
                body,
            },
        )
}

impl Fixture {
    fn segment(&self, s: &Segment) -> String {
        match s {
            Segment::Existing(i) => self.ids[*i].clone(),
            Segment::RandomUuid(n) => uuid::Uuid::from_u128(*n).to_string(),
            Segment::Nil => uuid::Uuid::nil().to_string(),
            Segment::Fixed(s) => (*s).to_owned(),
            Segment::Junk(bytes) => encode(bytes),
        }
    }

    fn request(&self, case: &Case) -> Request<Body> {
        let (method, mut uri) = match &case.target {
            Target::Route(r, s, keep, m) => {
                let (method, template) = ROUTES[*r];
                let method = if *keep { method } else { METHODS[*m] };
                (method, template.replace("{}", &self.segment(s)))
            }
            Target::Random(segments, m) => {
                let path: Vec<String> = segments.iter().map(|s| self.segment(s)).collect();
                (METHODS[*m], format!("/{}", path.join("/")))
            }
        };
        if !case.query.is_empty() {
            let pairs: Vec<String> = case
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k.as_bytes()), encode(v)))
                .collect();
            uri.push('?');
            uri.push_str(&pairs.join("&"));
        }
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(&uri)
            .body(Body::from(case.body.clone().unwrap_or_default()))
            .unwrap_or_else(|e| panic!("{uri:?} is not a URI: {e}"));
        let headers = request.headers_mut();
        let auth = match &case.auth {
            Auth::None => None,
            Auth::Customer => Some(format!("Bearer {}", self.customer_token).into_bytes()),
            Auth::Creator => Some(format!("Bearer {}", self.creator_token).into_bytes()),
            Auth::Internal => {
                headers.insert("x-internal-token", HeaderValue::from_static(INTERNAL_TOKEN));
                None
            }
            Auth::Raw(bytes) => Some(bytes.clone()),
        };
        // Bytes a header cannot carry (control characters) are dropped: the client
        // library would refuse to send them anyway.
        let mut set = |name: header::HeaderName, value: &Option<Vec<u8>>| {
            if let Some(v) = value {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    headers.insert(name, v);
                }
            }
        };
        set(header::AUTHORIZATION, &auth);
        set(
            header::HeaderName::from_static("idempotency-key"),
            &case.idempotency_key,
        );
        if case.body.is_some() {
            set(header::CONTENT_TYPE, &case.content_type);
        }
        request
    }
}

fn snake_case(code: &str) -> bool {
    let mut chars = code.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !code.ends_with('_')
        && !code.contains("__")
}

/// Checks one case; `Ok(true)` when it was answered with a 4xx.
async fn check(fixture: &Fixture, case: &Case) -> Result<bool, TestCaseError> {
    let request = fixture.request(case);
    let described = format!("{} {}", request.method(), request.uri());
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        fixture.router.clone().oneshot(request),
    )
    .await
    .map_err(|_| TestCaseError::fail(format!("{described}: no answer within 10 s")))?
    .unwrap();
    let status = response.status();
    prop_assert!(!status.is_server_error(), "{described} answered {status}");
    if !status.is_client_error() {
        // Successes are other tests' business (and a stream never ends).
        return Ok(false);
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = tokio::time::timeout(
        Duration::from_secs(10),
        axum::body::to_bytes(response.into_body(), 1024 * 1024),
    )
    .await
    .map_err(|_| TestCaseError::fail(format!("{described}: error body never ended")))?
    .unwrap();
    prop_assert!(
        content_type.starts_with("application/json"),
        "{described} answered {status} with content type {content_type:?}"
    );
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        TestCaseError::fail(format!(
            "{described} answered {status} with a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    let code = body["code"].as_str().unwrap_or_default();
    prop_assert!(
        snake_case(code),
        "{described} answered {status}, code not snake_case: {body}"
    );
    prop_assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{described} answered {status} without a message: {body}"
    );
    prop_assert!(
        body["details"].is_object(),
        "{described} answered {status} without object details: {body}"
    );
    Ok(true)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn malformed_requests_get_a_4xx_in_the_error_shape_never_a_5xx() {
    throw_malformed_requests(&runtime(), memory_fixture());
}

#[cfg(feature = "sqlite")]
#[test]
fn malformed_requests_on_sqlite_get_a_4xx_in_the_error_shape_never_a_5xx() {
    throw_malformed_requests(&runtime(), sqlite_fixture());
}

/// PostgreSQL refuses what the other stores would keep (a NUL in text, years
/// outside its range): those must still be 4xx, never a 500.
#[cfg(feature = "postgres")]
#[test]
fn malformed_requests_on_postgres_get_a_4xx_in_the_error_shape_never_a_5xx() {
    use livedrop_adapters::postgres::testing::TestSchema;
    let runtime = runtime();
    let Some(schema) = runtime.block_on(TestSchema::new("the bad-input test on PostgreSQL")) else {
        return;
    };
    throw_malformed_requests(&runtime, postgres_fixture(&schema));
    // The schema goes before the runtime that serves the store's pool.
    drop(schema);
}

/// Sets `fixture` up and runs the generated cases against its router.
fn throw_malformed_requests(
    runtime: &tokio::runtime::Runtime,
    fixture: impl std::future::Future<Output = Fixture>,
) {
    let fixture = &runtime.block_on(fixture);
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 512,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let ran = std::cell::Cell::new(0u32);
    let client_errors = std::cell::Cell::new(0u32);
    let result = runner.run(&case(), |case| {
        let rejected = runtime.block_on(check(fixture, &case))?;
        ran.set(ran.get() + 1);
        client_errors.set(client_errors.get() + u32::from(rejected));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(ran.get() >= 512, "only {} cases ran", ran.get());
    // Generated input is mostly malformed: most answers must be refusals.
    assert!(
        client_errors.get() >= 256,
        "only {} of {} cases were refused with a 4xx",
        client_errors.get(),
        ran.get()
    );
}

#[test]
fn the_snake_case_check_rejects_other_spellings() {
    assert!(snake_case("out_of_stock"));
    assert!(snake_case("unavailable"));
    assert!(!snake_case("OutOfStock"));
    assert!(!snake_case("out-of-stock"));
    assert!(!snake_case(""));
    assert!(!snake_case("_x"));
}
