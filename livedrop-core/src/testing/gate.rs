//! Admission gate cases: what a gate that records stock promises
//! ([`AdmissionGate`]): unknown drops are admitted, a recorded stock refuses only
//! what it cannot serve, and an older stock version never overwrites a newer one,
//! even under concurrent records.
//!
//! Every case uses drops of its own, so a shared gate server may serve several
//! cases at once. The factory's gate keeps an entry 5 s after its last record (the
//! default of every gate that records), so a stale "sold out" never outlives that;
//! the expiry case waits for it in real time, with margins of a second and more.
//! [`OpenGate`](crate::ports::OpenGate) records nothing and runs no case.

use std::sync::Arc;
use std::time::Duration;

use crate::id::DropId;
use crate::model::{Stock, DEFAULT_SKU};
use crate::ports::AdmissionGate;

fn stock(total: u32, available: u32) -> Stock {
    Stock {
        total,
        available,
        reserved: 0,
        sold: total - available,
    }
}

async fn admit(gate: &dyn AdmissionGate, drop: DropId, quantity: u32) -> bool {
    admit_sku(gate, drop, DEFAULT_SKU, quantity).await
}

async fn admit_sku(gate: &dyn AdmissionGate, drop: DropId, sku: &str, quantity: u32) -> bool {
    gate.admit(drop, sku, quantity).await.expect("gate admit")
}

async fn record(gate: &dyn AdmissionGate, drop: DropId, total: u32, available: u32, version: i64) {
    record_sku(gate, drop, DEFAULT_SKU, (total, available), version).await;
}

async fn record_sku(
    gate: &dyn AdmissionGate,
    drop: DropId,
    sku: &str,
    (total, available): (u32, u32),
    version: i64,
) {
    gate.record(drop, sku, &stock(total, available), version)
        .await
        .expect("gate record");
}

/// Each variant of a drop is gated on its own stock and its own versions: a sold-out
/// size refuses while another size of the same drop, and a size never recorded, are
/// admitted; a variant's newer version does not hide another's older one.
pub async fn gate_keeps_each_variant_apart(gate: &Arc<dyn AdmissionGate>) {
    let gate: &dyn AdmissionGate = gate.as_ref();
    let drop = DropId::new();
    record_sku(gate, drop, "size-42", (5, 0), 9).await;
    record_sku(gate, drop, "size-43", (5, 2), 3).await;
    assert!(
        !admit_sku(gate, drop, "size-42", 1).await,
        "a sold-out size"
    );
    assert!(admit_sku(gate, drop, "size-43", 2).await);
    assert!(!admit_sku(gate, drop, "size-43", 3).await);
    assert!(
        admit_sku(gate, drop, "size-44", 100).await,
        "a size never recorded is admitted"
    );
    record_sku(gate, drop, "size-43", (5, 0), 4).await;
    assert!(!admit_sku(gate, drop, "size-43", 1).await);
    record_sku(gate, drop, "size-42", (5, 1), 10).await;
    assert!(
        admit_sku(gate, drop, "size-42", 1).await,
        "size-42's version 10 applies although size-43 is at 4"
    );
}

/// A drop the gate knows nothing of is admitted, whatever the quantity.
pub async fn gate_admits_unknown_drops(gate: &Arc<dyn AdmissionGate>) {
    let gate: &dyn AdmissionGate = gate.as_ref();
    assert!(admit(gate, DropId::new(), 1).await);
    assert!(admit(gate, DropId::new(), u32::MAX).await);
}

/// A recorded stock refuses only quantities above its available units; other
/// drops are unaffected; a sold-out stock refuses everything.
pub async fn gate_refuses_only_what_the_recorded_stock_cannot_serve(gate: &Arc<dyn AdmissionGate>) {
    let gate: &dyn AdmissionGate = gate.as_ref();
    let (drop, other) = (DropId::new(), DropId::new());
    record(gate, drop, 10, 3, 4).await;
    assert!(admit(gate, drop, 1).await);
    assert!(admit(gate, drop, 3).await);
    assert!(!admit(gate, drop, 4).await);
    assert!(admit(gate, other, 100).await, "other drops are unaffected");

    record(gate, drop, 10, 0, 7).await;
    assert!(!admit(gate, drop, 1).await, "sold out");
    assert!(admit(gate, other, 100).await);
}

/// A record of an older version than the one held is ignored; a newer one (a
/// restock, say) replaces it and may reopen the gate; the same version again
/// replaces it too.
pub async fn gate_never_goes_back_to_an_older_version(gate: &Arc<dyn AdmissionGate>) {
    let gate: &dyn AdmissionGate = gate.as_ref();
    let drop = DropId::new();
    record(gate, drop, 10, 0, 7).await;
    record(gate, drop, 10, 10, 5).await;
    assert!(!admit(gate, drop, 1).await, "version 5 overwrote version 7");

    record(gate, drop, 12, 2, 8).await;
    assert!(
        admit(gate, drop, 2).await,
        "a newer version reopens the gate"
    );
    assert!(!admit(gate, drop, 3).await);

    record(gate, drop, 12, 5, 8).await;
    assert!(admit(gate, drop, 5).await, "the same version replaces it");
    assert!(!admit(gate, drop, 6).await);
}

/// Records of versions 1..=50 arriving at once, in both orders: the newest
/// survives.
pub async fn gate_keeps_the_newest_version_under_concurrent_records(gate: &Arc<dyn AdmissionGate>) {
    let drop = DropId::new();
    // Version v records v units available, so the survivor shows through admit.
    let records = (1..=50i64).rev().chain(1..=50).map(|version| {
        let gate = Arc::clone(gate);
        tokio::spawn(async move {
            let available = u32::try_from(version).expect("a small version");
            gate.record(drop, DEFAULT_SKU, &stock(100, available), version)
                .await
        })
    });
    for task in futures::future::join_all(records).await {
        task.expect("the record task").expect("gate record");
    }
    assert!(admit(gate.as_ref(), drop, 50).await);
    assert!(!admit(gate.as_ref(), drop, 51).await);
}

/// An entry expires 5 s after its last record: a sold-out drop is admitted again
/// after that, and an expired entry is forgotten, so an older version may be
/// recorded again.
pub async fn gate_entries_expire(gate: &Arc<dyn AdmissionGate>) {
    let gate: &dyn AdmissionGate = gate.as_ref();
    let drop = DropId::new();
    let recorded_at = tokio::time::Instant::now();
    record(gate, drop, 5, 0, 9).await;
    // Wide margins: this admit comes right after the record, 5 s before the entry
    // expires; the next one 1.5 s after it.
    assert!(!admit(gate, drop, 1).await);
    tokio::time::sleep_until(recorded_at + Duration::from_millis(6_500)).await;
    assert!(
        admit(gate, drop, 1).await,
        "a stale sold-out outlived the gate's 5 s"
    );
    record(gate, drop, 5, 2, 3).await;
    assert!(admit(gate, drop, 2).await);
    assert!(!admit(gate, drop, 3).await);
}
