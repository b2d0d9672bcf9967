//! How long an STS session is asked for, before AWS is called: the task-aligned TTL, raised
//! to AWS's minimum and clamped to every maximum that applies, each change stated. AWS would
//! otherwise refuse the call with an opaque validation error.

use crate::settings::CredentialType;

/// AWS's shortest session.
pub const AWS_MIN_SECS: u64 = 900;
/// The longest session of a role assumed with role-session credentials (role chaining).
pub const CHAINED_MAX_SECS: u64 = 3600;

/// What bounds the duration of one session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub credential_type: CredentialType,
    /// The shortest session the STS endpoint issues: [`AWS_MIN_SECS`] unless the connection
    /// says otherwise (STS-compatible services).
    pub min: u64,
    /// The assumed role's `MaxSessionDuration`.
    pub role_max: Option<u64>,
    /// mayfly's own credentials are a role session.
    pub chained: bool,
    /// Whether a session can be revoked before it ends (only then does a raised duration
    /// leave the credential's lifetime unchanged).
    pub revocable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aligned {
    pub duration: u64,
    pub warnings: Vec<String>,
}

/// The duration to ask STS for, for a credential that should live `ttl` seconds.
pub fn align(ttl: u64, limits: &Limits) -> Aligned {
    let mut duration = ttl;
    let mut warnings = Vec::new();
    if duration < limits.min {
        duration = limits.min;
        warnings.push(if limits.revocable {
            format!(
                "ttl of {ttl}s is shorter than the shortest STS session ({}s): the session \
                 lasts {}s, the lease still ends after {ttl}s and mayfly then revokes the \
                 session",
                limits.min, limits.min
            )
        } else {
            format!(
                "ttl of {ttl}s is shorter than the shortest STS session ({}s): the lease ends \
                 after {ttl}s but these credentials cannot be revoked and keep working for {}s",
                limits.min, limits.min
            )
        });
    }
    let t = limits.credential_type;
    let mut clamp = |max: u64, why: String| {
        if duration > max {
            duration = max;
            warnings.push(format!(
                "ttl of {ttl}s is longer than {why} ({max}s): the session and the lease last \
                 {max}s"
            ));
        }
    };
    // AWS's own limits first: a warning names the limit that actually bound the session.
    clamp(
        t.max_duration(),
        format!("the longest {} session AWS issues", t.name()),
    );
    if limits.chained && t == CredentialType::AssumedRole {
        clamp(
            CHAINED_MAX_SECS,
            "what AWS allows a role assumed with role-session credentials (role chaining)"
                .to_owned(),
        );
    }
    if let Some(max) = limits.role_max {
        clamp(max, "the role's MaxSessionDuration".to_owned());
    }
    Aligned { duration, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(role_max: Option<u64>, chained: bool) -> Limits {
        Limits {
            credential_type: CredentialType::AssumedRole,
            min: AWS_MIN_SECS,
            role_max,
            chained,
            revocable: true,
        }
    }

    #[test]
    fn within_limits_is_unchanged() {
        let a = align(1800, &role(Some(3600), false));
        assert_eq!(a.duration, 1800);
        assert!(a.warnings.is_empty());
    }

    #[test]
    fn short_ttls_are_raised_to_the_minimum() {
        let a = align(60, &role(Some(3600), false));
        assert_eq!(a.duration, 900);
        assert!(
            a.warnings[0].contains("lease still ends after 60s"),
            "{a:?}"
        );
        let s = align(
            60,
            &Limits {
                credential_type: CredentialType::SessionToken,
                revocable: false,
                ..role(None, false)
            },
        );
        assert!(s.warnings[0].contains("cannot be revoked"), "{s:?}");
    }

    #[test]
    fn long_ttls_are_clamped_to_each_maximum() {
        let a = align(7200, &role(Some(3600), false));
        assert_eq!(a.duration, 3600);
        assert!(a.warnings[0].contains("MaxSessionDuration"), "{a:?}");
        let a = align(13 * 3600, &role(Some(43200), false));
        assert_eq!(a.duration, 43200);
        assert!(
            a.warnings[0].contains("longest assumed_role session"),
            "{a:?}"
        );
        let a = align(7200, &role(Some(43200), true));
        assert_eq!(a.duration, 3600);
        assert!(a.warnings[0].contains("role chaining"), "{a:?}");
        let f = align(
            40 * 3600,
            &Limits {
                credential_type: CredentialType::FederationToken,
                ..role(None, true)
            },
        );
        assert_eq!(f.duration, 36 * 3600);
    }
}
