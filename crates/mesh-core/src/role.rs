//! Node roles (see docs/protocol.md, "Roles").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes broadcasters' publishes, pushes each stream to root relays only.
    Ingest,
    /// Takes pushes from ingest nodes, pushes on to relay nodes, never serves viewers.
    RootRelay,
    /// Edge: takes pushes from root relays (or relays), serves viewers.
    Relay,
    /// One node: broadcasters in (as ingest), viewers out (as relay).
    Standalone,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ingest, Role::RootRelay, Role::Relay, Role::Standalone];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::RootRelay => "root_relay",
            Role::Relay => "relay",
            Role::Standalone => "standalone",
        }
    }

    /// Broadcasters (stream keys) may publish here.
    pub fn takes_broadcasters(self) -> bool {
        matches!(self, Role::Ingest | Role::Standalone)
    }

    /// Viewers may play here.
    pub fn serves_viewers(self) -> bool {
        matches!(self, Role::Relay | Role::Standalone)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert!("edge".parse::<Role>().is_err());
        assert!("Ingest".parse::<Role>().is_err());
    }
}
