//! Deterministic example intents for the sample ruleset (the generator lives in
//! `riskgate_test_support::generator`, shared with the tests and benchmarks):
//!
//! ```text
//! cargo run --release --example gen_intents -- [--count N] [--seed S] [--accounts A] [--valid-only]
//! ```

fn main() -> std::process::ExitCode {
    riskgate_test_support::generator::main()
}
