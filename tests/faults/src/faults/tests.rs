//! What can be checked without breaking a service: the scenarios'
//! settings and their documentation.

use corral_loadgen::{Config, Mix, Shape, Traffic};

use super::{SCENARIOS, stack::*};

/// A signed stack's load is valid for the load generator, goes to the
/// signed route, keeps the callback shares for its callbacks, and has the
/// provider's retries and drops on both channels in it.
#[test]
fn the_signed_load_is_drop_cowboys_signed_webhooks() {
    let callbacks = Mix {
        duplicates: 0.05,
        out_of_order: 0.05,
        ..Mix::default()
    };
    let mix = signed_mix(callbacks.clone());
    let mut config = Config::new("http://127.0.0.1:8080", TOKEN);
    config.signing_secret = Some(SIGNING_SECRET.into());
    config.mix = mix.clone();
    config.validate().expect("a valid load");
    assert_eq!(
        (mix.duplicates, mix.out_of_order),
        (callbacks.duplicates, callbacks.out_of_order)
    );
    let traffic = Traffic::new(corral_loadgen::RunId::random(), 3, mix);
    let items: Vec<_> = (0..2_000).map(|index| traffic.item(index)).collect();
    let shapes = |shape| items.iter().filter(|item| item.shape == shape).count();
    assert_eq!(shapes(Shape::Single), 0, "every item signed");
    assert!(shapes(Shape::BothChannels) > 100);
    let retried = items
        .iter()
        .filter(|item| item.steps.iter().any(|step| step.attempt > 1))
        .count();
    assert!(retried > 50, "{retried} items retried");
}

/// Every scenario is described in docs/reliability.md.
#[test]
fn every_scenario_is_documented() {
    let reliability = include_str!("../../../../docs/reliability.md");
    for name in SCENARIOS {
        assert!(
            reliability.contains(&format!("`{name}`")),
            "docs/reliability.md does not describe {name}"
        );
    }
}
