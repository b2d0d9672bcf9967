//! The long chaos run (`scripts/chaos`): `CHAOS_CYCLES` faults (default 200) at random moments
//! under a steady load, then the scan. Prints the report; exits 1 if anything survived.

use mayfly_integration::chaos::{self, Settings};

fn main() {
    let settings = Settings::from_env(200);
    eprintln!("chaos settings: {settings:?} (CHAOS_SEED replays this run)");
    let report = chaos::run(&settings);
    println!("{}", report.summary());
    for (fault, n) in &report.faults {
        println!("  {fault}: {n}");
    }
    if !report.survivors.is_empty() || !report.live_records.is_empty() {
        println!("survivors: {:?}", report.survivors);
        println!("live ledger records: {:?}", report.live_records);
        std::process::exit(1);
    }
}
