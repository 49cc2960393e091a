// Run: cargo run --example verify_draw -- http://127.0.0.1:8080 <drop-id>
//
//! Verifies a finished draw of a running livedrop server, trusting nothing but
//! SHA-256: reads the drop (`GET /drops/{id}`) and every page of its ranked
//! entries (`GET /drops/{id}/draw/entries`), checks that the revealed seed is the
//! one committed to at scheduling (`sha256(seed hex) == commitment`), recomputes
//! the ranking from the seed and the public entry tokens (ascending lower-case hex
//! SHA-256 of `seed + ":" + token`) and compares it with the published ranks.
//! Prints a verdict; exits 0 when verified, 1 on a mismatch, 2 when the draw cannot
//! be read (not a draw, not drawn yet, server unreachable).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `text`.
fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What checking a draw found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The seed matches the commitment and the published ranks are the seed's.
    Verified {
        /// Entries ranked.
        entries: usize,
        /// Entries published as won.
        winners: usize,
    },
    /// Something does not match; each line says what.
    Mismatch(Vec<String>),
}

/// Checks drop body `drop` (its `draw` object) against its published `entries`
/// (items of `GET /drops/{id}/draw/entries`, all pages). `Err` when the drop is not
/// a drawn draw.
pub fn verify(drop: &Value, entries: &[Value]) -> Result<Verdict, String> {
    let draw = drop
        .get("draw")
        .filter(|d| d.is_object())
        .ok_or("the drop is not a draw")?;
    let commitment = draw["commitment"]
        .as_str()
        .ok_or("the draw has no commitment")?;
    let seed = draw["seed"]
        .as_str()
        .ok_or("the draw has not run yet: its seed is not revealed")?;
    let mut problems = Vec::new();
    let committed = sha256_hex(seed);
    if committed != commitment {
        problems.push(format!(
            "sha256(seed) = {committed}, but the published commitment is {commitment}"
        ));
    }
    let mut published = Vec::with_capacity(entries.len());
    for entry in entries {
        let (Some(token), Some(rank)) = (entry["token"].as_str(), entry["rank"].as_u64()) else {
            return Err(format!("an entry without token or rank: {entry}"));
        };
        published.push((rank, token.to_owned()));
    }
    let mut recomputed: Vec<(String, String)> = published
        .iter()
        .map(|(_, token)| (sha256_hex(&format!("{seed}:{token}")), token.clone()))
        .collect();
    recomputed.sort();
    let mut by_rank = published.clone();
    by_rank.sort();
    for (i, ((_, want), (rank, got))) in recomputed.iter().zip(&by_rank).enumerate() {
        let expected_rank = i as u64 + 1;
        if *rank != expected_rank {
            problems.push(format!(
                "rank {expected_rank} is missing or repeated (found {rank})"
            ));
            break;
        }
        if want != got {
            problems.push(format!(
                "rank {expected_rank}: the seed gives entry {want}, the server published {got}"
            ));
        }
    }
    let counted = draw["entries"].as_u64().unwrap_or(0);
    if counted != entries.len() as u64 {
        problems.push(format!(
            "the drop counts {counted} entries, the published list has {}",
            entries.len()
        ));
    }
    let winners = entries.iter().filter(|e| e["result"] == "won").count();
    Ok(if problems.is_empty() {
        Verdict::Verified {
            entries: entries.len(),
            winners,
        }
    } else {
        Verdict::Mismatch(problems)
    })
}

/// Reads drop `drop_id` and all its ranked entries from the server at `base`.
pub async fn fetch(base: &str, drop_id: &str) -> Result<(Value, Vec<Value>), String> {
    let client = reqwest::Client::new();
    let base = base.trim_end_matches('/');
    let get = |url: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status();
            let body: Value = response
                .json()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            if !status.is_success() {
                return Err(format!("GET {url}: {status} {body}"));
            }
            Ok::<_, String>(body)
        }
    };
    let drop = get(format!("{base}/drops/{drop_id}")).await?;
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/drops/{drop_id}/draw/entries?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get(url).await?;
        entries.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    Ok((drop, entries))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, drop_id] = args.as_slice() else {
        eprintln!("usage: verify_draw <server-url> <drop-id>");
        std::process::exit(2);
    };
    let checked = match fetch(base, drop_id).await {
        Ok((drop, entries)) => verify(&drop, &entries),
        Err(e) => Err(e),
    };
    match checked {
        Ok(Verdict::Verified { entries, winners }) => {
            println!(
                "VERIFIED: the seed matches its commitment and the ranking of all {entries} entries ({winners} won) is the one the seed gives"
            );
        }
        Ok(Verdict::Mismatch(problems)) => {
            println!("MISMATCH: the published draw is not the one its seed gives");
            for problem in problems {
                println!("  - {problem}");
            }
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("cannot verify: {e}");
            std::process::exit(2);
        }
    }
}
