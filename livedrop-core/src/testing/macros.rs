//! The macros that expand the suite into one test per case.

/// Expands into module `$module` with one multi-threaded tokio test per case, each
/// calling `$crate::testing::$suite::$case(&backend)` on a fresh backend.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($module:ident, $suite:ident, $factory:expr; $($case:ident),+ $(,)?) => {
        #[allow(unused_imports)]
        mod $module {
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let factory = $factory;
                    match factory().await {
                        ::std::option::Option::Some(backend) => {
                            $crate::testing::$suite::$case(&backend).await
                        }
                        ::std::option::Option::None => {
                            let _ = $crate::testing::env::skip(
                                ::std::concat!(
                                    ::std::stringify!($module),
                                    "::",
                                    ::std::stringify!($case)
                                ),
                                "the backend's environment is not available",
                            );
                        }
                    }
                }
            )+
        }
    };
}

/// Runs the store conformance suite ([`testing::store`](crate::testing::store)):
/// one test per case, in a module named `store_conformance`.
///
/// `$factory` is an expression callable as `factory().await -> Option<Repos>`
/// ([`Repos`](crate::testing::Repos)), returning a fresh, empty store per call, or
/// `None` (the test prints why and passes, or fails under `LIVEDROP_TEST_REQUIRE=1`,
/// see [`testing::env`](crate::testing::env)) when the backend's environment is absent.
#[macro_export]
macro_rules! store_conformance {
    ($factory:expr) => {
        $crate::__conformance_tests! {
            store_conformance, store, $factory;
            users_insert_and_lookup,
            users_duplicate_email_conflicts,
            follows_are_idempotent,
            follow_listings_paginate_newest_first,
            products_insert_get_update,
            products_list_filter_search_paginate,
            drops_insert_creates_stock_ledger_and_events,
            drops_list_by_status_at_now,
            drops_transition_is_conditional,
            drops_due_transitions,
            orders_place_checks_in_documented_order,
            orders_place_appends_events,
            orders_place_stores_a_fresh_reservation,
            orders_limit_counts_reserved_and_confirmed,
            orders_race_never_oversells,
            orders_same_key_race_places_once,
            orders_keep_their_answer_under_the_key,
            orders_user_limit_race,
            orders_settle_outcomes,
            orders_list_for_user,
            holds_expire_exactly_once,
            orders_extend_once,
            orders_extend_refusals,
            orders_extend_races_the_sweeper,
            orders_extend_race_one_wins,
            inventory_adjust_and_ledger,
            idempotency_lifecycle,
            idempotency_lease_takeover_and_purge,
            idempotency_takeover_fences_the_old_holder,
            idempotency_concurrent_begin,
            notifications_insert_dedup_and_read,
            notifications_paginate,
            fan_out_batches,
            outbox_pending_in_order,
            outbox_wait_for_append_wakes,
            text_with_control_characters_is_refused,
            emails_fold_case_one_way,
            search_folds_non_ascii_letters_one_way,
            timestamps_outside_the_storable_range_are_refused,
            timestamps_keep_microseconds,
            restock_past_the_largest_stock_conflicts,
            batches_come_in_one_order_with_a_tie_break,
            variants_keep_their_own_stock,
            variants_limit_counts_every_variant,
            variants_limit_race_across_variants,
            variants_race_never_oversells,
            variants_adjust_one_variant,
            waitlist_join_rules,
            waitlist_cancel_hands_units_to_the_line,
            waitlist_expiry_and_restock_hand_off,
            waitlist_skips_past_the_limit,
            waitlist_closes_with_the_drop,
            waitlist_races_hand_each_unit_once,
            draws_take_entries_while_open,
            draws_run_once_ranked_by_the_revealed_seed,
            draws_run_exactly_once_under_races,
            draws_hand_units_back_in_rank_order,
            queues_order_the_pre_queue_and_space_admissions,
            queues_a_late_join_stamped_before_the_start_queues_behind,
            queues_refuse_without_an_open_room,
            queues_space_concurrent_joins,
        }
    };
}

/// Runs the cache conformance suite ([`testing::cache`](crate::testing::cache)):
/// one test per case, in a module named `cache_conformance`.
///
/// `$factory` is an expression callable as
/// `factory().await -> Option<Arc<dyn Cache>>`, isolated per call (a fresh cache or
/// a key namespace of its own), or `None` when the backend's environment is absent.
#[macro_export]
macro_rules! cache_conformance {
    ($factory:expr) => {
        $crate::__conformance_tests! {
            cache_conformance, cache, $factory;
            cache_round_trip,
            cache_ttl_expiry,
            cache_invalidate_keys,
            cache_invalidate_prefix,
            cache_fence_dropped_after_key_invalidation,
            cache_fence_dropped_after_prefix_invalidation,
            cache_fence_kept_without_invalidation,
            cache_unfenced_set_always_stores,
            cache_prefix_is_literal,
            cache_fills_racing_an_invalidation_never_leave_a_stale_value,
        }
    };
}

/// Runs the event bus conformance suite ([`testing::bus`](crate::testing::bus)):
/// one test per case, in a module named `bus_conformance`.
///
/// `$factory` is an expression callable as
/// `factory().await -> Option<Arc<dyn EventBus>>`, isolated per call (a fresh bus
/// or topic namespace of its own), or `None` when the backend's environment is absent.
#[macro_export]
macro_rules! bus_conformance {
    ($factory:expr) => {
        $crate::__conformance_tests! {
            bus_conformance, bus, $factory;
            bus_round_trip,
            bus_per_aggregate_order,
            bus_resume_from_commit,
            bus_groups_each_see_every_event,
            bus_live_subscription_sees_new_events,
            bus_republished_event_is_delivered_once,
        }
    };
}

/// Runs the admission gate conformance suite ([`testing::gate`](crate::testing::gate)):
/// one test per case, in a module named `gate_conformance`.
///
/// `$factory` is an expression callable as
/// `factory().await -> Option<Arc<dyn AdmissionGate>>`, isolated per call (a fresh
/// gate or a key namespace of its own) and keeping entries 5 s, or `None` when the
/// backend's environment is absent.
#[macro_export]
macro_rules! gate_conformance {
    ($factory:expr) => {
        $crate::__conformance_tests! {
            gate_conformance, gate, $factory;
            gate_admits_unknown_drops,
            gate_refuses_only_what_the_recorded_stock_cannot_serve,
            gate_never_goes_back_to_an_older_version,
            gate_keeps_the_newest_version_under_concurrent_records,
            gate_entries_expire,
            gate_keeps_each_variant_apart,
        }
    };
}
