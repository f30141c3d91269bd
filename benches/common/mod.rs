//! Helpers shared by the micro-benchmarks.

use vxsec_crypto::suite::Suite;

/// True under `cargo bench` when no positional filter excludes "paired".
pub fn run_paired() -> bool {
    const TAKES_VALUE: [&str; 14] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--profile-time",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
    ];
    let mut bench = false;
    let mut filter = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bench" {
            bench = true;
        } else if TAKES_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            filter = Some(a);
        }
    }
    bench && filter.is_none_or(|f| "paired".contains(f.as_str()) || f.contains("paired"))
}

/// One markdown row per variant of a paired table: min and median ns per
/// packet, GB/s at the minimum, and the ratio to the first (raw) variant.
pub fn print_rows(op: &str, suite: Suite, size: usize, names: &[&str], results: &[(f64, f64)]) {
    let raw = results[0].0;
    for (name, (min, med)) in names.iter().zip(results) {
        println!(
            "| {op} | {suite} | {size} | {name} | {min:.1} | {med:.1} | {:.2} | {:.3} |",
            size as f64 / min,
            min / raw
        );
    }
}
