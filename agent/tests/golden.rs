//! Golden tests: each fixture replays to exactly its blessed records, and
//! those agree with the fields `generate.py` knows on its own.
//!
//! `BLESS=1 cargo test -p llmtap --test golden` rewrites the
//! `*.expected.json` files; review the diff before committing.

mod common;

use serde_json::Value;

#[test]
fn fixtures_replay_to_expected_records() {
    let dir = common::golden_dir();
    let bless = std::env::var_os("BLESS").is_some();
    let fixtures = common::fixtures();
    assert!(fixtures.len() >= 20, "fixtures missing");
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let calls = common::replay(&fixture.events);
        // Through text, so floats parse the same way as the expected file.
        let text = serde_json::to_string_pretty(&calls).unwrap() + "\n";
        let actual: Value = serde_json::from_str(&text).unwrap();
        let expected_path = dir.join(format!("{}.expected.json", fixture.name));
        if bless {
            std::fs::write(&expected_path, &text).unwrap();
        }
        let expected: Value = match std::fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(_) => {
                failures.push(format!("{}: no expected file", fixture.name));
                continue;
            }
        };
        if actual != expected {
            failures.push(format!("{}: records differ:\n{text}", fixture.name));
        }
        let check_path = dir.join(format!("{}.check.json", fixture.name));
        let checks: Value =
            serde_json::from_str(&std::fs::read_to_string(check_path).unwrap()).unwrap();
        let checks = checks.as_array().unwrap();
        if checks.len() != calls.len() {
            failures.push(format!(
                "{}: {} calls, generator expects {}",
                fixture.name,
                calls.len(),
                checks.len()
            ));
            continue;
        }
        for (i, check) in checks.iter().enumerate() {
            for (field, want) in check.as_object().unwrap() {
                let got = &actual[i][field];
                if got != want {
                    failures.push(format!(
                        "{} call {i}: {field} = {got}, generator says {want}",
                        fixture.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
