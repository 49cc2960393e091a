//! The livedrop reference server: `cargo run -p livedrop-http -- --help`.

use std::process::ExitCode;

use clap::Parser;
use livedrop_http::server::{self, Demo, Settings};
use tracing_subscriber::EnvFilter;

fn init_tracing(settings: &Settings) {
    let filter = settings
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn print_demo(base: &str, demo: &Demo) {
    println!();
    println!("Demo data seeded. Try:");
    println!("  export CREATOR_TOKEN='{}'", demo.creator_token);
    println!("  export BUYER_TOKEN='{}'", demo.buyer_token);
    println!("  curl -s {base}/drops/{}", demo.drop_id);
    println!("  curl -sN {base}/drops/{}/events &", demo.drop_id);
    println!(
        "  curl -s -X POST {base}/orders -H \"Authorization: Bearer $BUYER_TOKEN\" -H 'Idempotency-Key: demo-order-1' -H 'Content-Type: application/json' -d '{{\"drop_id\":\"{}\",\"quantity\":1}}'",
        demo.drop_id
    );
    println!("  curl -s {base}/orders -H \"Authorization: Bearer $BUYER_TOKEN\"");
    println!("  curl -s {base}/notifications -H \"Authorization: Bearer $BUYER_TOKEN\"");
    println!("  curl -s '{base}/products?q=hoodie'");
    println!("  (logins: creator@demo.livedrop / buyer@demo.livedrop, password demo-password)");
    println!();
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    init_tracing(&settings);
    let server = match server::build(&settings).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("livedrop-http: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let base = format!("http://{}", server.local_addr());
    println!("livedrop-http listening on {base}");
    if settings.storefront {
        println!("storefront: {base}/");
    }
    if let Some(demo) = server.demo() {
        print_demo(&base, demo);
    }
    match server.serve(server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livedrop-http: {e:#}");
            ExitCode::FAILURE
        }
    }
}
