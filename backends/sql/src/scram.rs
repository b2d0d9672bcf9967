//! SCRAM-SHA-256 verifiers as PostgreSQL stores them (RFC 5802, RFC 7677), made by mayfly so
//! that the server receives `PASSWORD 'SCRAM-SHA-256$…'` instead of the password: the password
//! then appears in no server log or statistics view. `CREATE ROLE` still runs the verifier's
//! rounds once, to check that it is not that of an empty password: its iteration count is what
//! a new user costs the server, and what each login costs the client.

use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// PostgreSQL's own default (its `scram_iterations` setting).
pub const DEFAULT_ITERATIONS: u32 = 4096;
const SALT_BYTES: usize = 16;

/// The verifier of `password` with a fresh random salt and `iterations` rounds, or `None`
/// when PostgreSQL would first normalize the password (SASLprep applies to passwords that are
/// not ASCII): those are sent as they are, for the server to hash as it would its own.
pub fn verifier(password: &str, iterations: NonZeroU32) -> Option<String> {
    let mut salt = [0u8; SALT_BYTES];
    aws_lc_rs::rand::fill(&mut salt).ok()?;
    verifier_with_salt(password, &salt, iterations)
}

/// [`verifier`] with the given salt.
fn verifier_with_salt(password: &str, salt: &[u8], iterations: NonZeroU32) -> Option<String> {
    if !password.is_ascii() {
        return None;
    }
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    Some(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (user "user", password "pencil"): the server's final
    /// message carries the ServerSignature, HMAC(ServerKey, AuthMessage), so checking it checks
    /// ServerKey; the client's proof XORed with its signature gives ClientKey, whose hash must
    /// be the StoredKey.
    #[test]
    fn matches_the_rfc_7677_example() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = verifier_with_salt("pencil", &salt, default()).unwrap();
        let rest = v
            .strip_prefix("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
            .unwrap();
        let (stored, server) = rest.split_once(':').unwrap();
        let (stored, server) = (
            STANDARD.decode(stored).unwrap(),
            STANDARD.decode(server).unwrap(),
        );

        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &server),
            auth_message.as_bytes(),
        );
        assert_eq!(
            STANDARD.encode(server_signature.as_ref()),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );

        let client_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &stored),
            auth_message.as_bytes(),
        );
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(
            digest::digest(&digest::SHA256, &client_key).as_ref(),
            stored.as_slice()
        );
    }

    fn default() -> NonZeroU32 {
        NonZeroU32::new(DEFAULT_ITERATIONS).unwrap()
    }

    #[test]
    fn each_verifier_has_its_own_salt_and_non_ascii_is_left_to_the_server() {
        assert_ne!(verifier("same", default()), verifier("same", default()));
        assert_eq!(verifier("pässword", default()), None);
    }

    /// The count is in the verifier, and it changes the keys: a server that read 4096 from a
    /// verifier made with 1 round would refuse every login.
    #[test]
    fn the_iteration_count_is_recorded_and_used() {
        let salt = [7u8; SALT_BYTES];
        let one = verifier_with_salt("pencil", &salt, NonZeroU32::new(1).unwrap()).unwrap();
        let many = verifier_with_salt("pencil", &salt, default()).unwrap();
        assert!(one.starts_with("SCRAM-SHA-256$1:"), "{one}");
        assert!(many.starts_with("SCRAM-SHA-256$4096:"), "{many}");
        // The keys follow the last '$'.
        let keys = |v: &str| v.rsplit_once('$').unwrap().1.to_owned();
        assert_ne!(keys(&one), keys(&many));
    }
}
