//! The short chaos run CI makes (`scripts/chaos` makes the long one): faults at random moments
//! under a steady load, then no principal may outlive its deadline by more than one backoff.

use mayfly_integration::chaos::{self, Settings};

#[test]
fn no_credential_survives_random_faults_under_load() {
    let settings = Settings::from_env(12);
    eprintln!("chaos settings: {settings:?} (CHAOS_SEED replays this run)");
    let report = chaos::run(&settings);
    eprintln!("{}", report.summary());
    assert!(
        report.issued > 0,
        "the load issued nothing: {}",
        report.summary()
    );
    assert_eq!(report.faults.values().sum::<usize>(), settings.cycles);
    assert!(
        settings.long_ttl == 0 || report.issued_long > 0,
        "no credential outlived the intent grace: {}",
        report.summary()
    );
    assert!(
        report.survivors.is_empty(),
        "survivors {:?}: {}",
        report.survivors,
        report.summary()
    );
    assert!(
        report.live_records.is_empty(),
        "ledger records not revoked {:?}: {}",
        report.live_records,
        report.summary()
    );
}
