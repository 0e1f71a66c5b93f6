//! Tests of the routing choice: a table of models, states and priorities, and properties.

use super::*;
use proptest::prelude::*;
use Availability::{Asleep, Awake, Unknown, Waking};

/// A backend from (priority, state, in flight, models).
fn backend(
    priority: i64,
    state: Availability,
    in_flight: usize,
    models: &[String],
) -> Candidate<'_> {
    Candidate {
        name: "b",
        priority,
        state,
        in_flight,
        models,
    }
}

fn names(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_string).collect()
}

#[test]
fn the_table() {
    let (llama, both, qwen) = (
        names("llama3.2:latest"),
        names("llama3.2 qwen:7b"),
        names("qwen:7b"),
    );
    // (backends as (priority, state, in flight, models), model, expected (index, wake))
    #[allow(clippy::type_complexity)]
    let table: Vec<(
        Vec<(i64, Availability, usize, &[String])>,
        Option<&str>,
        (usize, bool),
    )> = vec![
        // An awake machine with the model beats a preferred sleeping one.
        (
            vec![(1, Asleep, 0, &llama), (2, Awake, 0, &both)],
            Some("llama3.2"),
            (1, false),
        ),
        // Also beats unknown and waking ones: never wake while an awake one has it.
        (
            vec![(1, Unknown, 0, &llama), (2, Awake, 9, &llama)],
            Some("llama3.2"),
            (1, false),
        ),
        (
            vec![(1, Waking, 0, &llama), (5, Awake, 0, &llama)],
            Some("llama3.2:latest"),
            (1, false),
        ),
        // Several awake: lowest priority, then fewest in flight, then first.
        (
            vec![(2, Awake, 0, &llama), (1, Awake, 5, &llama)],
            Some("llama3.2"),
            (1, false),
        ),
        (
            vec![(1, Awake, 3, &llama), (1, Awake, 2, &llama)],
            Some("llama3.2"),
            (1, false),
        ),
        (
            vec![(1, Awake, 2, &llama), (1, Awake, 2, &llama)],
            Some("llama3.2"),
            (0, false),
        ),
        // None awake: the best holder, woken; machines without the model are never chosen.
        (
            vec![
                (1, Awake, 0, &qwen),
                (3, Asleep, 0, &llama),
                (2, Asleep, 0, &both),
            ],
            Some("llama3.2"),
            (2, true),
        ),
        (
            vec![(1, Asleep, 4, &llama), (1, Asleep, 1, &llama)],
            Some("llama3.2"),
            (1, true),
        ),
        (
            vec![(1, Unknown, 0, &llama), (2, Asleep, 0, &llama)],
            Some("llama3.2"),
            (0, true),
        ),
        (
            vec![(2, Waking, 0, &llama), (1, Asleep, 0, &llama)],
            Some("llama3.2"),
            (1, true),
        ),
        // A model nobody lists, or no model: the preferred backend, awake or not.
        (
            vec![(2, Awake, 0, &llama), (1, Asleep, 0, &qwen)],
            Some("phi3"),
            (1, true),
        ),
        (
            vec![(2, Awake, 0, &llama), (1, Asleep, 0, &qwen)],
            None,
            (1, true),
        ),
        (
            vec![(1, Awake, 9, &llama), (1, Awake, 0, &qwen)],
            None,
            (0, false),
        ),
        // Tags other than latest are other models.
        (
            vec![(1, Asleep, 0, &llama), (2, Awake, 0, &qwen)],
            Some("llama3.2:1b"),
            (0, true),
        ),
        (
            vec![(1, Asleep, 0, &llama), (2, Awake, 0, &qwen)],
            Some("QWEN:7B"),
            (1, false),
        ),
    ];
    for (row, (spec, model, (index, wake))) in table.into_iter().enumerate() {
        let backends: Vec<Candidate> = spec
            .into_iter()
            .map(|(p, s, f, m)| backend(p, s, f, m))
            .collect();
        assert_eq!(
            choose(&backends, model),
            Some(Choice { index, wake }),
            "row {row}"
        );
    }
}

#[test]
fn nothing_to_choose_from() {
    assert_eq!(choose(&[], Some("llama3.2")), None);
    assert_eq!(choose(&[], None), None);
    assert_eq!(preferred(&[]), None);
}

#[test]
fn ps_asks_only_awake_machines() {
    let none: Vec<String> = Vec::new();
    let backends = [
        backend(1, Asleep, 0, &none),
        backend(2, Awake, 0, &none),
        backend(3, Unknown, 0, &none),
        backend(4, Waking, 0, &none),
        backend(5, Awake, 0, &none),
    ];
    assert_eq!(awake(&backends), [1, 4]);
}

fn state() -> impl Strategy<Value = Availability> {
    prop_oneof![Just(Awake), Just(Asleep), Just(Waking), Just(Unknown)]
}

/// Up to 5 backends, each with a subset of 4 model names.
fn backends() -> impl Strategy<Value = Vec<(i64, Availability, usize, Vec<String>)>> {
    let models = prop::sample::subsequence(vec!["a", "b:7b", "c", "d:latest"], 0..=4)
        .prop_map(|m| m.into_iter().map(str::to_string).collect::<Vec<_>>());
    prop::collection::vec((0i64..4, state(), 0usize..4, models), 1..=5)
}

fn model() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec![
        "a", "a:latest", "b:7b", "d", "e",
    ]))
    .prop_map(|m| m.map(str::to_string))
}

proptest! {
    #[test]
    fn the_choice_follows_the_rules(spec in backends(), model in model()) {
        let backends: Vec<Candidate> = spec
            .iter()
            .map(|(p, s, f, m)| backend(*p, *s, *f, m))
            .collect();
        let choice = choose(&backends, model.as_deref()).unwrap();
        let chosen = &backends[choice.index];
        prop_assert_eq!(choice.wake, chosen.state != Awake);
        let holders: Vec<&Candidate> = match &model {
            Some(m) => backends.iter().filter(|b| b.has(m)).collect(),
            None => Vec::new(),
        };
        if holders.is_empty() {
            // The preferred backend.
            prop_assert!(backends.iter().all(|b| b.priority >= chosen.priority));
        } else {
            // A backend that has the model; an awake one whenever one has it.
            prop_assert!(chosen.has(model.as_deref().unwrap_or_default()));
            if holders.iter().any(|b| b.state == Awake) {
                prop_assert_eq!(chosen.state, Awake);
            }
            // No better holder in the same class.
            let class = |b: &Candidate| b.state == Awake;
            prop_assert!(holders
                .iter()
                .filter(|b| class(b) == class(chosen))
                .all(|b| (b.priority, b.in_flight) >= (chosen.priority, chosen.in_flight)));
        }
    }
}
